//! The install pipeline: from a configuration package to unpacked
//! directories and a command ready to run.
//!
//! ## Data flow
//! For each artifact of a package (dependencies first, the module's own
//! package last) [`Installer::prepare`]:
//! 1. takes the archive from the cache (`cache/<digest>.tar.gz`, its sha256
//!    checked again on every use) or else downloads it **by digest** through
//!    depmgr's client ([`depmgr::client::Client::download_digest`]): streamed
//!    to a temporary file while hashed, capped at
//!    [`ARCHIVE_LIMITS`]`.max_archive_bytes`, renamed into the cache only
//!    when the digest matches. So the cache holds nothing but good archives,
//!    and a restore never needs depmgr.
//! 2. unpacks it, streaming from the cached file, with
//!    [`depmgr::archive::unpack`] (the workspace's one archive rule set)
//!    into `modules/<module>/<epoch>/<pkg>-<version>/`, which appears only
//!    when the whole archive passed; then writes the `.unpacked` marker.
//! 3. checks that the manifest's command is an executable file.
//!
//! The install and restore tasks ([`Agent::run_install`],
//! [`Agent::run_restore`]) wrap it: stop the replaced process, (wait the
//! restore's backoff,) prepare, and hand the outcome to the table.
//!
//! ## Trust
//! With TLS the depmgr client presents the agent's certificate and accepts
//! only a server holding a depmgr certificate of the cluster CA
//! ([`Client::with_tls`]); the directive's depmgr URL must then be
//! `https://` (an `http://` one fails the install with a message saying
//! so), and without TLS `http://` (a bare `host:port` takes the scheme
//! that fits).
//!
//! ## Invariants
//! - Nothing unverified is ever unpacked: a digest that does not match
//!   leaves no file in the cache and no directory behind.
//! - Every download is bounded in bytes and in time (`--fetch-timeout-ms`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use depmgr::archive::Limits;
use depmgr::client::{Client, Timeouts};
use proto::manifest::{ArtifactRef, ConfigPackage};
use proto::{Epoch, ModuleName};
use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::Error;
use crate::process::ProcessHandle;
use crate::state::DataDir;

/// Bounds of one artifact: the download (compressed bytes) and what it
/// unpacks to.
pub const ARCHIVE_LIMITS: Limits = Limits {
    max_archive_bytes: 1 << 30,
    max_unpacked_bytes: 4 << 30,
    max_entries: 1_000_000,
};

/// Fetches, verifies, caches and unpacks configuration packages.
#[derive(Debug, Clone)]
pub struct Installer {
    dirs: DataDir,
    fetch_timeout: Duration,
    tls: Option<Arc<tls::Tls>>,
}

impl Installer {
    pub fn new(dirs: DataDir, fetch_timeout: Duration, tls: Option<Arc<tls::Tls>>) -> Installer {
        Installer {
            dirs,
            fetch_timeout,
            tls,
        }
    }

    /// Fetches (or takes from the cache), verifies and unpacks every
    /// artifact of the package, then checks the command. With `fresh`
    /// everything is unpacked anew; otherwise packages already unpacked
    /// (marker present) are kept. The error is the reason for the report.
    pub async fn prepare(
        &self,
        name: &str,
        epoch: Epoch,
        package: &ConfigPackage,
        depmgr: &str,
        fresh: bool,
    ) -> Result<(), Error> {
        let manifest = &package.manifest;
        manifest
            .validate()
            .map_err(|e| Error::InvalidPackage(e.to_string()))?;
        if manifest.command.is_empty() {
            return Err(Error::InvalidPackage(format!(
                "manifest of {} has no command to run",
                manifest.package_ref()
            )));
        }
        let own = package.own_artifact().ok_or_else(|| {
            Error::InvalidPackage("configuration package lists no artifact".into())
        })?;
        if own.name != manifest.name || own.version != manifest.version {
            return Err(Error::InvalidPackage(format!(
                "last artifact {}@{} is not the module's package {}",
                own.name,
                own.version,
                manifest.package_ref()
            )));
        }
        let dirs = &self.dirs;
        let placement = dirs.placement_dir(name, epoch);
        blocking({
            let dir = placement.clone();
            move || {
                if fresh {
                    remove_dir_if_any(&dir)?;
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("cannot prepare {}", dir.display()), e))
            }
        })
        .await?;
        let mut client = None;
        for a in &package.artifacts {
            let what = format!("{}@{}", a.name, a.version);
            proto::manifest::PackageRef::new(&a.name, &a.version)
                .validate()
                .map_err(|e| Error::InvalidPackage(format!("artifact {what}: {e}")))?;
            let dir = dirs.package_dir(name, epoch, &a.name, &a.version);
            let marker = dirs.package_marker(name, epoch, &a.name, &a.version);
            if !fresh
                && dir.is_dir()
                && std::fs::read_to_string(&marker).is_ok_and(|d| d == a.digest)
            {
                continue;
            }
            let archive = self.archive(depmgr, a, &mut client).await?;
            let digest = a.digest.clone();
            blocking(move || install_artifact(&archive, &dir, &marker, &digest, &what)).await?;
        }
        let module_dir = dirs.package_dir(name, epoch, &own.name, &own.version);
        check_command(&module_dir, &manifest.command)
    }

    /// The cached archive of `a`, verified against its digest; downloaded
    /// first when it is not in the cache (or the cached copy is corrupt).
    async fn archive(
        &self,
        depmgr: &str,
        a: &ArtifactRef,
        client: &mut Option<Client>,
    ) -> Result<PathBuf, Error> {
        let artifact = format!("{}@{}", a.name, a.version);
        let fail = |source: depmgr::Error| Error::Artifact {
            artifact: artifact.clone(),
            source,
        };
        proto::manifest::check_digest(&a.digest).map_err(|e| fail(depmgr::Error::BadRequest(e)))?;
        proto::names::check("artifact name", &a.name)
            .map_err(|e| fail(depmgr::Error::BadRequest(e)))?;
        let cached = self.dirs.cached_archive(&a.digest);
        if cached.is_file() {
            let path = cached.clone();
            let actual = blocking(move || Ok(depmgr::sha256_file(&path).ok())).await;
            match actual {
                Ok(Some(d)) if d == a.digest => return Ok(cached),
                _ => {
                    tracing::warn!(path = %cached.display(), "cached archive is corrupt; fetching it again");
                    let _ = tokio::fs::remove_file(&cached).await;
                }
            }
        }
        if depmgr.is_empty() {
            return Err(fail(depmgr::Error::NotFound(
                "not in the cache and no depmgr to fetch it from".into(),
            )));
        }
        // One client per prepare, made only when something is downloaded.
        let c = match client.take() {
            Some(c) => c,
            None => self.client(depmgr).map_err(fail)?,
        };
        let downloaded =
            tokio::time::timeout(self.fetch_timeout, c.download_digest(&a.digest, &cached)).await;
        let base = c.base_url().to_string();
        *client = Some(c);
        match downloaded {
            Ok(Ok(())) => Ok(cached),
            Ok(Err(e)) => Err(fail(e)),
            Err(_) => Err(fail(depmgr::Error::Transport(format!(
                "{base}: download of {} not done within {:?}",
                a.digest, self.fetch_timeout
            )))),
        }
    }

    fn client(&self, depmgr: &str) -> depmgr::Result<Client> {
        let t = self.fetch_timeout;
        Client::with_tls(
            depmgr,
            Timeouts {
                connect: t.min(Duration::from_secs(5)),
                request: t,
                idle: t,
            },
            self.tls.as_ref(),
        )
        .map(|c| c.with_max_download_bytes(ARCHIVE_LIMITS.max_archive_bytes))
    }
}

