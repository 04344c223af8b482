//! The package store: metadata in RocksDB, archives as files named by
//! digest.
//!
//! ```text
//! <data-dir>/meta/          RocksDB: "pkg/<name>/<version>" -> PackageRecord
//! <data-dir>/archives/<sha256 hex>   one file per distinct archive
//! <data-dir>/tmp/           uploads in progress (emptied at start)
//! ```
//!
//! # Commit protocol
//!
//! An upload is written to `tmp/`, fsynced, checked, then [`Store::commit`]
//! renames it to `archives/<digest>`, fsyncs the directory, and only then
//! writes the metadata record with a synced WAL write. The record is the
//! commit point: a version is visible if and only if its record exists, and
//! a record never exists without its archive file. A crash before the
//! record leaves a temporary file or an unreferenced archive, both removed by
//! [`Store::open`] at the next start.
//!
//! Commits are serialised by a mutex, so "is this version stored? else store
//! it" is atomic: two concurrent uploads of one version with different bytes
//! give one 201 and one 409.
//!
//! RocksDB holds the directory lock: a second process on the same data dir
//! fails in [`Store::open`] before it touches anything.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use proto::manifest::Manifest;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteOptions};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::api::PackageVersions;
use crate::resolve::{Catalog, Node};
use crate::{Error, Result};

const KEY_PREFIX: &str = "pkg/";

/// One stored version, as kept in RocksDB (encoded with [`proto::encode`],
/// whose first byte is the format version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    /// Canonical semver text.
    pub version: String,
    /// sha256 of the archive, lower-case hex; the archive file's name.
    pub digest: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
    /// `manifest.toml` exactly as uploaded (re-parsed on read, so a later
    /// [`Manifest`] with more optional fields still reads old records).
    pub manifest_toml: String,
}

impl PackageRecord {
    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::from_toml(&self.manifest_toml).map_err(|e| {
            Error::Storage(format!(
                "stored manifest of {}@{} does not parse: {e}",
                self.name, self.version
            ))
        })
    }
}

/// What [`Store::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The version is new and now stored.
    Created,
    /// The version was already stored with the same digest; nothing changed.
    Unchanged,
}

