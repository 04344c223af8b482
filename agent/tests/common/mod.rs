//! Test harness for the agent binary: a fake supervisor that records
//! heartbeats and answers scripted replies, a package server at depmgr's
//! by-digest path, archive builders, and a handle on a real `agent` process.
//!
//! Shared by the integration tests and the benchmark example
//! (`#[path]`-included), so not every item is used by every test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::heartbeat::{
    Directive, Heartbeat, HeartbeatReply, Install, ModuleStatus, ModuleTable, ReplyOutcome, Report,
    Restore, Stop,
};
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest};
use proto::spec::Fencing;
use tokio_util::sync::CancellationToken;

/// Polls `f` every 5 ms until it returns `Some`, or panics naming `what`
/// after `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A free loopback port (bound, read, released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------- fake supervisor

/// How the fake supervisor answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `Accepted`, with `lease_ms` and the directives.
    Accept,
    /// `NotLeader` with this hint.
    NotLeader(Option<String>),
    /// 503 with a JSON error body.
    Unavailable,
    /// Never answers (the agent's request times out).
    Hang,
}

/// One recorded heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    pub at: Instant,
    pub hb: Heartbeat,
}

#[derive(Debug)]
struct FakeState {
    beats: Vec<Beat>,
    mode: Mode,
    lease_ms: u64,
    /// Repeated in every accepted reply (level-triggered, like the leader).
    directives: Vec<Directive>,
    /// Sent in the next accepted reply only.
    once: Vec<Directive>,
    /// The last table seen, by version.
    table: Option<(u64, ModuleTable)>,
}

/// A fake supervisor leader on loopback.
#[derive(Clone)]
pub struct FakeSupervisor {
    pub addr: String,
    state: Arc<Mutex<FakeState>>,
    stop: CancellationToken,
}

/// What the fake supervisor knows of one module from the heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub status: ModuleStatus,
    pub epoch: u64,
    pub restore_seq: u32,
}

impl FakeSupervisor {
    pub async fn start() -> FakeSupervisor {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener)
    }

    /// Starts on a given address (to come back where an agent expects it).
    pub async fn start_at(addr: &str) -> FakeSupervisor {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> FakeSupervisor {
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(FakeState {
            beats: Vec::new(),
            mode: Mode::Accept,
            lease_ms: 10_000,
            directives: Vec::new(),
            once: Vec::new(),
            table: None,
        }));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/v1/agent/heartbeat", post(heartbeat))
            .with_state(state.clone());
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        FakeSupervisor { addr, state, stop }
    }

    /// Stops listening (open connections may linger until they close).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }
    pub fn set_lease_ms(&self, ms: u64) {
        self.state.lock().expect("lock").lease_ms = ms;
    }
    /// Replaces the directives repeated in every accepted reply.
    pub fn set_directives(&self, d: Vec<Directive>) {
        self.state.lock().expect("lock").directives = d;
    }
    /// Sends `d` in the next accepted reply only.
    pub fn send_once(&self, d: Directive) {
        self.state.lock().expect("lock").once.push(d);
    }
    pub fn beats(&self) -> Vec<Beat> {
        self.state.lock().expect("lock").beats.clone()
    }
    pub fn beat_count(&self) -> usize {
        self.state.lock().expect("lock").beats.len()
    }
    /// Every report seen so far.
    pub fn reports(&self) -> Vec<Report> {
        let st = self.state.lock().expect("lock");
        st.beats.iter().flat_map(|b| b.hb.reports.clone()).collect()
    }

    /// The module as the latest heartbeat shows it.
    pub fn module(&self, name: &str) -> Option<Seen> {
        let st = self.state.lock().expect("lock");
        let beat = st.beats.last()?;
        let (_, table) = st.table.as_ref()?;
        let statuses = beat.hb.statuses.to_statuses()?;
        let i = table.modules.iter().position(|m| m.module == name)?;
        let e = &table.modules[i];
        Some(Seen {
            status: *statuses.get(i)?,
            epoch: e.epoch,
            restore_seq: e.restore_seq,
        })
    }

    /// Index of the first heartbeat at or after `from` that shows `name`
    /// with `status` (decoded against the table in force).
    pub fn first_beat_with(&self, from: usize, name: &str, status: ModuleStatus) -> Option<Beat> {
        let st = self.state.lock().expect("lock");
        let mut table: Option<&ModuleTable> = None;
        for (i, b) in st.beats.iter().enumerate() {
            if let Some(t) = &b.hb.table {
                table = Some(t);
            }
            if i < from {
                continue;
            }
            let (Some(t), Some(statuses)) = (table, b.hb.statuses.to_statuses()) else {
                continue;
            };
            if let Some(pos) = t.modules.iter().position(|m| m.module == name)
                && statuses.get(pos) == Some(&status)
            {
                return Some(b.clone());
            }
        }
        None
    }

    /// Waits until the latest heartbeat shows `name` with `status`.
    pub async fn wait_status(&self, name: &str, status: ModuleStatus, timeout: Duration) -> Seen {
        eventually(&format!("{name} {status:?}"), timeout, || {
            self.module(name).filter(|s| s.status == status)
        })
        .await
    }

    /// Waits until `name` is no longer in the table.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        eventually(&format!("{name} gone from the table"), timeout, || {
            let st = self.state.lock().expect("lock");
            let (_, t) = st.table.as_ref()?;
            (!t.modules.iter().any(|m| m.module == name)).then_some(())
        })
        .await
    }

    /// Waits for a report of `kind` about `name` and returns it.
    pub async fn wait_report(
        &self,
        name: &str,
        kind: proto::heartbeat::ReportKind,
        timeout: Duration,
    ) -> Report {
        eventually(&format!("{kind:?} report for {name}"), timeout, || {
            self.reports()
                .into_iter()
                .find(|r| r.module == name && r.kind == kind)
        })
        .await
    }
}