/// Unpacks the verified `archive` into `dir` (replacing what is there) and
/// marks it complete. Blocking.
fn install_artifact(
    archive: &Path,
    dir: &Path,
    marker: &Path,
    digest: &str,
    artifact: &str,
) -> Result<(), Error> {
    let _ = std::fs::remove_file(marker);
    remove_dir_if_any(dir)?;
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::io(format!("cannot open {}", archive.display()), e))?;
    depmgr::archive::unpack(file, dir, &ARCHIVE_LIMITS).map_err(|source| Error::Artifact {
        artifact: artifact.to_string(),
        source,
    })?;
    std::fs::write(marker, digest)
        .map_err(|e| Error::io(format!("cannot write {}", marker.display()), e))
}

fn remove_dir_if_any(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot clear {}", dir.display()), e)),
    }
}

/// Runs blocking file work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("file task failed: {e}")))?
}

/// The program path of a manifest command: absolute, or under MODULE_DIR.
pub fn command_path(module_dir: &Path, command: &str) -> PathBuf {
    let p = Path::new(command);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        module_dir.join(p)
    }
}

/// The command must exist, be a file and be executable.
fn check_command(module_dir: &Path, command: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = command_path(module_dir, command);
    let problem = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
        Ok(m) if m.is_file() => "is not executable".to_string(),
        Ok(_) => "is not a file".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "does not exist in the package".to_string()
        }
        Err(e) => e.to_string(),
    };
    Err(Error::Command {
        command: command.to_string(),
        problem,
    })
}

/// Removes a module's placement directories (all, or all but `keep`);
/// leaves files such as output.log. Blocking.
pub fn remove_placements(root: &Path, keep: Option<Epoch>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(epoch) = name.to_str().and_then(|n| n.parse::<Epoch>().ok()) else {
            continue;
        };
        if Some(epoch) != keep && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Agent {
    /// The install task of `op`: stop the replaced process, prepare the
    /// package afresh, hand the outcome to the table.
    pub(super) async fn run_install(
        self,
        op: u64,
        old: Option<ProcessHandle>,
        i: Box<proto::heartbeat::Install>,
        cancel: CancellationToken,
    ) {
        if let Some(h) = old {
            h.stop(self.sh.stop_grace).await;
        }
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return,
            r = self.sh.installer.prepare(&i.module, i.epoch, &i.package, &i.depmgr, true) => r,
        };
        let effects = self.lock().install_done(&i.module, op, prepared);
        self.execute(effects).await;
    }

    /// The restore task of `op`: stop the process, wait the backoff,
    /// unpack again what is missing (after an agent restart or a lost
    /// directory; from the cache), hand the outcome to the table.
    pub(super) async fn run_restore(
        self,
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        backoff: Duration,
        cancel: CancellationToken,
    ) {
        if let Some(h) = old {
            h.stop(self.sh.stop_grace).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        let Some(target) = self.lock().restore_target(&name, op) else {
            return;
        };
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return,
            r = self.sh.installer.prepare(&name, target.epoch, &target.package, &target.depmgr, false) => r,
        };
        let effects = self.lock().restore_done(&name, op, prepared);
        self.execute(effects).await;
    }

    /// Executes [`super::Effect::RemovePlacement`] and friends: `keep`
    /// `None` removes every placement of the module.
    pub(super) async fn remove_placements(&self, name: &str, keep: Option<Epoch>) {
        let root = self.sh.dirs.module_root(name);
        let _ = tokio::task::spawn_blocking(move || remove_placements(&root, keep)).await;
    }

    /// Executes [`super::Effect::RemovePlacement`].
    pub(super) async fn remove_placement(&self, name: &str, epoch: Epoch) {
        let placement = self.sh.dirs.placement_dir(name, epoch);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(placement)).await;
    }
}
