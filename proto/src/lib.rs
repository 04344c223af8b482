//! Shared vocabulary of the supervisor cluster.
//!
//! Every program of the cluster (supervisor, agent, depmgr, supctl) speaks
//! through the types in this crate, and every blob that is stored or sent in
//! binary goes through [`codec`]. The crate is pure: serde types, validation
//! and the codec, no I/O, no async runtime, no openraft or RocksDB, so the
//! agent and depmgr stay small.
//!
//! - [`spec`]: the module spec an operator deploys (restart, failover,
//!   placement and fencing policy).
//! - [`manifest`]: the `manifest.toml` of a configuration package, and the
//!   package references that name one.
//! - [`heartbeat`]: the node manager's heartbeat (a packed binary status code
//!   per module), the supervisor's reply and the directives it carries
//!   (restore, install, stop), each fenced by an epoch.
//! - [`codec`]: the versioned bincode codec; every encoded blob starts with a
//!   format-version byte and decoding never panics.
//! - [`record`]: records of the supervisor's replicated state that its admin
//!   API shows (events and their kinds, module states), so that an admin
//!   client needs no supervisor.

pub mod backup;
pub mod codec;
pub mod heartbeat;
pub mod manifest;
pub mod names;
pub mod record;
pub mod spec;

pub use codec::{decode, encode, encoded_len};

/// Name of a node (the agent's `--node`).
pub type NodeId = String;
/// Name of a module (unique in the cluster).
pub type ModuleName = String;
/// A placement's fencing token: the Raft log index of the decision that made
/// it. Strictly increases for a module over its life.
pub type Epoch = u64;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Bytes that are not a blob of this format.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// A value that cannot be encoded (should not happen for our types).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A module spec that breaks a rule; the message names the field.
    #[error("invalid module spec: {0}")]
    InvalidSpec(String),
    /// A manifest that breaks a rule; the message names the field.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// A name that is not one of a closed set (an event kind, …).
    #[error("unknown {what} {value:?}")]
    Unknown { what: &'static str, value: String },
}

/// A JSON error body, as every HTTP API of the cluster answers it:
/// `{"error": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
