//! Process-level test support: a [`TestCluster`] of the real binaries
//! (supervisors, depmgr, node managers) on loopback.
//!
//! The cluster owns its child processes and SIGKILLs every one on drop
//! (modules die with their agents). Ports are chosen free, readiness is
//! polled with deadlines, and each process keeps its flags so it can be
//! killed and started again on the same data dir. Binaries are found next to
//! the test executable's directory (`target/release/`): build them first
//! (`cargo build --release --workspace --bins`, as `.ci/test` does).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use admin_api::AdminClient;
use admin_api::{ClusterView, EventView, ModuleView, NodeView};

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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The directory holding the workspace's release binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("target dir")
        .to_path_buf();
    for bin in ["supervisor", "agent", "depmgr"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --release --workspace --bins` first",
            dir.join(bin).display()
        );
    }
    dir
}

/// One program of the cluster: how to start it, and its process.
struct Proc {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` for a clean exit; the exit status.
    fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Shape of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub supervisors: usize,
    pub agents: Vec<String>,
    /// Extra supervisor flags (after the fast defaults).
    pub supervisor_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            supervisors: 3,
            agents: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            supervisor_flags: vec![],
        }
    }
}

/// Fast failure detection for tests: suspect after 1 s, lease 3 s, down
/// after 3.3 s without heartbeats; elections after 0.5-1 s.
pub const SUPERVISOR_FLAGS: [&str; 8] = [
    "--heartbeat-ttl-ms",
    "1000",
    "--lease-ms",
    "3000",
    "--lease-drift-ms",
    "300",
    "--election-timeout-ms",
    "500",
];
/// Agent flags to match: heartbeats every 200 ms, stop grace 0.5 s.
pub const AGENT_FLAGS: [&str; 4] = ["--heartbeat-ms", "200", "--stop-grace-ms", "500"];

/// Real supervisors, depmgr and agents on loopback.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub bins: PathBuf,
    pub depmgr_url: String,
    pub supervisor_ids: Vec<u64>,
    pub supervisor_addrs: Vec<String>,
    pub agent_addrs: BTreeMap<String, String>,
    supervisor_flags: Vec<String>,
    procs: BTreeMap<String, Proc>,
}

