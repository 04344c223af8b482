//! Test harness: a cluster of real `supervisor` processes, simulated node
//! managers (fake agents speaking the real heartbeat protocol) and a fake
//! depmgr serving package metadata.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admin_api::AdminClient;
use admin_api::{ClusterView, ModuleView};
use axum::Json;
use axum::extract::Path;
use axum::routing::get;
use proto::heartbeat::{
    Directive, Heartbeat, HeartbeatReply, ModuleStatus, ModuleTable, PackedStatuses, ReplyOutcome,
    TableEntry,
};
use proto::manifest::ArtifactRef;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` until it yields `Some`, or panics naming `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Real supervisor processes on loopback; killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    pub ids: Vec<u64>,
    procs: Vec<Option<Child>>,
    pub depmgr: String,
    pub extra_args: Vec<String>,
}

impl Cluster {
    pub fn peers(&self) -> String {
        self.ids
            .iter()
            .zip(&self.addrs)
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts `n` replicas with fast failure-detector settings.
    pub async fn start(n: usize, depmgr: &str) -> Cluster {
        Self::start_with(n, depmgr, &[]).await
    }

    pub async fn start_with(n: usize, depmgr: &str, extra: &[&str]) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            addrs: (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            ids: (1..=n as u64).collect(),
            procs: (0..n).map(|_| None).collect(),
            depmgr: depmgr.to_string(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i, &c.peers());
        }
        c.wait_leader(Duration::from_secs(20)).await;
        c
    }

