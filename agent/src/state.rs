//! The agent's durable state: one small JSON file in `--data-dir`.
//!
//! ## What is in it
//! - `incarnation`: the counter behind the heartbeat's incarnation id. A new
//!   data dir starts it at the wall clock in milliseconds (so a wiped node
//!   still comes back with a higher id than before); every start adds one.
//! - `epochs`: per module ever seen, the highest epoch accepted and the
//!   epoch of the last stop executed. They outlive the module: a directive
//!   older than either is refused, even after the module was forgotten.
//! - `cluster`: id of the supervisor cluster the agent serves (0: none
//!   yet; absent in older files). The epochs are that cluster's: when an
//!   accepted heartbeat reply names another cluster, its records are dropped
//!   (see `manager::table`).
//! - `modules`: the installed modules (epoch, fencing mode, configuration
//!   package, depmgr URL, last restore order executed, start counter), in
//!   table order.
//!
//! ## How it is written
//! [`StateFile::save`] writes a temp file, fsyncs it, renames it over the
//! state file and fsyncs the directory, so a crash leaves the old or the
//! new file, never a torn one. Every snapshot carries a revision; a save of
//! an older revision than the one on disk is skipped, so concurrent savers
//! never move the file backwards. The file opens with `format_version`; an
//! unknown version is an error, not a guess.
//!
//! ## Layout of the data dir
//! ```text
//! <data-dir>/state.json                     this file
//! <data-dir>/lock                           held (flock) while an agent runs
//! <data-dir>/cache/<sha256>.tar.gz          verified archives, by digest
//! <data-dir>/modules/<module>/<epoch>/<pkg>-<version>/   unpacked packages
//! <data-dir>/modules/<module>/output.log    the module's stdout and stderr
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proto::manifest::ConfigPackage;
use proto::spec::Fencing;
use proto::{Epoch, ModuleName};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Version of the state file format.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Fencing record of one module name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Highest epoch of a directive accepted for the module.
    pub highest: Epoch,
    /// Epoch of the last stop executed, if any: an install at or below it
    /// is a stale repeat.
    pub stopped_at: Option<Epoch>,
}

/// One installed module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledModule {
    pub name: ModuleName,
    pub epoch: Epoch,
    pub fencing: Fencing,
    pub package: ConfigPackage,
    /// depmgr base URL the package came from (to refill a lost cache).
    pub depmgr: String,
    /// The restore order the last started process came from (0: install).
    pub restore_seq: u32,
    /// Processes started for this placement.
    pub starts: u64,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub format_version: u32,
    /// Incarnation id of the running (or last) agent start.
    pub incarnation: u64,
    pub epochs: BTreeMap<ModuleName, EpochRecord>,
    /// Installed modules in table order.
    pub modules: Vec<InstalledModule>,
    /// The supervisor cluster whose epochs `epochs` holds (0: none yet).
    #[serde(default)]
    pub cluster: u64,
}

impl PersistedState {
    pub fn new(incarnation: u64) -> PersistedState {
        PersistedState {
            format_version: STATE_FORMAT_VERSION,
            incarnation,
            epochs: BTreeMap::new(),
            modules: Vec::new(),
            cluster: 0,
        }
    }
}

/// Paths inside the data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn cached_archive(&self, digest: &str) -> PathBuf {
        self.cache_dir().join(format!("{digest}.tar.gz"))
    }
    pub fn module_root(&self, module: &str) -> PathBuf {
        self.root.join("modules").join(module)
    }
    pub fn placement_dir(&self, module: &str, epoch: Epoch) -> PathBuf {
        self.module_root(module).join(epoch.to_string())
    }
    /// Directory an artifact of a placement unpacks into.
    pub fn package_dir(&self, module: &str, epoch: Epoch, name: &str, version: &str) -> PathBuf {
        self.placement_dir(module, epoch)
            .join(format!("{name}-{version}"))
    }
    /// Marker written beside a package dir once it is completely unpacked
    /// (holds the digest).
    pub fn package_marker(&self, module: &str, epoch: Epoch, name: &str, version: &str) -> PathBuf {
        self.placement_dir(module, epoch)
            .join(format!(".{name}-{version}.unpacked"))
    }
    pub fn output_log(&self, module: &str) -> PathBuf {
        self.module_root(module).join("output.log")
    }
}

/// The state file and the lock that keeps a second agent off the data dir.
#[derive(Debug)]
pub struct StateFile {
    dir: DataDir,
    /// Revision of the snapshot on disk.
    written: Mutex<u64>,
    _lock: File,
}

