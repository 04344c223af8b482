//! The state machine side: applies committed entries to the application's
//! [`ReplicatedState`], builds, stores, installs and reloads snapshots.
//!
//! The state is held in memory behind a [`StateHandle`] that the application
//! reads from (admin API, control loop). A snapshot is the application's
//! encoded state plus openraft's snapshot metadata. It is built from a
//! copy ([`ReplicatedState::frozen`]) taken while apply waits, encoded on a
//! low-priority thread of its own while apply goes on, then kept in RocksDB
//! outside the write-ahead log (flushed to its own table file, which RocksDB
//! syncs) and reloaded when the store opens.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::{DB, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::db::{CF_SM, KEY_SNAPSHOT};
use crate::{Error, ReplicatedState, StoreConfig};

type NodeIdOf<C> = <C as openraft::RaftTypeConfig>::NodeId;
type NodeOf<C> = <C as openraft::RaftTypeConfig>::Node;

struct Applied<C: StoreConfig, S> {
    last_applied: Option<LogId<NodeIdOf<C>>>,
    membership: StoredMembership<NodeIdOf<C>, NodeOf<C>>,
    state: S,
}

/// Shared, read-mostly access to the applied state.
pub struct StateHandle<C: StoreConfig, S> {
    inner: Arc<RwLock<Applied<C, S>>>,
    /// The index of the last applied entry, sent after every apply (and
    /// snapshot install) once the new state is readable through the
    /// handle: readers that follow the state wait on it
    /// ([`StateHandle::subscribe`]) instead of polling.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

impl<C: StoreConfig, S> Clone for StateHandle<C, S> {
    fn clone(&self) -> Self {
        StateHandle {
            inner: self.inner.clone(),
            applied: self.applied.clone(),
        }
    }
}

impl<C: StoreConfig, S> StateHandle<C, S> {
    fn read_guard(&self) -> RwLockReadGuard<'_, Applied<C, S>> {
        self.inner
            .read()
            .expect("state machine lock poisoned: an apply panicked")
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, Applied<C, S>> {
        self.inner
            .write()
            .expect("state machine lock poisoned: an apply panicked")
    }

    /// Runs `f` on the applied state (keep it short: applies wait meanwhile).
    pub fn read<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.read_guard().state)
    }

    /// Runs `f` on the applied state and the id of the last entry applied
    /// to it (`None` before any), read together.
    pub fn read_applied<T>(&self, f: impl FnOnce(Option<&LogId<NodeIdOf<C>>>, &S) -> T) -> T {
        let applied = self.read_guard();
        f(applied.last_applied.as_ref(), &applied.state)
    }

    /// Index of the last applied entry (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.read_guard()
            .last_applied
            .as_ref()
            .map_or(0, |id| id.index)
    }

    /// Notified with the last applied index each time entries are applied
    /// or a snapshot is installed, after the new state is readable here:
    /// mark the receiver seen (`borrow_and_update`), read the state, and
    /// `changed().await` sees every later apply.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Tells the subscribers the state changed (called with no lock held).
    fn notify(&self, index: Option<u64>) {
        self.applied.send_replace(index.unwrap_or(0));
    }
}

/// What is stored for the current snapshot.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct StoredSnapshot<C: StoreConfig> {
    meta: SnapshotMeta<NodeIdOf<C>, NodeOf<C>>,
    data: Vec<u8>,
}

/// openraft's `RaftStateMachine` over a [`ReplicatedState`].
pub struct StateMachineStore<C: StoreConfig, S> {
    db: Arc<DB>,
    handle: StateHandle<C, S>,
    snapshot_seq: Arc<AtomicU64>,
}

impl<C: StoreConfig, S> Clone for StateMachineStore<C, S> {
    fn clone(&self) -> Self {
        StateMachineStore {
            db: self.db.clone(),
            handle: self.handle.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }
}

/// Builds snapshots of a [`StateMachineStore`].
pub type SnapshotBuilder<C, S> = StateMachineStore<C, S>;

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

impl<C, S> StateMachineStore<C, S>
where
    C: StoreConfig,
    S: ReplicatedState<Command = C::D, Response = C::R>,
{
    /// Loads the stored snapshot, if any, into a fresh state.
    pub(crate) fn load(db: Arc<DB>) -> Result<Self, Error> {
        let store = StateMachineStore {
            db,
            handle: StateHandle {
                inner: Arc::new(RwLock::new(Applied {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    state: S::default(),
                })),
                applied: Arc::new(tokio::sync::watch::channel(0).0),
            },
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        };
        if let Some(stored) = store.read_stored().map_err(|e| Error::Decode {
            what: "snapshot",
            source: proto::Error::Decode(e.to_string()),
        })? {
            let state = S::restore(&stored.data).map_err(|source| Error::Decode {
                what: "snapshot state",
                source,
            })?;
            let mut applied = store.handle.write_guard();
            applied.last_applied = stored.meta.last_log_id.clone();
            applied.membership = stored.meta.last_membership.clone();
            applied.state = state;
            drop(applied);
            let index = stored.meta.last_log_id.as_ref().map(|id| id.index);
            store.handle.notify(index);
        }
        Ok(store)
    }

    /// A handle for reading the applied state.
    pub fn handle(&self) -> StateHandle<C, S> {
        self.handle.clone()
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_SM)
            .expect("column families are created when the store is opened")
    }

