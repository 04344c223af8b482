//! A real `agent` process (the node manager) under test, and its status API.
//!
//! [`AgentProc`] starts the release `agent` binary on a free port with the
//! [`AgentArgs`] a test chose (node name, data dir, supervisors, heartbeat
//! period, stop grace), its log in `<data dir>.agent.log`, and owns it in a
//! [`ProcessSet`]: stopped on drop, the log's tail printed when a test
//! fails while holding it. `RUST_LOG` for the agent comes from
//! `AGENT_TEST_LOG` (default `info`).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::bins::bin;
use crate::net::free_addr;
use crate::poll::poll_until;
use crate::process::{ProcessSet, Program};

/// `GET http://<addr>/v1/status` of an agent as JSON, if it answers within
/// 2 s.
pub async fn agent_status(addr: &str) -> Option<serde_json::Value> {
    agent_status_tls(addr, None).await
}

/// As [`agent_status`], over TLS with `tls`'s certificate when given.
pub async fn agent_status_tls(
    addr: &str,
    tls: Option<&std::sync::Arc<tls::Tls>>,
) -> Option<serde_json::Value> {
    let resp = tls::client::http_builder(tls, &[tls::Role::Agent])
        .build()
        .ok()?
        .get(format!("{}://{addr}/v1/status", tls::client::scheme(tls)))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// Options of a test agent.
pub struct AgentArgs<'a> {
    pub node: &'a str,
    pub data_dir: &'a Path,
    pub supervisors: Vec<String>,
    pub heartbeat_ms: u64,
    pub stop_grace_ms: u64,
    pub extra: Vec<String>,
    /// With TLS: the CA; the agent holds `agent/<node>`, and its status
    /// API is read with `operator/ops`.
    pub certs: Option<std::sync::Arc<crate::certs::Certs>>,
}

impl<'a> AgentArgs<'a> {
    /// Node `node-a`, heartbeats every 100 ms, stop grace 300 ms.
    pub fn new(data_dir: &'a Path, supervisor: &str) -> AgentArgs<'a> {
        AgentArgs {
            node: "node-a",
            data_dir,
            supervisors: vec![supervisor.to_string()],
            heartbeat_ms: 100,
            stop_grace_ms: 300,
            extra: Vec::new(),
            certs: None,
        }
    }
}

/// A running `agent` binary; stopped on drop.
pub struct AgentProc {
    procs: ProcessSet,
    key: String,
    pid: u32,
    pub listen: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The identity the status API is read with (TLS only).
    pub reader: Option<std::sync::Arc<tls::Tls>>,
}

impl AgentProc {
    pub fn spawn(a: AgentArgs) -> AgentProc {
        let listen = free_addr();
        let parent = a.data_dir.parent().expect("the data dir has a parent");
        let name = a
            .data_dir
            .file_name()
            .expect("the data dir has a name")
            .to_string_lossy();
        let key = format!("{name}.agent");
        let mut procs = ProcessSet::new(parent).tail_on_panic(60);
        let program = Program::new(bin("agent"))
            .args(["--node", a.node, "--listen", &listen])
            .arg("--data-dir")
            .arg(a.data_dir)
            .args(["--supervisors", &a.supervisors.join(",")])
            .args(["--heartbeat-ms", &a.heartbeat_ms.to_string()])
            .args(["--stop-grace-ms", &a.stop_grace_ms.to_string()])
            .args(["--request-timeout-ms", "500"])
            .args(&a.extra)
            .args(
                a.certs
                    .as_ref()
                    .map_or_else(Vec::new, |c| c.flags(tls::Role::Agent, a.node)),
            )
            .env(
                "RUST_LOG",
                std::env::var("AGENT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let pid = procs.spawn(&key, program).expect("spawn agent");
        AgentProc {
            log: procs.log_path(&key),
            procs,
            key,
            pid,
            listen,
            data_dir: a.data_dir.to_path_buf(),
            reader: a.certs.as_ref().map(|c| c.operator()),
        }
    }

    /// The agent's pid (also after it has exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `GET /v1/status` as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        agent_status_tls(&self.listen, self.reader.as_ref()).await
    }

    /// Waits for the status API to answer.
    pub async fn ready(&self) {
        if poll_until(Duration::from_secs(10), || self.status())
            .await
            .is_none()
        {
            panic!(
                "agent did not serve its status API; log:\n{}",
                self.log_text()
            );
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
        match poll_until(timeout, || self.module_pid(name)).await {
            Some(pid) => pid,
            None => panic!("no pid for {name}; log:\n{}", self.log_text()),
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        match self.procs.terminate(&self.key, timeout).await {
            Some(status) => status,
            None => panic!("agent did not exit; log:\n{}", self.log_text()),
        }
    }

    /// Waits for the agent to exit (after a signal the test sent).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.procs.wait_exit(&self.key, timeout).await {
            Some(status) => status,
            None => panic!("agent did not exit; log:\n{}", self.log_text()),
        }
    }

    pub fn log_text(&self) -> String {
        self.procs.log(&self.key)
    }
}