impl TestCluster {
    /// Starts everything and waits until a leader is elected and every
    /// agent's node is ready.
    pub async fn start(opts: Options) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let mut c = TestCluster {
            bins: bin_dir(),
            depmgr_url: format!("http://127.0.0.1:{}", free_port()),
            supervisor_ids: (1..=opts.supervisors as u64).collect(),
            supervisor_addrs: (0..opts.supervisors)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            agent_addrs: opts
                .agents
                .iter()
                .map(|a| (a.clone(), format!("127.0.0.1:{}", free_port())))
                .collect(),
            supervisor_flags: opts.supervisor_flags.clone(),
            procs: BTreeMap::new(),
            dir,
        };
        let depmgr_listen = c.depmgr_url.trim_start_matches("http://").to_string();
        let depmgr_dir = c.data("depmgr");
        c.add_proc(
            "depmgr",
            "depmgr",
            vec![
                "--listen".into(),
                depmgr_listen,
                "--data-dir".into(),
                depmgr_dir,
            ],
        );
        for i in 0..opts.supervisors {
            c.add_supervisor_proc(i);
        }
        let agents: Vec<String> = c.agent_addrs.keys().cloned().collect();
        for a in &agents {
            c.add_agent_proc(a);
        }
        c.wait_leader(Duration::from_secs(30)).await;
        let admin = c.admin();
        let n = agents.len();
        eventually("every node ready", Duration::from_secs(30), || async {
            let nodes = admin.nodes().await.ok()?;
            (nodes.iter().filter(|n| n.status == "ready").count() == n).then_some(())
        })
        .await;
        c
    }

    fn data(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn peers(&self) -> String {
        self.supervisor_ids
            .iter()
            .zip(&self.supervisor_addrs)
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn add_proc(&mut self, key: &str, bin: &str, args: Vec<String>) {
        let mut p = Proc {
            program: self.bins.join(bin),
            args,
            log: self.dir.path().join("logs").join(format!("{key}.log")),
            child: None,
        };
        p.spawn();
        self.procs.insert(key.to_string(), p);
    }

    fn add_supervisor_proc(&mut self, i: usize) {
        let id = self.supervisor_ids[i];
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.supervisor_addrs[i].clone(),
            "--data-dir".into(),
            self.data(&format!("s{id}")),
            "--peers".into(),
            self.peers(),
            "--depmgr".into(),
            self.depmgr_url.clone(),
        ];
        for pair in SUPERVISOR_FLAGS.chunks(2) {
            if !self.supervisor_flags.iter().any(|f| f == pair[0]) {
                args.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        args.extend(self.supervisor_flags.iter().cloned());
        self.add_proc(&format!("s{id}"), "supervisor", args);
    }

    fn add_agent_proc(&mut self, node: &str) {
        let mut args: Vec<String> = vec![
            "--node".into(),
            node.to_string(),
            "--listen".into(),
            self.agent_addrs[node].clone(),
            "--data-dir".into(),
            self.data(&format!("agent-{node}")),
            "--supervisors".into(),
            self.supervisor_addrs.join(","),
        ];
        args.extend(AGENT_FLAGS.iter().map(|s| s.to_string()));
        self.add_proc(&format!("agent-{node}"), "agent", args);
    }

    /// An admin client that knows every supervisor.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.supervisor_addrs.clone(), None).with_timeout(Duration::from_secs(5))
    }

    pub fn admin_of(&self, i: usize) -> AdminClient {
        AdminClient::new(vec![self.supervisor_addrs[i].clone()], None)
            .with_timeout(Duration::from_secs(5))
    }

    fn key_of_supervisor(&self, i: usize) -> String {
        format!("s{}", self.supervisor_ids[i])
    }

    pub fn supervisor_running(&self, i: usize) -> bool {
        self.procs
            .get(&self.key_of_supervisor(i))
            .is_some_and(|p| p.child.is_some())
    }

    /// SIGKILL.
    pub fn kill_supervisor(&mut self, i: usize) {
        let key = self.key_of_supervisor(i);
        self.procs.get_mut(&key).expect("supervisor").kill();
    }

    pub fn start_supervisor(&mut self, i: usize) {
        let key = self.key_of_supervisor(i);
        let p = self.procs.get_mut(&key).expect("supervisor");
        p.kill();
        p.spawn();
    }

    pub fn kill_agent(&mut self, node: &str) {
        self.procs
            .get_mut(&format!("agent-{node}"))
            .expect("agent")
            .kill();
    }

    pub fn start_agent(&mut self, node: &str) {
        let p = self.procs.get_mut(&format!("agent-{node}")).expect("agent");
        p.kill();
        p.spawn();
    }

    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.procs.get(&format!("agent-{node}")).and_then(Proc::pid)
    }

    /// SIGTERM every process (agents first) and return how each exited.
    pub fn stop_all(&mut self) -> BTreeMap<String, Option<std::process::ExitStatus>> {
        let mut order: Vec<String> = self
            .procs
            .keys()
            .filter(|k| k.starts_with("agent-"))
            .cloned()
            .collect();
        order.extend(
            self.procs
                .keys()
                .filter(|k| !k.starts_with("agent-"))
                .cloned(),
        );
        order
            .into_iter()
            .map(|k| {
                let status = self
                    .procs
                    .get_mut(&k)
                    .expect("proc")
                    .stop(Duration::from_secs(15));
                (k, status)
            })
            .collect()
    }

    /// Starts every process again on its data dir.
    pub fn start_all(&mut self) {
        for p in self.procs.values_mut() {
            if p.child.is_none() {
                p.spawn();
            }
        }
    }

    /// Adds a supervisor process with a new id (not yet a member); its index.
    pub fn spawn_extra_supervisor(&mut self, id: u64) -> usize {
        self.supervisor_ids.push(id);
        self.supervisor_addrs
            .push(format!("127.0.0.1:{}", free_port()));
        let i = self.supervisor_ids.len() - 1;
        self.add_supervisor_proc(i);
        i
    }

    pub async fn cluster_view(&self, i: usize) -> Option<ClusterView> {
        self.admin_of(i).cluster().await.ok()
    }

    /// Index of the leader the live supervisors agree on.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        eventually(
            "one leader agreed by every live supervisor",
            timeout,
            || async {
                let mut leaders = std::collections::BTreeSet::new();
                for i in 0..self.supervisor_addrs.len() {
                    if self.supervisor_running(i) {
                        leaders.insert(self.cluster_view(i).await?.leader?);
                    }
                }
                let id = (leaders.len() == 1).then(|| *leaders.iter().next().expect("one"))?;
                let i = self.supervisor_ids.iter().position(|x| *x == id)?;
                self.supervisor_running(i).then_some(i)
            },
        )
        .await
    }

    /// Builds and pushes the test module package (see [`test_package`]).
    pub async fn push_test_package(&self, name: &str) {
        let dir = self.dir.path().join(format!("pkg-{name}"));
        test_package(&dir, name, &self.markers());
        let client = depmgr::client::Client::new(&self.depmgr_url).expect("depmgr client");
        eventually("package pushed", Duration::from_secs(20), || async {
            client.push_dir(&dir).await.ok()
        })
        .await;
    }

    /// Directory of marker files the test module obeys.
    pub fn markers(&self) -> PathBuf {
        let d = self.dir.path().join("markers");
        std::fs::create_dir_all(&d).expect("markers dir");
        d
    }

    /// Make the test module fail at start on `node` (or stop failing).
    pub fn set_failing(&self, node: &str, failing: bool) {
        let marker = self.markers().join(format!("fail-{node}"));
        if failing {
            std::fs::write(marker, "").expect("marker");
        } else {
            let _ = std::fs::remove_file(marker);
        }
    }

    /// `(node, epoch, pid)` of every start of the test module, in order.
    pub fn starts(&self, module: &str) -> Vec<(String, u64, u32)> {
        let text = std::fs::read_to_string(self.markers().join(format!("starts-{module}.log")))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// An agent's `/v1/status`.
    pub async fn agent_status(&self, node: &str) -> Option<serde_json::Value> {
        let url = format!("http://{}/v1/status", self.agent_addrs[node]);
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// Nodes whose agent reports `module` running, with the pid.
    pub async fn running_copies(&self, module: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for node in self.agent_addrs.keys() {
            if let Some(status) = self.agent_status(node).await {
                for m in status["modules"].as_array().into_iter().flatten() {
                    if m["name"] == module && m["state"] == "running" {
                        out.push((node.clone(), m["pid"].as_u64().unwrap_or(0)));
                    }
                }
            }
        }
        out
    }

    pub async fn wait_module(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ModuleView) -> bool,
    ) -> ModuleView {
        let admin = self.admin();
        eventually(what, timeout, || async {
            let v = admin.module(name).await.ok()?;
            pred(&v).then_some(v)
        })
        .await
    }

    pub async fn events_of(&self, module: &str) -> Vec<EventView> {
        let all = eventually("events", Duration::from_secs(10), || async {
            self.admin().events(0).await.ok()
        })
        .await;
        all.into_iter()
            .filter(|e| e.module.as_deref() == Some(module))
            .collect()
    }

    pub async fn nodes(&self) -> Vec<NodeView> {
        eventually("nodes", Duration::from_secs(10), || async {
            self.admin().nodes().await.ok()
        })
        .await
    }

    /// The tail of a process's log, for failure messages.
    pub fn log_tail(&self, key: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("logs").join(format!("{key}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            p.kill();
        }
    }
}

/// Writes the test module package into `dir`: a shell module that exits at
/// once (status 3) while `<markers>/fail-<node>` exists, and otherwise
/// records `node epoch pid` in `<markers>/starts-<module>.log` and sleeps.
pub fn test_package(dir: &Path, name: &str, markers: &Path) {
    std::fs::create_dir_all(dir.join("bin")).expect("package dir");
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ncommand = \"bin/run\"\n\n[env]\nMARKERS = \"{}\"\n",
        markers.display()
    );
    std::fs::write(dir.join("manifest.toml"), manifest).expect("manifest");
    let script = r#"#!/bin/sh
if [ -e "$MARKERS/fail-$MODULE_NODE" ]; then
  echo "failing on $MODULE_NODE (marker present)" >&2
  exit 3
fi
echo "$MODULE_NODE $MODULE_EPOCH $$" >> "$MARKERS/starts-$MODULE_NAME.log"
exec sleep 100000
"#;
    let run = dir.join("bin/run");
    std::fs::write(&run, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A module spec for the test module.
pub fn spec(name: &str, node: Option<&str>, attempts: u32, max_nodes: u32) -> serde_json::Value {
    let mut s = serde_json::json!({
        "name": name,
        "package": {"name": name, "version": "1.0.0"},
        "restart": {"attempts": attempts, "backoff_ms": 100, "min_healthy_ms": 500},
        "failover": {"max_nodes": max_nodes},
    });
    if let Some(n) = node {
        s["placement"] = serde_json::json!({"node": n});
    }
    s
}
