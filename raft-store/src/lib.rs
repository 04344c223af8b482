//! Durable openraft 0.9 storage on RocksDB, generic over the replicated state.
//!
//! The crate knows nothing of modules or nodes: the application implements
//! [`ReplicatedState`] (a deterministic `apply`, `snapshot` and `restore`), and
//! gets back a [`LogStore`] (openraft's `RaftLogStorage` + `RaftLogReader`) and
//! a [`StateMachineStore`] (`RaftStateMachine` + snapshot builder) over one
//! RocksDB instance.
//!
//! ## Data flow
//! ```text
//!  openraft ──append──► LogStore ──write (WAL, no sync)──► RocksDB
//!                          │ callback                       ▲
//!                          └──────► flusher thread ── fsync WAL (group commit)
//!                                        │ then fires every queued callback
//!  openraft ──apply───► StateMachineStore ──► ReplicatedState (in memory)
//!                          └── snapshots: encoded beside apply, stored in RocksDB (flushed, outside the WAL)
//! ```
//!
//! ## Invariants
//! - **Durable before acknowledged.** A vote is synced before `save_vote`
//!   returns. Appended entries are acknowledged (openraft's flush callback)
//!   only after an fsync of the WAL that covers them; appends that arrive
//!   while a sync runs share the next sync (group commit), none skips one.
//! - The state machine lives in memory; on start it is restored from the last
//!   stored snapshot and openraft re-applies the committed log after it (the
//!   committed index is stored). Logs are only purged once a snapshot covers
//!   them, so snapshot + log always rebuild the state.
//! - Every stored value goes through [`proto::codec`] (format-version byte
//!   first); log keys are big-endian u64 so RocksDB's order is log order.
//! - A data dir of another format version, or a corrupt one, is refused at
//!   open with an [`Error`] naming the problem, and nothing in it is changed.

// openraft's StorageError is large, and its traits dictate it.
#![allow(clippy::result_large_err)]

mod db;
mod log_store;
mod state_machine;

use openraft::{Entry, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use db::{FORMAT_FILE, FORMAT_VERSION, Store};
pub use log_store::LogStore;
pub use state_machine::{SnapshotBuilder, StateHandle, StateMachineStore};

/// The application state replicated by Raft.
///
/// `apply` must be deterministic: no clock, no randomness, no I/O, ordered
/// maps only, so that every replica that applies the same commands holds the
/// same state (and byte-identical snapshots). A command the domain rejects
/// is a response, not an error.
pub trait ReplicatedState: Default + Send + Sync + 'static {
    type Command;
    type Response;

    /// Applies one committed command; `index` is its Raft log index.
    fn apply(&mut self, index: u64, command: &Self::Command) -> Self::Response;

    /// Encodes the whole state.
    fn snapshot(&self) -> Result<Vec<u8>, proto::Error>;

    /// A copy of the state as it is now, which a snapshot encodes while
    /// apply goes on. It is taken while apply waits, so it must be cheap:
    /// a state kept in persistent (structurally shared) collections copies
    /// in O(1).
    fn frozen(&self) -> Self;

    /// Decodes a state made by [`ReplicatedState::snapshot`].
    fn restore(bytes: &[u8]) -> Result<Self, proto::Error>;
}

/// What this crate needs of an openraft type configuration: entries are
/// openraft's own [`Entry`], snapshots are bytes in memory, commands and
/// responses are serde types (responses to blank and membership entries are
/// `Default`).
pub trait StoreConfig:
    RaftTypeConfig<
        Entry = Entry<Self>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        D: Serialize + DeserializeOwned,
        R: Default,
    >
{
}

impl<C> StoreConfig for C where
    C: RaftTypeConfig<
            Entry = Entry<C>,
            SnapshotData = std::io::Cursor<Vec<u8>>,
            D: Serialize + DeserializeOwned,
            R: Default,
        >
{
}

/// Errors of opening a store (openraft's own calls return `StorageError`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {dir}: {message}")]
    DataDir { dir: String, message: String },
    #[error(
        "data dir {dir} holds raft-store format {found:?}, this build reads format {expected}; nothing was changed"
    )]
    FormatVersion {
        dir: String,
        found: String,
        expected: u32,
    },
    #[error("data dir {dir} is not a raft-store data dir ({reason}); nothing was changed")]
    Foreign { dir: String, reason: String },
    #[error("data dir {dir} cannot be opened, it may be corrupt: {message}")]
    Corrupt { dir: String, message: String },
    #[error("stored {what} cannot be decoded: {source}")]
    Decode {
        what: &'static str,
        source: proto::Error,
    },
}

/// Seeds an empty store with a state taken elsewhere (a backup, see the
/// supervisor's `--restore-from`), as if a snapshot covering the log up to
/// `meta.last_log_id` had been installed: the state machine holds the
/// state and `meta`'s membership, and the log is empty, purged up to that
/// id, so openraft starts from it (initialised: it needs no `initialize`),
/// and new entries follow it. Refused, with nothing changed, unless the
/// store is empty (no vote, no log, no state).
pub async fn seed<C, S>(
    log: &mut LogStore<C>,
    sm: &mut StateMachineStore<C, S>,
    meta: openraft::SnapshotMeta<C::NodeId, C::Node>,
    state: Vec<u8>,
) -> Result<(), String>
where
    C: StoreConfig,
    S: ReplicatedState<Command = C::D, Response = C::R>,
{
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    let last = meta
        .last_log_id
        .clone()
        .ok_or("the state to seed names no log id")?;
    let log_state = log.get_log_state().await.map_err(|e| e.to_string())?;
    let vote = log.read_vote().await.map_err(|e| e.to_string())?;
    let (applied, _) = sm.applied_state().await.map_err(|e| e.to_string())?;
    if log_state.last_log_id.is_some() || vote.is_some() || applied.is_some() {
        return Err(
            "the data dir already holds a cluster's log or state: restore only into an empty data dir"
                .into(),
        );
    }
    S::restore(&state).map_err(|e| format!("the state does not decode: {e}"))?;
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(state)))
        .await
        .map_err(|e| e.to_string())?;
    log.purge(last.clone()).await.map_err(|e| e.to_string())?;
    log.save_committed(Some(last))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
