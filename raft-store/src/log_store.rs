//! The Raft log on RocksDB, with group-committed durability.
//!
//! `append` writes the entries to RocksDB (memtable + WAL write, no sync) and
//! hands openraft's flush callback to the flusher thread. The flusher takes
//! every callback queued so far, syncs the WAL once (`flush_wal(true)`,
//! an fsync), then fires those callbacks: an entry is reported written only
//! once it is on disk, and appends that arrive during a sync share the next
//! one. Votes, truncations and purges are written with a synced write.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreConfig;
use crate::db::{
    CF_LOGS, CF_META, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, index_of_key, log_key,
};

type NodeIdOf<C> = <C as openraft::RaftTypeConfig>::NodeId;

/// openraft's `RaftLogStorage` and `RaftLogReader` over RocksDB.
pub struct LogStore<C: StoreConfig> {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<C>>,
    syncs: Arc<AtomicU64>,
    observer: Arc<OnceLock<SyncObserver>>,
}

/// Told how long each WAL sync took ([`LogStore::observe_syncs`]).
type SyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl<C: StoreConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            flusher: self.flusher.clone(),
            syncs: self.syncs.clone(),
            observer: self.observer.clone(),
        }
    }
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

impl<C: StoreConfig> LogStore<C> {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<C>>();
        let syncs = Arc::new(AtomicU64::new(0));
        let observer = Arc::new(OnceLock::new());
        // The flusher holds the DB weakly, so that dropping the last store
        // handle closes the DB at once (a reopen must not find it locked).
        let (flush_db, flush_syncs, flush_observer) =
            (Arc::downgrade(&db), syncs.clone(), observer.clone());
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(&flush_db, &rx, &flush_syncs, &flush_observer))
            .expect("spawning the log flusher thread");
        LogStore {
            db,
            flusher: tx,
            syncs,
            observer,
        }
    }

    /// WAL syncs performed so far (one per group of appends).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Calls `observe` with the duration of every later WAL sync, on the
    /// flusher thread (keep it short: appends wait for the sync's
    /// callbacks). Only the first observer set is kept; returns whether
    /// this one was.
    pub fn observe_syncs(&self, observe: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observe)).is_ok()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created when the store is opened")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(any)? {
            None => Ok(None),
            Some(bytes) => proto::decode(&bytes).map(Some).map_err(any),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), AnyError> {
        let bytes = proto::encode(value).map_err(any)?;
        let opts = if sync {
            synced()
        } else {
            WriteOptions::default()
        };
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, &opts)
            .map_err(any)
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeIdOf<C>>>, StorageError<NodeIdOf<C>>> {
        self.get_meta(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

fn flush_loop<C: StoreConfig>(
    db: &std::sync::Weak<DB>,
    rx: &mpsc::Receiver<LogFlushed<C>>,
    syncs: &AtomicU64,
    observer: &OnceLock<SyncObserver>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let started = Instant::now();
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.into_string()),
            None => Err("the log store was closed before its entries were synced".to_string()),
        };
        syncs.fetch_add(1, Ordering::Relaxed);
        if let Some(observe) = observer.get() {
            observe(started.elapsed());
        }
        for callback in group {
            callback.log_io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

impl<C: StoreConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<NodeIdOf<C>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i.saturating_add(1)),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let mut out = Vec::new();
        let key = log_key(start);
        let iter = self.db.iterator_cf(
            self.cf(CF_LOGS),
            IteratorMode::From(&key, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let index = index_of_key(&k).ok_or_else(|| {
                StorageIOError::read_logs(AnyError::error(format!("bad log key {k:?}")))
            })?;
            if end.is_some_and(|end| index >= end) {
                break;
            }
            let entry: C::Entry =
                proto::decode(&v).map_err(|e| StorageIOError::read_log_at_index(index, any(e)))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl<C: StoreConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<NodeIdOf<C>>> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .db
            .iterator_cf(self.cf(CF_LOGS), IteratorMode::End)
            .next()
            .transpose()
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let last_log_id = match last {
            None => last_purged_log_id.clone(),
            Some((_, v)) => {
                let entry: C::Entry =
                    proto::decode(&v).map_err(|e| StorageIOError::read_logs(any(e)))?;
                Some(entry.get_log_id().clone())
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(
        &mut self,
        vote: &Vote<NodeIdOf<C>>,
    ) -> Result<(), StorageError<NodeIdOf<C>>> {
        self.put_meta(KEY_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeIdOf<C>>>, StorageError<NodeIdOf<C>>> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeIdOf<C>>>,
    ) -> Result<(), StorageError<NodeIdOf<C>>> {
        // Not synced: a lost committed index is only re-learned from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false)
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<NodeIdOf<C>>>, StorageError<NodeIdOf<C>>> {
        Ok(self
            .get_meta::<Option<LogId<NodeIdOf<C>>>>(KEY_COMMITTED)
            .map_err(StorageIOError::read_logs)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<NodeIdOf<C>>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for entry in entries {
            let id = entry.get_log_id().clone();
            let bytes = proto::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(id.clone(), any(e)))?;
            batch.put_cf(cf, log_key(id.index), bytes);
        }
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.flusher.send(callback).map_err(|_| {
            StorageIOError::write_logs(AnyError::error("the log flusher thread has stopped"))
        })?;
        Ok(())
    }

    async fn truncate(
        &mut self,
        log_id: LogId<NodeIdOf<C>>,
    ) -> Result<(), StorageError<NodeIdOf<C>>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), log_key(log_id.index), log_key(u64::MAX));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeIdOf<C>>) -> Result<(), StorageError<NodeIdOf<C>>> {
        let mut batch = WriteBatch::default();
        let purged = proto::encode(&log_id).map_err(|e| StorageIOError::write_logs(any(e)))?;
        batch.put_cf(self.cf(CF_META), KEY_LAST_PURGED, purged);
        batch.delete_range_cf(self.cf(CF_LOGS), log_key(0), log_key(log_id.index + 1));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }
}
