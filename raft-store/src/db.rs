//! The RocksDB instance under a store: opening (with the format check),
//! column families and keys, all named here and nowhere else.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, LogLevel, Options};

use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::{Error, ReplicatedState, StoreConfig};

/// Version of the on-disk layout; bump it on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// Marker file in the data dir that names the layout version.
pub const FORMAT_FILE: &str = "RAFT_STORE_FORMAT";
/// Subdirectory holding RocksDB's own files.
const DB_DIR: &str = "rocksdb";

/// Column family of log entries: big-endian u64 index → encoded entry.
pub(crate) const CF_LOGS: &str = "logs";
/// Column family of log metadata: vote, committed, last purged id.
pub(crate) const CF_META: &str = "meta";
/// Column family of the state machine: the current snapshot.
pub(crate) const CF_SM: &str = "sm";
const COLUMN_FAMILIES: [&str; 3] = [CF_LOGS, CF_META, CF_SM];

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Log key of an index: big-endian, so byte order is index order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn index_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Opens (or creates) the store in a data dir.
pub struct Store;

impl Store {
    /// Opens the store in `dir`, creating it when `dir` is missing or empty.
    ///
    /// A non-empty dir must carry this build's format marker and a healthy
    /// RocksDB; anything else is an error and nothing in `dir` is changed.
    pub fn open<C, S>(dir: &Path) -> Result<(LogStore<C>, StateMachineStore<C, S>), Error>
    where
        C: StoreConfig,
        S: ReplicatedState<Command = C::D, Response = C::R>,
    {
        let db = Arc::new(open_db(dir)?);
        let log = LogStore::new(db.clone());
        let sm = StateMachineStore::load(db).map_err(|e| Error::Corrupt {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })?;
        Ok((log, sm))
    }
}

fn dir_error(dir: &Path, message: impl std::fmt::Display) -> Error {
    Error::DataDir {
        dir: dir.display().to_string(),
        message: message.to_string(),
    }
}

fn open_db(dir: &Path) -> Result<DB, Error> {
    let fresh = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(dir_error(dir, e)),
    };
    if fresh {
        create_layout(dir)?;
    } else {
        check_format(dir)?;
    }
    // RocksDB writes CURRENT last when it creates a database: without it, the
    // creation was interrupted (the marker is written first) and starts over.
    let create = !dir.join(DB_DIR).join("CURRENT").exists();
    let mut opts = Options::default();
    opts.create_if_missing(create);
    opts.create_missing_column_families(create);
    opts.set_paranoid_checks(true);
    // RocksDB's info log goes to tracing rather than a LOG file, so that a
    // refused open leaves the directory exactly as it was.
    opts.set_info_logger(rocksdb::InfoLogger::new_callback_logger(
        LogLevel::Warn,
        |level, msg| match level {
            LogLevel::Debug | LogLevel::Info | LogLevel::Header => {
                tracing::debug!(target: "rocksdb", "{}", msg.trim_end())
            }
            LogLevel::Warn => tracing::warn!(target: "rocksdb", "{}", msg.trim_end()),
            LogLevel::Error | LogLevel::Fatal => {
                tracing::error!(target: "rocksdb", "{}", msg.trim_end())
            }
        },
    ));
    let cfs = COLUMN_FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&opts, dir.join(DB_DIR), cfs).map_err(|e| Error::Corrupt {
        dir: dir.display().to_string(),
        message: e.into_string(),
    })
}

fn format_line() -> String {
    format!("raft-store {FORMAT_VERSION}\n")
}

/// Creates the data dir and writes the format marker, durably.
fn create_layout(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| dir_error(dir, e))?;
    let tmp: PathBuf = dir.join(format!("{FORMAT_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(format_line().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(FORMAT_FILE))?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| dir_error(dir, e))
}

fn check_format(dir: &Path) -> Result<(), Error> {
    let marker = dir.join(FORMAT_FILE);
    let text = match fs::read_to_string(&marker) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Foreign {
                dir: dir.display().to_string(),
                reason: format!("it is not empty and has no {FORMAT_FILE} file"),
            });
        }
        Err(e) => return Err(dir_error(dir, e)),
    };
    if text != format_line() {
        return Err(Error::FormatVersion {
            dir: dir.display().to_string(),
            found: text.trim().to_string(),
            expected: FORMAT_VERSION,
        });
    }
    Ok(())
}