/// The package store. All methods block (RocksDB, file system): call them
/// from `spawn_blocking` in async code.
pub struct Store {
    db: DB,
    data_dir: PathBuf,
    archives: PathBuf,
    tmp: PathBuf,
    commit_lock: Mutex<()>,
    tmp_seq: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn key(name: &str, version: &Version) -> Vec<u8> {
    format!("{KEY_PREFIX}{name}/{version}").into_bytes()
}

fn storage(context: &str) -> impl Fn(rocksdb::Error) -> Error + '_ {
    move |e| Error::Storage(format!("{context}: {e}"))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, then removes what
    /// a crash may have left behind (temporary uploads, unreferenced
    /// archives). Fails without changing anything if the directory is not
    /// usable: not a directory, not writable, or in use by another process.
    pub fn open(data_dir: &Path) -> Result<Store> {
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(Error::Storage(format!(
                "{} is not a directory",
                data_dir.display()
            )));
        }
        fs::create_dir_all(data_dir)
            .map_err(|e| Error::io(format!("cannot create {}", data_dir.display()), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(4);
        let meta = data_dir.join("meta");
        let db = DB::open(&opts, &meta)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", meta.display())))?;
        // From here on the RocksDB lock is ours.
        let store = Store {
            db,
            data_dir: data_dir.to_path_buf(),
            archives: data_dir.join("archives"),
            tmp: data_dir.join("tmp"),
            commit_lock: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
        };
        for dir in [&store.archives, &store.tmp] {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        store.recover()?;
        Ok(store)
    }

    /// Removes leftovers of interrupted uploads and commits.
    fn recover(&self) -> Result<()> {
        let read = |dir: &Path| {
            fs::read_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))
        };
        let mut removed_tmp = 0;
        for entry in read(&self.tmp)? {
            let entry = entry.map_err(|e| Error::io("cannot read tmp", e))?;
            fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("cannot remove {}", entry.path().display()), e))?;
            removed_tmp += 1;
        }
        let referenced: HashSet<String> = self.records()?.into_iter().map(|r| r.digest).collect();
        let mut removed_orphans = 0;
        for entry in read(&self.archives)? {
            let entry = entry.map_err(|e| Error::io("cannot read archives", e))?;
            let name = entry.file_name();
            let known = name.to_str().is_some_and(|n| referenced.contains(n));
            if !known {
                fs::remove_file(entry.path()).map_err(|e| {
                    Error::io(format!("cannot remove {}", entry.path().display()), e)
                })?;
                removed_orphans += 1;
            }
        }
        for digest in &referenced {
            if !self.archive_path(digest).is_file() {
                return Err(Error::Storage(format!(
                    "archive {digest} is referenced but missing from {}",
                    self.archives.display()
                )));
            }
        }
        if removed_tmp + removed_orphans > 0 {
            fsync_dir(&self.tmp)?;
            fsync_dir(&self.archives)?;
            tracing::info!(
                removed_tmp,
                removed_orphans,
                "removed leftovers of interrupted uploads"
            );
        }
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A fresh path in `tmp/` for an upload in progress.
    pub fn temp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("upload-{}-{n}", std::process::id()))
    }

    /// Where the archive with `digest` lives (whether or not it exists).
    /// `digest` must have passed [`proto::manifest::check_digest`].
    pub fn archive_path(&self, digest: &str) -> PathBuf {
        self.archives.join(digest)
    }

    /// The record of `name@version`, if stored.
    pub fn get(&self, name: &str, version: &Version) -> Result<Option<PackageRecord>> {
        let Some(bytes) = self
            .db
            .get_pinned(key(name, version))
            .map_err(storage("cannot read a package record"))?
        else {
            return Ok(None);
        };
        proto::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::Storage(format!("record of {name}@{version}: {e}")))
    }

    /// Visits the keys under `prefix` (name and version text of each).
    fn scan(&self, prefix: &str, mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let iter = self
            .db
            .iterator(IteratorMode::From(prefix.as_bytes(), Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(storage("cannot scan package records"))?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            visit(&k, &v)?;
        }
        Ok(())
    }

    /// Every stored record (used at start-up).
    fn records(&self) -> Result<Vec<PackageRecord>> {
        let mut out = Vec::new();
        self.scan(KEY_PREFIX, |k, v| {
            let record: PackageRecord = proto::decode(v).map_err(|e| {
                Error::Storage(format!("record {}: {e}", String::from_utf8_lossy(k)))
            })?;
            out.push(record);
            Ok(())
        })?;
        Ok(out)
    }

    /// The stored versions of `name`, sorted by semver precedence.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>> {
        let prefix = format!("{KEY_PREFIX}{name}/");
        let mut out = Vec::new();
        self.scan(&prefix, |k, _| {
            let text = std::str::from_utf8(&k[prefix.len()..])
                .map_err(|_| Error::Storage("a record key is not UTF-8".into()))?;
            let v = Version::parse(text)
                .map_err(|e| Error::Storage(format!("record key version {text:?}: {e}")))?;
            out.push(v);
            Ok(())
        })?;
        out.sort();
        Ok(out)
    }

    /// Every package and its versions: names sorted, versions by semver.
    pub fn list(&self) -> Result<Vec<PackageVersions>> {
        let mut by_name: std::collections::BTreeMap<String, Vec<Version>> = Default::default();
        self.scan(KEY_PREFIX, |k, _| {
            let text = std::str::from_utf8(&k[KEY_PREFIX.len()..])
                .map_err(|_| Error::Storage("a record key is not UTF-8".into()))?;
            let (name, version) = text
                .split_once('/')
                .ok_or_else(|| Error::Storage(format!("malformed record key {text:?}")))?;
            let v = Version::parse(version)
                .map_err(|e| Error::Storage(format!("record key version {text:?}: {e}")))?;
            by_name.entry(name.to_string()).or_default().push(v);
            Ok(())
        })?;
        Ok(by_name
            .into_iter()
            .map(|(name, mut versions)| {
                versions.sort();
                PackageVersions {
                    name,
                    versions: versions.iter().map(Version::to_string).collect(),
                }
            })
            .collect())
    }

    /// Number of stored versions (all packages).
    pub fn count(&self) -> Result<u64> {
        let mut n = 0;
        self.scan(KEY_PREFIX, |_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Stores `record` with its archive, which is the checked upload at
    /// `upload` (in `tmp/`, named by nothing yet). Consumes the upload file
    /// in every case. Other bytes for a stored version are a
    /// [`Error::Conflict`].
    pub fn commit(&self, upload: &Path, record: &PackageRecord) -> Result<Committed> {
        let version = Version::parse(&record.version)
            .map_err(|e| Error::BadRequest(format!("version {:?}: {e}", record.version)))?;
        let _serial = self
            .commit_lock
            .lock()
            .map_err(|_| Error::Storage("commit lock poisoned".into()))?;
        let outcome = self.commit_locked(upload, record, &version);
        if outcome.is_err() || outcome.as_ref().is_ok_and(|c| *c == Committed::Unchanged) {
            let _ = fs::remove_file(upload);
        }
        outcome
    }

    fn commit_locked(
        &self,
        upload: &Path,
        record: &PackageRecord,
        version: &Version,
    ) -> Result<Committed> {
        if let Some(existing) = self.get(&record.name, version)? {
            return if existing.digest == record.digest {
                Ok(Committed::Unchanged)
            } else {
                Err(conflict(&existing, &record.digest))
            };
        }
        // The archive first, durable, ...
        fs::File::open(upload)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("cannot sync {}", upload.display()), e))?;
        let dest = self.archive_path(&record.digest);
        if dest.exists() {
            // Same digest, same bytes (only possible for a re-upload racing
            // with its own earlier commit): keep the file we have.
            fs::remove_file(upload)
                .map_err(|e| Error::io(format!("cannot remove {}", upload.display()), e))?;
        } else {
            fs::rename(upload, &dest).map_err(|e| {
                Error::io(format!("cannot move the upload to {}", dest.display()), e)
            })?;
            fsync_dir(&self.archives)?;
        }
        // ... then the record, with a synced WAL write: the commit point.
        let bytes = proto::encode(record).map_err(|e| Error::Storage(e.to_string()))?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .put_opt(key(&record.name, version), bytes, &sync)
            .map_err(storage("cannot write the package record"))?;
        Ok(Committed::Created)
    }
}

