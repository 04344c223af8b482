//! Process-level test support: a [`TestCluster`] of the real binaries
//! (supervisors, depmgr, node managers) on loopback.
//!
//! Built on `testkit`: the supervisors are a [`Supervisors`], depmgr and the
//! agents live in a [`ProcessSet`], and both stop their processes on drop
//! (SIGTERM, then SIGKILL after a grace; the modules stop with their agents).
//! Ports are chosen free, readiness is polled with deadlines, and each
//! process keeps its flags so it can be killed and started again on the same
//! data dir. Binaries are found next to the test executable's directory
//! (`target/release/`): build them first (`cargo build --release --workspace
//! --bins`, as `.ci/test` does).
//!
//! A cluster runs over mutual TLS unless [`Options::tls`] is off, as a
//! deployment does: a CA made by `supctl ca` ([`testkit::Certs`]), a
//! certificate per program, and the test's clients as the operator `ops`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use admin_api::AdminClient;
use admin_api::{ClusterView, EventView, ModuleView, NodeView};
use testkit::flags::{AGENT_FLAGS, SUPERVISOR_FLAGS};
use testkit::spec::ModuleSpec;
use testkit::supervisors::Supervisors;
use testkit::{Certs, ProcessSet, Program, eventually, free_addr};
use tls::Role;

/// How long a process gets to stop cleanly in [`TestCluster::stop_all`].
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Shape of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub supervisors: usize,
    pub agents: Vec<String>,
    /// Extra supervisor flags (after the fast defaults).
    pub supervisor_flags: Vec<String>,
    /// Extra agent flags (after the fast defaults), for every agent.
    pub agent_flags: Vec<String>,
    /// Mutual TLS between every program (on by default).
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            supervisors: 3,
            agents: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            supervisor_flags: vec![],
            agent_flags: vec![],
            tls: true,
        }
    }
}

/// Real supervisors, depmgr and agents on loopback.
pub struct TestCluster {
    /// depmgr (`depmgr`) and the agents (`agent-<node>`); declared first, so
    /// the agents stop (and stop their modules) before the supervisors.
    procs: ProcessSet,
    pub supervisors: Supervisors,
    pub bins: PathBuf,
    pub depmgr_url: String,
    pub agent_addrs: BTreeMap<String, String>,
    /// The CA and certificates, with TLS.
    pub certs: Option<Arc<Certs>>,
    /// Declared last: removed once every process has stopped.
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts everything and waits until a leader is elected and every
    /// agent's node is ready.
    pub async fn start(opts: Options) -> TestCluster {
        let bins = testkit::bins::find_dir(&["supervisor", "agent", "depmgr"])
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = opts
            .tls
            .then(|| Arc::new(Certs::init(&dir.path().join("ca"))));
        let tls_flags = |role: Role, name: &str| {
            certs
                .as_ref()
                .map_or_else(Vec::new, |c| c.flags(role, name))
        };
        let depmgr_addr = free_addr();
        let depmgr_url = format!(
            "{}://{depmgr_addr}",
            if certs.is_some() { "https" } else { "http" }
        );
        let mut procs = ProcessSet::new(dir.path().join("logs"));
        let data = |name: &str| dir.path().join(name);
        procs
            .spawn(
                "depmgr",
                Program::new(bins.join("depmgr"))
                    .args(["--listen", &depmgr_addr])
                    .arg("--data-dir")
                    .arg(data("depmgr"))
                    .args(tls_flags(Role::Depmgr, "depmgr"))
                    .env("RUST_LOG", "info,openraft=warn"),
            )
            .expect("spawn depmgr");
        let supervisors = Supervisors::spawn_in_tls(
            dir.path(),
            opts.supervisors,
            &depmgr_url,
            &SUPERVISOR_FLAGS,
            &opts.supervisor_flags,
            certs.clone(),
        );
        let agent_addrs: BTreeMap<String, String> = opts
            .agents
            .iter()
            .map(|a| (a.clone(), free_addr()))
            .collect();
        for (node, addr) in &agent_addrs {
            let program = Program::new(bins.join("agent"))
                .args(["--node", node, "--listen", addr])
                .arg("--data-dir")
                .arg(data(&format!("agent-{node}")))
                .args(["--supervisors", &supervisors.addrs.join(",")])
                .args(AGENT_FLAGS)
                .args(&opts.agent_flags)
                .args(tls_flags(Role::Agent, node))
                .env("RUST_LOG", "info,openraft=warn");
            procs
                .spawn(&format!("agent-{node}"), program)
                .expect("spawn agent");
        }
        let c = TestCluster {
            procs,
            supervisors,
            bins,
            depmgr_url,
            agent_addrs,
            certs,
            dir,
        };
        c.wait_leader(Duration::from_secs(30)).await;
        let admin = c.admin();
        let n = c.agent_addrs.len();
        eventually("every node ready", Duration::from_secs(30), || async {
            let nodes = admin.nodes().await.ok()?;
            (nodes.iter().filter(|n| n.status == "ready").count() == n).then_some(())
        })
        .await;
        c
    }