    fn read_stored(&self) -> Result<Option<StoredSnapshot<C>>, AnyError> {
        match self.db.get_cf(self.cf(), KEY_SNAPSHOT).map_err(any)? {
            None => Ok(None),
            Some(bytes) => proto::decode(&bytes).map(Some).map_err(any),
        }
    }

    /// Stores `stored` durably. Not through the write-ahead log: a
    /// snapshot is tens of MB, and a synced WAL write that size holds up
    /// every log append queued behind it (long enough for a follower to
    /// miss the leader's heartbeats and call an election). The value is
    /// flushed to its own table file instead, which RocksDB syncs, before
    /// this returns; a crash before that leaves the previous snapshot.
    fn write_stored(&self, stored: &StoredSnapshot<C>) -> Result<(), AnyError> {
        let bytes = proto::encode(stored).map_err(any)?;
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db
            .put_cf_opt(self.cf(), KEY_SNAPSHOT, bytes, &opts)
            .map_err(any)?;
        self.db.flush_cf(self.cf()).map_err(any)
    }

    /// [`Self::write_stored`] on a blocking thread, off the runtime's (the
    /// write and its flush take a while); gives `stored` back.
    async fn store_off_runtime(
        &self,
        stored: StoredSnapshot<C>,
    ) -> Result<StoredSnapshot<C>, StorageError<NodeIdOf<C>>> {
        let store = self.clone();
        let (stored, written) = tokio::task::spawn_blocking(move || {
            let written = store.write_stored(&stored);
            (stored, written)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        written.map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), e))?;
        Ok(stored)
    }
}

impl<C, S> RaftSnapshotBuilder<C> for StateMachineStore<C, S>
where
    C: StoreConfig,
    S: ReplicatedState<Command = C::D, Response = C::R>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<NodeIdOf<C>>> {
        let started = std::time::Instant::now();
        // Apply waits only while the copy is taken (after this waited for
        // the apply in progress); the encoding runs on a thread of its own
        // beside it.
        let (meta, frozen, acquired) = {
            let applied = self.handle.read_guard();
            let acquired = started.elapsed();
            let frozen = applied.state.frozen();
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &applied.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("empty-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied.clone(),
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, frozen, acquired)
        };
        let locked = started.elapsed();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                // Background work: the lowest CPU priority, for this thread
                // only (Linux keeps a nice value per thread), so that
                // requests, heartbeats and apply go first on a busy host.
                let _ = rustix::process::setpriority_process(None, 19);
                let _ = tx.send(frozen.snapshot());
            })
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        let data = rx
            .await
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        let encoded = started.elapsed();
        let stored = StoredSnapshot::<C> { meta, data };
        let stored = self.store_off_runtime(stored).await?;
        tracing::info!(
            snapshot = %stored.meta.snapshot_id,
            bytes = stored.data.len(),
            wait_ms = acquired.as_millis() as u64,
            copy_ms = locked.saturating_sub(acquired).as_millis() as u64,
            encode_ms = encoded.saturating_sub(locked).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot built (apply waited only while the copy was taken)"
        );
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl<C, S> RaftStateMachine<C> for StateMachineStore<C, S>
where
    C: StoreConfig,
    S: ReplicatedState<Command = C::D, Response = C::R>,
{
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeIdOf<C>>>,
            StoredMembership<NodeIdOf<C>, NodeOf<C>>,
        ),
        StorageError<NodeIdOf<C>>,
    > {
        let applied = self.handle.read_guard();
        Ok((applied.last_applied.clone(), applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<NodeIdOf<C>>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.handle.write_guard();
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id.clone();
            let response = match &entry.payload {
                EntryPayload::Blank => C::R::default(),
                EntryPayload::Normal(command) => applied.state.apply(log_id.index, command),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(log_id.clone()), m.clone());
                    C::R::default()
                }
            };
            applied.last_applied = Some(log_id);
            responses.push(response);
        }
        let index = applied.last_applied.as_ref().map(|id| id.index);
        drop(applied);
        self.handle.notify(index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeIdOf<C>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeIdOf<C>, NodeOf<C>>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeIdOf<C>>> {
        // Decoding a large state takes a while: on a blocking thread, off
        // the runtime's (heartbeats and Raft RPCs go on meanwhile).
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let bytes = data.len();
        let (data, state) = tokio::task::spawn_blocking(move || {
            let state = S::restore(&data);
            (data, state)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        let state =
            state.map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            data,
        };
        self.store_off_runtime(stored).await?;
        let mut applied = self.handle.write_guard();
        applied.last_applied = meta.last_log_id.clone();
        applied.membership = meta.last_membership.clone();
        applied.state = state;
        drop(applied);
        self.handle
            .notify(meta.last_log_id.as_ref().map(|id| id.index));
        tracing::info!(
            snapshot = %meta.snapshot_id,
            index = meta.last_log_id.as_ref().map_or(0, |id| id.index),
            bytes,
            decode_and_store_ms = started.elapsed().as_millis() as u64,
            "snapshot installed (sent by the leader)"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<C>>, StorageError<NodeIdOf<C>>> {
        let stored = self
            .read_stored()
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