/// The 409 for other bytes under a stored version.
pub fn conflict(existing: &PackageRecord, new_digest: &str) -> Error {
    Error::Conflict(format!(
        "{}@{} is already stored with digest {}; versions are immutable \
         (this upload has digest {new_digest}): publish a new version",
        existing.name, existing.version, existing.digest
    ))
}

impl Catalog for Store {
    fn versions(&self, name: &str) -> Result<Vec<Version>> {
        Store::versions(self, name)
    }

    fn package(&self, name: &str, version: &Version) -> Result<Option<Node>> {
        let Some(record) = self.get(name, version)? else {
            return Ok(None);
        };
        let manifest = record.manifest()?;
        Ok(Some(Node {
            digest: record.digest,
            dependencies: manifest.dependencies,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: &str, digest: &str) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: version.into(),
            digest: digest.into(),
            size: 3,
            uploaded_at_ms: 1,
            manifest_toml: format!("name = \"{name}\"\nversion = \"{version}\"\n"),
        }
    }

    fn upload(store: &Store, bytes: &[u8]) -> PathBuf {
        let p = store.temp_path();
        fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn commit_is_immutable_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let d1 = "a".repeat(64);
        let d2 = "b".repeat(64);
        {
            let store = Store::open(dir.path()).expect("open");
            let up = upload(&store, b"one");
            assert_eq!(
                store.commit(&up, &record("web", "1.0.0", &d1)).expect("c"),
                Committed::Created
            );
            assert!(!up.exists());
            let up = upload(&store, b"one");
            assert_eq!(
                store.commit(&up, &record("web", "1.0.0", &d1)).expect("c"),
                Committed::Unchanged
            );
            assert!(!up.exists());
            let up = upload(&store, b"two");
            let err = store
                .commit(&up, &record("web", "1.0.0", &d2))
                .expect_err("conflict");
            assert!(matches!(err, Error::Conflict(_)));
            assert!(!up.exists());
            let up = upload(&store, b"two");
            store.commit(&up, &record("web", "1.10.0", &d2)).expect("c");
            let up = upload(&store, b"x");
            store
                .commit(&up, &record("web", "1.9.0-rc.1", &"c".repeat(64)))
                .expect("c");
            // A second process (or opener) on the same dir is refused.
            let err = Store::open(dir.path()).expect_err("locked");
            assert!(err.to_string().contains("lock"), "{err}");
            // Leftovers for the next open to clean.
            fs::write(store.temp_path(), b"partial").expect("write");
            fs::write(store.archive_path(&"f".repeat(64)), b"orphan").expect("write");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let list = store.list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].versions, ["1.0.0", "1.9.0-rc.1", "1.10.0"]);
        assert_eq!(fs::read(store.archive_path(&d1)).expect("read"), b"one");
        assert!(!store.archive_path(&"f".repeat(64)).exists());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        assert_eq!(store.count().expect("count"), 3);
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        let err = Store::open(&file).expect_err("file");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
