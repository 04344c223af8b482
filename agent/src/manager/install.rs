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
//! 3. reads the `manifest.toml` of the module's own package from what was
//!    just unpacked (so from the digest-verified archive) and compares it,
//!    field by field, with the manifest the directive carried: a
//!    difference fails the install, naming the first differing field
//!    (`the directive's manifest differs from the package's manifest.toml
//!    (command: "x" vs "y")`).
//! 4. checks that the manifest's command is an executable file.
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
//! - What runs is what was verified: a module is launched only after its
//!   install (or restore) found the directive's manifest equal, in every
//!   field (command, args, env, health check, dependencies, name,
//!   version), to the `manifest.toml` inside the verified archive; so the
//!   command, arguments, environment and probe the agent uses are the
//!   archive's, never ones that only travelled in the directive.
//! - Every download is bounded in bytes and in time (`--fetch-timeout-ms`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use depmgr::archive::Limits;
use depmgr::client::{Client, Timeouts};
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest};
use proto::{Epoch, ModuleName};
use tokio_util::sync::CancellationToken;

use super::Agent;
use super::cache::Cache;
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
    /// What the cache holds and when each archive was last used.
    cache: Arc<Cache>,
}

impl Installer {
    pub fn new(
        dirs: DataDir,
        fetch_timeout: Duration,
        tls: Option<Arc<tls::Tls>>,
        cache: Arc<Cache>,
    ) -> Installer {
        Installer {
            dirs,
            fetch_timeout,
            tls,
            cache,
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Pre-staging: takes every artifact of `package` into the cache,
    /// downloaded and verified against its digest when it is not there
    /// yet (each download bounded by `--fetch-timeout-ms`), without
    /// unpacking anything. Returns how many archives and bytes the package
    /// holds.
    pub async fn fetch(
        &self,
        package: &ConfigPackage,
        depmgr: &str,
    ) -> Result<(usize, u64), Error> {
        if package.artifacts.is_empty() {
            return Err(Error::InvalidPackage(
                "configuration package lists no artifact".into(),
            ));
        }
        let mut client = None;
        let mut bytes = 0u64;
        for a in &package.artifacts {
            proto::manifest::PackageRef::new(&a.name, &a.version)
                .validate()
                .map_err(|e| {
                    Error::InvalidPackage(format!("artifact {}@{}: {e}", a.name, a.version))
                })?;
            let path = self.archive(depmgr, a, &mut client).await?;
            bytes += tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        }
        Ok((package.artifacts.len(), bytes))
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
        let archived = blocking({
            let dir = module_dir.clone();
            move || read_manifest(&dir)
        })
        .await?;
        if let Some(diff) = manifest_difference(manifest, &archived) {
            return Err(Error::InvalidPackage(format!(
                "the directive's manifest differs from the package's manifest.toml ({diff})"
            )));
        }
        check_command(&module_dir, &archived.command)
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
                Ok(Some(d)) if d == a.digest => {
                    self.used(&a.digest, &cached).await;
                    return Ok(cached);
                }
                _ => {
                    tracing::warn!(path = %cached.display(), "cached archive is corrupt; fetching it again");
                    let _ = tokio::fs::remove_file(&cached).await;
                    self.cache.forget(&a.digest);
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
        let started = std::time::Instant::now();
        let downloaded =
            tokio::time::timeout(self.fetch_timeout, c.download_digest(&a.digest, &cached)).await;
        let bytes = match &downloaded {
            Ok(Ok(())) => Some(tokio::fs::metadata(&cached).await.map_or(0, |m| m.len())),
            _ => None,
        };
        crate::metrics::METRICS.download(started.elapsed().as_secs_f64(), bytes);
        let base = c.base_url().to_string();
        *client = Some(c);
        match downloaded {
            Ok(Ok(())) => {
                self.used(&a.digest, &cached).await;
                Ok(cached)
            }
            Ok(Err(e)) => Err(fail(e)),
            Err(_) => Err(fail(depmgr::Error::Transport(format!(
                "{base}: download of {} not done within {:?}",
                a.digest, self.fetch_timeout
            )))),
        }
    }

    /// Records a use of the cached archive `digest` at `path` (see
    /// [`Cache::used`]).
    async fn used(&self, digest: &str, path: &Path) {
        let (cache, digest, path) = (self.cache.clone(), digest.to_string(), path.to_path_buf());
        let _ = blocking(move || {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            cache.used(&digest, bytes);
            Ok(())
        })
        .await;
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

/// The `manifest.toml` at the root of an unpacked package: a regular file
/// of at most [`depmgr::archive::MAX_MANIFEST_BYTES`], a valid manifest.
/// Blocking.
fn read_manifest(package_dir: &Path) -> Result<Manifest, Error> {
    use std::io::Read;
    let path = package_dir.join(depmgr::archive::MANIFEST);
    let bad =
        |problem: String| Error::InvalidPackage(format!("the package's manifest.toml {problem}"));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(bad("is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad("is missing from the archive".into()));
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| {
            f.take(depmgr::archive::MAX_MANIFEST_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    if text.len() as u64 > depmgr::archive::MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "is larger than {} bytes",
            depmgr::archive::MAX_MANIFEST_BYTES
        )));
    }
    Manifest::from_toml(&text).map_err(|e| bad(format!("is not valid: {e}")))
}

/// The first field in which the directive's manifest differs from the
/// archive's, as `field: <directive's> vs <archive's>`; `None` when equal.
pub fn manifest_difference(directive: &Manifest, archive: &Manifest) -> Option<String> {
    // Destructured: a new field of Manifest must be compared here too.
    let Manifest {
        name,
        version,
        command,
        args,
        env,
        dependencies,
        health,
    } = directive;
    // Each side cut to 200 characters: the message goes into a report.
    let cut = |v: &dyn std::fmt::Debug| {
        let s = format!("{v:?}");
        match s.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &s[..i]),
            None => s,
        }
    };
    let field = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        Some(format!("{what}: {} vs {}", cut(a), cut(b)))
    };
    if *name != archive.name {
        field("name", name, &archive.name)
    } else if *version != archive.version {
        field("version", version, &archive.version)
    } else if *command != archive.command {
        field("command", command, &archive.command)
    } else if *args != archive.args {
        field("args", args, &archive.args)
    } else if *env != archive.env {
        field("env", env, &archive.env)
    } else if *dependencies != archive.dependencies {
        field("dependencies", dependencies, &archive.dependencies)
    } else if *health != archive.health {
        field("health", health, &archive.health)
    } else {
        None
    }
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
        self.trim_cache().await;
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
        self.trim_cache().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::from_toml(&format!("name = \"web\"\nversion = \"1.0.0\"\n{extra}"))
            .expect("manifest")
    }

    #[test]
    fn manifest_difference_names_the_first_differing_field() {
        let base = manifest("command = \"bin/run\"\nargs = [\"a\"]\n[env]\nK = \"v\"\n");
        assert_eq!(manifest_difference(&base, &base.clone()), None);
        for (other, want) in [
            (
                "command = \"bin/evil\"\nargs = [\"a\"]\n[env]\nK = \"v\"\n",
                r#"command: "bin/run" vs "bin/evil""#,
            ),
            (
                "command = \"bin/run\"\nargs = [\"b\"]\n[env]\nK = \"v\"\n",
                r#"args: ["a"] vs ["b"]"#,
            ),
            (
                "command = \"bin/run\"\nargs = [\"a\"]\n[env]\nK = \"w\"\n",
                r#"env: {"K": "v"} vs {"K": "w"}"#,
            ),
            (
                "command = \"bin/run\"\nargs = [\"a\"]\n[env]\nK = \"v\"\n[health]\ntcp = \"127.0.0.1:1\"\n",
                "health: None vs Some(",
            ),
        ] {
            let diff = manifest_difference(&base, &manifest(other)).expect("a difference");
            assert!(diff.starts_with(want), "{diff}");
        }
        let long = manifest(&format!("command = \"bin/{}\"\n", "x".repeat(1000)));
        let diff = manifest_difference(&base, &long).expect("a difference");
        assert!(diff.len() < 500, "cut: {diff}");
    }

    #[test]
    fn the_manifest_must_be_a_file_in_the_package() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = read_manifest(tmp.path()).expect_err("missing");
        assert!(
            err.to_string().contains("manifest.toml is missing"),
            "{err}"
        );
        std::fs::create_dir(tmp.path().join("manifest.toml")).expect("dir");
        let err = read_manifest(tmp.path()).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir(tmp.path().join("manifest.toml")).expect("rm");
        std::fs::write(tmp.path().join("manifest.toml"), "name = 3").expect("write");
        let err = read_manifest(tmp.path()).expect_err("invalid");
        assert!(err.to_string().contains("is not valid"), "{err}");
        std::fs::write(
            tmp.path().join("manifest.toml"),
            "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/run\"\n",
        )
        .expect("write");
        assert_eq!(read_manifest(tmp.path()).expect("valid").command, "bin/run");
    }
}