impl StateFile {
    /// Opens (creating when missing) the data dir, takes its lock, loads the
    /// state and starts a new incarnation: the loaded state with the
    /// counter advanced, already saved. `now_ms` seeds a fresh counter.
    pub fn open(dir: DataDir, now_ms: u64) -> Result<(StateFile, PersistedState), Error> {
        let root = dir.root().to_path_buf();
        let unusable = |what: &str, e: std::io::Error| {
            Error::DataDir(format!("{}: {what}: {e}", root.display()))
        };
        fs::create_dir_all(&root).map_err(|e| unusable("cannot create", e))?;
        // Absolute from here on: MODULE_DIR and friends derive from it.
        let root = fs::canonicalize(&root).map_err(|e| unusable("cannot resolve", e))?;
        let dir = DataDir::new(&root);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.lock_file())
            .map_err(|e| unusable("cannot open lock file", e))?;
        lock.try_lock().map_err(|e| {
            Error::DataDir(format!("{}: held by another agent ({e})", root.display()))
        })?;
        let mut state = match fs::read(dir.state_file()) {
            Ok(bytes) => parse_state(&dir.state_file(), &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::new(now_ms),
            Err(e) => return Err(unusable("cannot read state.json", e)),
        };
        fs::create_dir_all(dir.cache_dir()).map_err(|e| unusable("cannot create cache", e))?;
        state.incarnation = state.incarnation.saturating_add(1);
        let file = StateFile {
            dir,
            written: Mutex::new(0),
            _lock: lock,
        };
        file.write(&state)
            .map_err(|e| unusable("cannot write state.json", e))?;
        Ok((file, state))
    }

    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Writes the snapshot of revision `rev` unless a newer one is on disk.
    /// Blocking (fsync); call from a blocking context.
    pub fn save(&self, rev: u64, state: &PersistedState) -> Result<(), Error> {
        let mut written = self
            .written
            .lock()
            .map_err(|_| Error::Internal("state file lock poisoned".into()))?;
        if rev <= *written {
            return Ok(());
        }
        self.write(state)
            .map_err(|e| Error::DataDir(format!("{}: {e}", self.dir.state_file().display())))?;
        *written = rev;
        Ok(())
    }

    fn write(&self, state: &PersistedState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.state_file(), &bytes)
    }
}

/// The state file at `path` (for the error) from its `bytes`.
fn parse_state(path: &Path, bytes: &[u8]) -> Result<PersistedState, Error> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let bad = |m: String| Error::DataDir(format!("{}: {m}", path.display()));
    let v: Version =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a state file: {e}")))?;
    if v.format_version != STATE_FORMAT_VERSION {
        return Err(bad(format!(
            "state format version {}, this agent reads {STATE_FORMAT_VERSION}",
            v.format_version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(format!("corrupt state file: {e}")))
}

/// Temp file + fsync + rename + fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    // Unique per writer: two installs may cache the same archive at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}.{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::manifest::{ArtifactRef, Manifest};

    fn sample_module() -> InstalledModule {
        InstalledModule {
            name: "web".into(),
            epoch: 7,
            fencing: Fencing::AtLeastOne,
            package: ConfigPackage {
                manifest: Manifest::from_toml(
                    "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"\n[env]\nA = \"b\"",
                )
                .expect("manifest"),
                artifacts: vec![ArtifactRef {
                    name: "web".into(),
                    version: "1.0.0".into(),
                    digest: "ab".repeat(32),
                }],
            },
            depmgr: "http://127.0.0.1:1".into(),
            restore_seq: 2,
            starts: 3,
        }
    }

    #[test]
    fn state_survives_reopen_and_incarnation_grows() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path().join("data"));
        let (file, mut state) = StateFile::open(dir.clone(), 1000).expect("open");
        assert_eq!(state.incarnation, 1001);
        state.modules.push(sample_module());
        state.epochs.insert(
            "web".into(),
            EpochRecord {
                highest: 7,
                stopped_at: Some(3),
            },
        );
        file.save(1, &state).expect("save");
        // An older revision never overwrites a newer one.
        file.save(1, &PersistedState::new(5)).expect("skip");
        drop(file);
        let (_file, again) = StateFile::open(dir, 99_999).expect("reopen");
        assert_eq!(again.incarnation, 1002);
        assert_eq!(again.modules, vec![sample_module()]);
        assert_eq!(again.epochs["web"].highest, 7);
    }

    #[test]
    fn a_state_file_without_a_cluster_id_loads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        let mut old = serde_json::to_value(PersistedState::new(5)).expect("json");
        old.as_object_mut().expect("object").remove("cluster");
        fs::write(dir.state_file(), old.to_string()).expect("write");
        let (_file, state) = StateFile::open(dir, 1).expect("open");
        assert_eq!(state.cluster, 0);
        assert_eq!(state.incarnation, 6);
    }

    #[test]
    fn second_agent_is_locked_out_and_bad_files_are_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        let (_held, _) = StateFile::open(dir.clone(), 1).expect("open");
        let err = StateFile::open(dir.clone(), 1).expect_err("locked");
        assert!(err.to_string().contains("another agent"), "{err}");
        drop(_held);

        fs::write(dir.state_file(), b"{\"format_version\": 9}").expect("write");
        let err = StateFile::open(dir.clone(), 1).expect_err("version");
        assert!(err.to_string().contains("format version 9"), "{err}");
        fs::write(dir.state_file(), b"garbage").expect("write");
        assert!(StateFile::open(dir, 1).is_err());
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        fs::write(&path, b"x").expect("write");
        let err = StateFile::open(DataDir::new(&path), 1).expect_err("file");
        assert!(err.to_string().contains("cannot create"), "{err}");
    }
}