async fn heartbeat(State(state): State<Arc<Mutex<FakeState>>>, body: Bytes) -> Response {
    let hb: Heartbeat = match proto::decode(&body) {
        Ok(h) => h,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(proto::ErrorBody {
                    error: e.to_string(),
                }),
            )
                .into_response();
        }
    };
    let at = Instant::now();
    let reply = {
        let mut st = state.lock().expect("lock");
        match st.mode.clone() {
            Mode::Hang => None,
            Mode::Unavailable => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(proto::ErrorBody {
                        error: "no leader".into(),
                    }),
                )
                    .into_response();
            }
            Mode::NotLeader(hint) => {
                st.beats.push(Beat { at, hb });
                Some(HeartbeatReply {
                    outcome: ReplyOutcome::NotLeader { leader: hint },
                    need_table: false,
                    lease_ms: 0,
                    directives: vec![],
                })
            }
            Mode::Accept => {
                if let Some(t) = &hb.table {
                    st.table = Some((hb.table_version, t.clone()));
                }
                let known = st.table.as_ref().map(|(v, _)| *v);
                let need_table = known != Some(hb.table_version);
                let mut directives = st.directives.clone();
                directives.append(&mut st.once);
                let lease_ms = st.lease_ms;
                let table_version = hb.table_version;
                st.beats.push(Beat { at, hb });
                Some(HeartbeatReply {
                    outcome: ReplyOutcome::Accepted { table_version },
                    need_table,
                    lease_ms,
                    directives,
                })
            }
        }
    };
    match reply {
        Some(r) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            proto::encode(&r).expect("encode"),
        )
            .into_response(),
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

// ---------------------------------------------------------------- packages

/// A package archive under construction.
pub struct PackageBuilder {
    name: String,
    version: String,
    manifest: String,
    files: Vec<(String, Vec<u8>, u32)>,
}

/// A built package: its archive and the references that name it.
#[derive(Clone)]
pub struct BuiltPackage {
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
    pub digest: String,
    pub manifest: Manifest,
}

impl BuiltPackage {
    pub fn artifact(&self) -> ArtifactRef {
        ArtifactRef {
            name: self.name.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

impl PackageBuilder {
    /// `manifest_extra` is appended to the name/version lines of
    /// manifest.toml (command, args, env, health, ...).
    pub fn new(name: &str, version: &str, manifest_extra: &str) -> PackageBuilder {
        PackageBuilder {
            name: name.into(),
            version: version.into(),
            manifest: format!("name = \"{name}\"\nversion = \"{version}\"\n{manifest_extra}"),
            files: Vec::new(),
        }
    }

    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.into(), contents.into(), mode));
        self
    }