    fn spawn(&mut self, i: usize, peers: &str) {
        let log = std::fs::File::create(self.dir.path().join(format!("s{}.log", self.ids[i])))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .args(["--id", &self.ids[i].to_string(), "--listen", &self.addrs[i]])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("s{}", self.ids[i])))
            .args(["--peers", peers, "--depmgr", &self.depmgr])
            .args(self.flags())
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn supervisor");
        self.procs[i] = Some(child);
    }

    /// Fast failure-detector settings, overridden by `extra_args`.
    fn flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = Vec::new();
        for (flag, value) in [
            ("--heartbeat-ttl-ms", "800"),
            ("--lease-ms", "1000"),
            ("--lease-drift-ms", "200"),
            ("--election-timeout-ms", "500"),
        ] {
            if !self.extra_args.iter().any(|a| a == flag) {
                flags.extend([flag.to_string(), value.to_string()]);
            }
        }
        flags.extend(self.extra_args.iter().cloned());
        flags
    }

    /// SIGKILLs replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts replica `i` with the same flags and data dir.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let peers = self.peers();
        self.spawn(i, &peers);
    }

    /// Adds a replica process (not yet a member) and returns its index.
    pub fn add_process(&mut self, id: u64) -> usize {
        self.ids.push(id);
        self.addrs.push(format!("127.0.0.1:{}", free_port()));
        self.procs.push(None);
        let i = self.ids.len() - 1;
        let peers = self.peers();
        self.spawn(i, &peers);
        i
    }

    /// The admin token the replicas were started with, if any.
    pub fn token(&self) -> Option<String> {
        let i = self.extra_args.iter().position(|a| a == "--admin-token")?;
        self.extra_args.get(i + 1).cloned()
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(self.addrs.clone(), self.token()).with_timeout(Duration::from_secs(5))
    }

    pub fn client_of(&self, i: usize) -> AdminClient {
        AdminClient::new(vec![self.addrs[i].clone()], self.token())
            .with_timeout(Duration::from_secs(5))
    }

    /// OS pid of replica `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// The cluster view of replica `i`, if it answers.
    pub async fn view(&self, i: usize) -> Option<ClusterView> {
        self.client_of(i).cluster().await.ok()
    }

    /// Index of the leader that the live replicas agree on.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        eventually("a leader", timeout, || async {
            let mut seen = BTreeSet::new();
            for i in 0..self.addrs.len() {
                if self.running(i) {
                    seen.insert(self.view(i).await?.leader?);
                }
            }
            if seen.len() != 1 {
                return None;
            }
            let id = *seen.iter().next()?;
            let i = self.ids.iter().position(|x| *x == id)?;
            self.running(i).then_some(i)
        })
        .await
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("s{}.log", self.ids[i])))
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// Serves package metadata and closures like depmgr does, for packages
/// `name@1.0.0` of any name.
pub async fn fake_depmgr() -> String {
    // The answers are depmgr's own types, so the fake cannot drift from
    // what the real client expects.
    async fn info(Path((name, version)): Path<(String, String)>) -> Json<depmgr::api::PackageInfo> {
        let manifest = proto::manifest::Manifest::from_toml(&format!(
            "name = {name:?}\nversion = {version:?}\ncommand = \"bin/run\"\n"
        ))
        .expect("fake manifest");
        Json(depmgr::api::PackageInfo {
            name,
            version,
            digest: "a".repeat(64),
            size: 1,
            manifest,
            dependencies: Default::default(),
            uploaded_at_ms: 0,
        })
    }
    async fn closure(Path((name, version)): Path<(String, String)>) -> Json<Vec<ArtifactRef>> {
        Json(vec![ArtifactRef {
            name,
            version,
            digest: "a".repeat(64),
        }])
    }
    let app = axum::Router::new()
        .route("/v1/packages/{name}/{version}", get(info))
        .route("/v1/packages/{name}/{version}/closure", get(closure));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[derive(Debug, Clone)]
struct Module {
    entry: TableEntry,
    status: ModuleStatus,
}

#[derive(Debug, Default)]
struct AgentState {
    incarnation: u64,
    seq: u64,
    table_version: u64,
    acked: u64,
    modules: Vec<Module>,
    /// Modules that fail whenever they start on this node.
    failing: BTreeSet<String>,
    highest_epoch: BTreeMap<String, u64>,
    current: usize,
    paused: bool,
    refused: u64,
}

/// A simulated node manager: heartbeats every 100 ms with the real
/// protocol and executes directives at once (installs always succeed).
pub struct FakeAgent {
    pub node: String,
    state: Arc<Mutex<AgentState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    pub fn start(node: &str, supervisors: Vec<String>) -> FakeAgent {
        let state = Arc::new(Mutex::new(AgentState {
            incarnation: 1,
            table_version: 1,
            ..Default::default()
        }));
        let st = state.clone();
        let name = node.to_string();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (hb, target) = {
                    let mut s = st.lock().unwrap();
                    if s.paused {
                        continue;
                    }
                    s.seq += 1;
                    let statuses: Vec<_> = s.modules.iter().map(|m| m.status).collect();
                    let hb = Heartbeat {
                        node: name.clone(),
                        incarnation: s.incarnation,
                        seq: s.seq,
                        table_version: s.table_version,
                        table: (s.acked != s.table_version).then(|| ModuleTable {
                            addr: format!("{name}.test:7100"),
                            labels: BTreeMap::new(),
                            modules: s.modules.iter().map(|m| m.entry.clone()).collect(),
                        }),
                        statuses: PackedStatuses::pack(&statuses),
                        reports: vec![],
                    };
                    (hb, supervisors[s.current % supervisors.len()].clone())
                };
                let body = proto::encode(&hb).unwrap();
                let resp = http
                    .post(format!("http://{target}/v1/agent/heartbeat"))
                    .timeout(Duration::from_secs(1))
                    .body(body)
                    .send()
                    .await;
                let reply: Option<HeartbeatReply> = match resp {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.ok().and_then(|b| proto::decode(&b).ok())
                    }
                    _ => None,
                };
                let mut s = st.lock().unwrap();
                let Some(reply) = reply else {
                    s.current += 1;
                    continue;
                };
                match &reply.outcome {
                    ReplyOutcome::NotLeader { leader } => {
                        match leader
                            .as_ref()
                            .and_then(|l| supervisors.iter().position(|x| x == l))
                        {
                            Some(i) => s.current = i,
                            None => s.current += 1,
                        }
                        continue;
                    }
                    ReplyOutcome::Stale => continue,
                    ReplyOutcome::Accepted { table_version } => {
                        s.acked = *table_version;
                        if reply.need_table {
                            s.acked = 0;
                        }
                    }
                }
                for d in reply.directives {
                    s.execute(d);
                }
            }
        });
        FakeAgent {
            node: node.to_string(),
            state,
            task,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Make `module` fail on every start here (and fail now if running).
    pub fn set_failing(&self, module: &str, failing: bool) {
        self.with(|s| {
            if failing {
                s.failing.insert(module.to_string());
                for m in &mut s.modules {
                    if m.entry.module == module {
                        m.status = ModuleStatus::Failed;
                    }
                }
            } else {
                s.failing.remove(module);
            }
        })
    }

    /// The module's process dies.
    pub fn crash(&self, module: &str) {
        self.with(|s| {
            for m in &mut s.modules {
                if m.entry.module == module {
                    m.status = ModuleStatus::Failed;
                }
            }
        })
    }

    pub fn is_running(&self, module: &str) -> bool {
        self.with(|s| {
            s.modules
                .iter()
                .any(|m| m.entry.module == module && m.status == ModuleStatus::Running)
        })
    }

    pub fn epoch_of(&self, module: &str) -> Option<u64> {
        self.with(|s| {
            s.modules
                .iter()
                .find(|m| m.entry.module == module)
                .map(|m| m.entry.epoch)
        })
    }

    /// Stops heartbeating (a partitioned or frozen agent) or resumes.
    pub fn pause(&self, paused: bool) {
        self.with(|s| s.paused = paused)
    }
}

