//! The test kit: what more than one crate's tests need, in one place.
//!
//! Dev-only (`publish = false`): the other crates take it as a
//! dev-dependency, and the partition-test harness (`jepsen`) and
//! `cluster-tests`, which are test harnesses themselves, as a dependency.
//! It links depmgr without its server feature, so it brings no RocksDB to
//! anyone; only raft-store turns on the `raft` feature ([`kv`]).
//!
//! - Processes: [`process`] (a [`ProcessSet`] that owns child processes and
//!   stops them on drop), [`bins`] (where the release binaries are),
//!   [`flags`] (the fast timing flags), [`net`] (free ports), [`poll`]
//!   ([`eventually`]: waiting with a deadline), [`prom`] (reading a
//!   `/metrics` page).
//! - Real programs under test: [`supervisors`] (supervisor replicas),
//!   [`agent_proc`] (one node manager), [`depmgr_proc`] (one depmgr).
//! - Fakes, speaking the real protocols: [`fake_supervisor`] (for the
//!   agent's tests), [`fake_agent`] (for the supervisor's), [`fake_depmgr`]
//!   (for both).
//! - Trust: [`certs`] (a CA and certificates made by `supctl ca`).
//! - Builders: [`package`] (packages packed by depmgr's packer),
//!   [`raw_tar`] (hostile archives), [`spec`] (module specs),
//!   [`directives`] (what a leader sends).

pub mod agent_proc;
pub mod bins;
pub mod certs;
pub mod depmgr_proc;
pub mod directives;
pub mod fake_agent;
pub mod fake_depmgr;
pub mod fake_supervisor;
pub mod flags;
#[cfg(feature = "raft")]
pub mod kv;
pub mod net;
pub mod package;
pub mod poll;
pub mod process;
pub mod procstat;
pub mod prom;
pub mod raw_tar;
pub mod reference;
pub mod spec;
pub mod supervisors;
pub mod tmpfs;

pub use bins::bin;
pub use certs::Certs;
pub use net::{free_addr, free_port};
pub use poll::{eventually, poll_until};
pub use process::{ProcessSet, Program};