    pub fn build(self) -> BuiltPackage {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut all = vec![(
            "manifest.toml".to_string(),
            self.manifest.clone().into_bytes(),
            0o644,
        )];
        all.extend(self.files);
        for (path, data, mode) in all {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &path, data.as_slice())
                .expect("append");
        }
        let bytes = b.into_inner().expect("tar").finish().expect("gzip");
        BuiltPackage {
            digest: sha256_hex(&bytes),
            manifest: Manifest::from_toml(&self.manifest).expect("test manifest is valid"),
            name: self.name,
            version: self.version,
            bytes,
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A raw archive entry: name, contents, symlink target.
pub type RawEntry<'a> = (&'a str, &'a [u8], Option<&'a str>);

/// A tar.gz whose raw entry names are written as given (so `../x` and
/// absolute names can be made), with optional symlink entries.
pub fn raw_archive(entries: &[RawEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        match link {
            Some(l) => {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
            }
        }
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, if link.is_some() { &b""[..] } else { *data })
            .expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// The install directive for a module made of `packages` (dependencies
/// first, own package last).
pub fn install(
    module: &str,
    epoch: u64,
    fencing: Fencing,
    packages: &[&BuiltPackage],
    depmgr: &str,
) -> Directive {
    let own = packages.last().expect("at least the module's own package");
    Directive::Install(Install {
        module: module.into(),
        epoch,
        fencing,
        package: ConfigPackage {
            manifest: own.manifest.clone(),
            artifacts: packages.iter().map(|p| p.artifact()).collect(),
        },
        depmgr: depmgr.into(),
    })
}

pub fn restore(module: &str, epoch: u64, seq: u32) -> Directive {
    Directive::Restore(Restore {
        module: module.into(),
        epoch,
        seq,
        backoff_ms: 0,
    })
}

pub fn stop(module: &str, epoch: u64) -> Directive {
    Directive::Stop(Stop {
        module: module.into(),
        epoch,
    })
}

/// digest → archive bytes.
type Archives = BTreeMap<String, Vec<u8>>;

/// Serves archives by digest at `GET /v1/archives/{digest}`, the depmgr
/// route the agent downloads from.
#[derive(Clone)]
pub struct PackageServer {
    pub url: String,
    archives: Arc<Mutex<Archives>>,
    fetches: Arc<Mutex<u32>>,
    stop: CancellationToken,
}

impl PackageServer {
    pub async fn start() -> PackageServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let server = PackageServer {
            url: format!("http://{addr}"),
            archives: Arc::new(Mutex::new(BTreeMap::new())),
            fetches: Arc::new(Mutex::new(0)),
            stop: CancellationToken::new(),
        };
        let app = Router::new()
            .route("/v1/archives/{digest}", get(archive))
            .with_state(server.clone());
        let shutdown = server.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        server
    }

    /// Serves `bytes` as the archive with `digest` (whatever their real
    /// digest: a tampered download).
    pub fn put_bytes(&self, digest: &str, bytes: Vec<u8>) {
        self.archives
            .lock()
            .expect("lock")
            .insert(digest.into(), bytes);
    }

    pub fn put(&self, p: &BuiltPackage) {
        self.put_bytes(&p.digest, p.bytes.clone());
    }

    pub fn fetches(&self) -> u32 {
        *self.fetches.lock().expect("lock")
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

async fn archive(State(s): State<PackageServer>, UrlPath(digest): UrlPath<String>) -> Response {
    *s.fetches.lock().expect("lock") += 1;
    match s.archives.lock().expect("lock").get(&digest) {
        Some(b) => b.clone().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(proto::ErrorBody {
                error: "no such package".into(),
            }),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- the agent

/// A running `agent` binary; killed on drop.
pub struct AgentProc {
    pub child: Child,
    pub listen: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// Options of a test agent.
pub struct AgentArgs<'a> {
    pub node: &'a str,
    pub data_dir: &'a Path,
    pub supervisors: Vec<String>,
    pub heartbeat_ms: u64,
    pub stop_grace_ms: u64,
    pub extra: Vec<String>,
}

impl<'a> AgentArgs<'a> {
    pub fn new(data_dir: &'a Path, supervisor: &str) -> AgentArgs<'a> {
        AgentArgs {
            node: "node-a",
            data_dir,
            supervisors: vec![supervisor.to_string()],
            heartbeat_ms: 100,
            stop_grace_ms: 300,
            extra: Vec::new(),
        }
    }
}

impl AgentProc {
    pub fn spawn(a: AgentArgs) -> AgentProc {
        let listen = free_addr();
        let log = a.data_dir.with_extension("agent.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(agent_bin())
            .args(["--node", a.node, "--listen", &listen])
            .arg("--data-dir")
            .arg(a.data_dir)
            .args(["--supervisors", &a.supervisors.join(",")])
            .args(["--heartbeat-ms", &a.heartbeat_ms.to_string()])
            .args(["--stop-grace-ms", &a.stop_grace_ms.to_string()])
            .args(["--request-timeout-ms", "500"])
            .args(&a.extra)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn agent");
        AgentProc {
            child,
            listen,
            data_dir: a.data_dir.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET /v1/status` as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let r = client
            .get(format!("http://{}/v1/status", self.listen))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits for the status API to answer.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "agent did not serve its status API; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The pid of a module, from the status API.
    pub async fn module_pid(&self, name: &str) -> Option<u32> {
        let s = self.status().await?;
        s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)?["pid"]
            .as_u64()
            .map(|p| p as u32)
    }

    /// Waits until the module has a pid in the status API.
    pub async fn wait_pid(&self, name: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.module_pid(name).await {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no pid for {name}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(timeout).await
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- agent log tail ({}) ---", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// The agent binary: cargo's path in tests, the sibling of the running
/// example otherwise.
pub fn agent_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_agent") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("agent")))
            .expect("target dir"),
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}
