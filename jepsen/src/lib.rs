//! Partition tests in the Jepsen style: hosts in network namespaces, a
//! nemesis on a seeded schedule, a recorded history and pure checkers.
//!
//! The data flows one way. [`run`] sets up the hosts ([`netns`]) and the
//! cluster on them ([`cluster`]), lets the clients of [`workload`] deploy,
//! remove and read modules while the [`nemesis`] injects faults, heals, and
//! observes every replica until the cluster has settled. Everything that
//! happened is one list of [`history::Record`]s: client operations with
//! their outcomes, faults with the evidence that they took effect, the
//! probe modules' ledger (binary `probe-module`), and the observations
//! after the heal. The [`checker`]s are pure functions of that list: no
//! clock, no I/O, so a recorded `history.jsonl` can be checked again, and
//! the golden fixtures in `tests/fixtures/` pin their verdicts.
//!
//! The binary `jepsen` runs seeds (it needs root: it creates namespaces and
//! iptables rules inside private namespaces of its own); `tests/campaign.rs`
//! is the short campaign the test command runs.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod run;
pub mod workload;

/// The cluster's admin API as the harness uses it: the one place that names
/// the crate it comes from.
pub(crate) mod admin {
    pub use admin_api::{AdminClient, ClientError, ModuleView};
}