impl AgentState {
    fn start_status(&self, module: &str) -> ModuleStatus {
        if self.failing.contains(module) {
            ModuleStatus::Failed
        } else {
            ModuleStatus::Running
        }
    }

    fn execute(&mut self, d: Directive) {
        let module = d.module().to_string();
        if self
            .highest_epoch
            .get(&module)
            .is_some_and(|e| d.epoch() < *e)
        {
            self.refused += 1;
            return;
        }
        self.highest_epoch.insert(module.clone(), d.epoch());
        match d {
            Directive::Install(i) => {
                if self
                    .modules
                    .iter()
                    .any(|m| m.entry.module == i.module && m.entry.epoch == i.epoch)
                {
                    return;
                }
                self.modules.retain(|m| m.entry.module != i.module);
                let status = self.start_status(&i.module);
                self.modules.push(Module {
                    entry: TableEntry {
                        module: i.module,
                        epoch: i.epoch,
                        restore_seq: 0,
                    },
                    status,
                });
            }
            Directive::Restore(r) => {
                let status = self.start_status(&r.module);
                for m in &mut self.modules {
                    if m.entry.module == r.module
                        && m.entry.epoch == r.epoch
                        && m.entry.restore_seq < r.seq
                    {
                        m.entry.restore_seq = r.seq;
                        m.status = status;
                    }
                }
            }
            Directive::Stop(s) => self.modules.retain(|m| m.entry.module != s.module),
        }
        self.table_version += 1;
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the module view satisfies `pred`.
pub async fn wait_module(
    c: &AdminClient,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ModuleView) -> bool,
) -> ModuleView {
    eventually(what, timeout, || async {
        let v = c.module(name).await.ok()?;
        pred(&v).then_some(v)
    })
    .await
}

pub fn spec(name: &str, node: Option<&str>, attempts: u32) -> serde_json::Value {
    let mut s = serde_json::json!({
        "name": name,
        "package": {"name": name, "version": "1.0.0"},
        "restart": {"attempts": attempts, "backoff_ms": 50, "min_healthy_ms": 300},
        "failover": {"max_nodes": 2}
    });
    if let Some(n) = node {
        s["placement"] = serde_json::json!({"node": n});
    }
    s
}