    /// The operator identity of the test's clients, with TLS.
    pub fn operator(&self) -> Option<Arc<tls::Tls>> {
        self.certs.as_ref().map(|c| c.operator())
    }

    /// `supctl --addr <every supervisor>`, with the operator's TLS flags
    /// in its environment (`SUPCTL_TLS_*`) when the cluster runs TLS.
    pub fn supctl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bins.join("supctl"));
        cmd.arg("--addr").arg(self.supervisors.addrs.join(","));
        if let Some(c) = &self.certs {
            let f = c.issue(Role::Operator, "ops");
            cmd.env("SUPCTL_TLS_CA", f.ca)
                .env("SUPCTL_TLS_CERT", f.cert)
                .env("SUPCTL_TLS_KEY", f.key);
        }
        cmd
    }

    /// An admin client that knows every supervisor.
    pub fn admin(&self) -> AdminClient {
        self.supervisors.client()
    }

    pub fn admin_of(&self, i: usize) -> AdminClient {
        self.supervisors.client_of(i)
    }

    pub fn supervisor_running(&self, i: usize) -> bool {
        self.supervisors.running(i)
    }

    /// SIGKILL.
    pub fn kill_supervisor(&mut self, i: usize) {
        self.supervisors.kill(i);
    }

    pub fn start_supervisor(&mut self, i: usize) {
        self.supervisors.restart(i);
    }

    /// SIGKILL (its modules die with it).
    pub fn kill_agent(&mut self, node: &str) {
        self.procs.kill9(&format!("agent-{node}"));
    }

    pub fn start_agent(&mut self, node: &str) {
        self.procs
            .restart(&format!("agent-{node}"))
            .expect("start agent");
    }

    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.procs.pid(&format!("agent-{node}"))
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to the agent of `node`: a
    /// stalled agent, its modules' shims untouched.
    pub fn pause_agent(&self, node: &str, paused: bool) {
        let pid = self.agent_pid(node).expect("agent running");
        let sig = if paused {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal agent");
    }

    /// SIGTERM every process (agents first, then depmgr, then the
    /// supervisors) and return how each exited (`None`: not within 15 s).
    pub async fn stop_all(&mut self) -> BTreeMap<String, Option<ExitStatus>> {
        let mut exits = BTreeMap::new();
        let keys = self.procs.keys();
        let (agents, others): (Vec<String>, Vec<String>) =
            keys.into_iter().partition(|k| k.starts_with("agent-"));
        for key in agents.into_iter().chain(others) {
            let status = self.procs.terminate(&key, STOP_GRACE).await;
            exits.insert(key, status);
        }
        for i in 0..self.supervisors.ids.len() {
            let status = self.supervisors.terminate(i, STOP_GRACE).await;
            exits.insert(self.supervisors.key(i), status);
        }
        exits
    }

    /// Starts every stopped process again on its data dir.
    pub fn start_all(&mut self) {
        for key in self.procs.keys() {
            if !self.procs.started(&key) {
                self.procs.start(&key).expect("start");
            }
        }
        for i in 0..self.supervisors.ids.len() {
            if !self.supervisors.running(i) {
                self.supervisors.restart(i);
            }
        }
    }

    /// Adds a supervisor process with a new id (not yet a member); its index.
    pub fn spawn_extra_supervisor(&mut self, id: u64) -> usize {
        self.supervisors.add(id)
    }

    pub async fn cluster_view(&self, i: usize) -> Option<ClusterView> {
        self.supervisors.view(i).await
    }

    /// Index of the leader the live supervisors agree on.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        self.supervisors.wait_leader(timeout).await
    }

    /// Builds and pushes the test module package (see [`test_package`]).
    pub async fn push_test_package(&self, name: &str) {
        let dir = self.dir.path().join(format!("pkg-{name}"));
        test_package(&dir, name, &self.markers());
        self.push_package(&dir).await;
    }

    /// Pushes the package directory `dir` (a `manifest.toml` and files) to
    /// depmgr.
    pub async fn push_package(&self, dir: &Path) {
        let client = depmgr::client::Client::with_tls(
            &self.depmgr_url,
            depmgr::client::Timeouts::default(),
            self.operator().as_ref(),
        )
        .expect("depmgr client");
        eventually("package pushed", Duration::from_secs(20), || async {
            client.push_dir(dir).await.ok()
        })
        .await;
    }

    /// The data dir of the agent of `node`.
    pub fn agent_data_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
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
        testkit::agent_proc::agent_status_tls(&self.agent_addrs[node], self.operator().as_ref())
            .await
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
        testkit::supervisors::wait_module(&self.admin(), name, what, timeout, pred).await
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

    /// The tail of a process's log (`depmgr`, `agent-<node>`, `s<id>`),
    /// for failure messages. The supervisors log to the same directory.
    pub fn log_tail(&self, key: &str, lines: usize) -> String {
        self.procs.log_tail(key, lines)
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
    ModuleSpec::new(name)
        .restart(attempts, 100, 500)
        .max_nodes(max_nodes)
        .node(node)
        .json()
}
