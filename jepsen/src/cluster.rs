//! The cluster under test on namespaced hosts: three supervisors (`s1`..),
//! three agents (`a1`..), and depmgr beside the harness on the bridge.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::admin::AdminClient;
use crate::netns::{HARNESS_IP, Net};

pub const SUPERVISOR_PORT: u16 = 7100;
pub const AGENT_PORT: u16 = 7200;
pub const DEPMGR_PORT: u16 = 7400;

/// Fast failure detection for the run: suspect after 1 s, lease 3 s, down
/// after 3.3 s without heartbeats; elections after 0.5-1 s. The same as
/// `cluster_tests::SUPERVISOR_FLAGS` (one copy each until the test kit holds
/// them).
const SUPERVISOR_FLAGS: [&str; 8] = [
    "--heartbeat-ttl-ms",
    "1000",
    "--lease-ms",
    "3000",
    "--lease-drift-ms",
    "300",
    "--election-timeout-ms",
    "500",
];
/// Agent flags to match: heartbeats every 200 ms, stop grace 0.5 s (the same
/// as `cluster_tests::AGENT_FLAGS`).
const AGENT_FLAGS: [&str; 4] = ["--heartbeat-ms", "200", "--stop-grace-ms", "500"];

/// The directory holding the workspace's release binaries: this program's
/// own (`target/release/`, or its parent when run from `deps/`). The
/// cluster's binaries must be built there first (`cargo build --release
/// --workspace --bins`, as `.ci/test` does).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program")?;
    let parent = exe.parent().context("this program has no directory")?;
    let dir = if parent.ends_with("deps") {
        parent.parent().context("deps/ has no parent")?
    } else {
        parent
    };
    for bin in ["supervisor", "agent", "depmgr", "probe-module"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} is missing: run `cargo build --release --workspace --bins` first",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir.to_path_buf())
}

/// A program on a host: how to start it and its process.
struct Proc {
    host: Option<String>,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The processes of one run.
pub struct Cluster {
    pub net: Net,
    pub dir: PathBuf,
    pub supervisors: Vec<String>,
    pub agents: Vec<String>,
    procs: BTreeMap<String, Proc>,
}

impl Cluster {
    /// Starts depmgr, the supervisors and the agents; returns once every
    /// node is ready under an agreed leader.
    pub async fn start(bins: &Path, dir: &Path, net: Net) -> Result<Cluster> {
        let supervisors: Vec<String> = net
            .hosts
            .iter()
            .filter(|h| h.name.starts_with('s'))
            .map(|h| h.name.clone())
            .collect();
        let agents: Vec<String> = net
            .hosts
            .iter()
            .filter(|h| h.name.starts_with('a'))
            .map(|h| h.name.clone())
            .collect();
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            supervisors,
            agents,
            procs: BTreeMap::new(),
            net,
        };
        let depmgr_url = c.depmgr_url();
        c.add(
            "depmgr",
            None,
            bins.join("depmgr"),
            vec![
                "--listen".into(),
                format!("{HARNESS_IP}:{DEPMGR_PORT}"),
                "--data-dir".into(),
                c.data("depmgr"),
            ],
        )?;
        let peers = c
            .supervisors
            .iter()
            .map(|s| -> Result<String> {
                Ok(format!("{}={}:{SUPERVISOR_PORT}", &s[1..], c.net.ip(s)?))
            })
            .collect::<Result<Vec<_>>>()?
            .join(",");
        for s in c.supervisors.clone() {
            let mut args: Vec<String> = vec![
                "--id".into(),
                s[1..].to_string(),
                "--listen".into(),
                format!("{}:{SUPERVISOR_PORT}", c.net.ip(&s)?),
                "--data-dir".into(),
                c.data(&s),
                "--peers".into(),
                peers.clone(),
                "--depmgr".into(),
                depmgr_url.clone(),
            ];
            args.extend(SUPERVISOR_FLAGS.iter().map(|s| s.to_string()));
            c.add(&s, Some(s.clone()), bins.join("supervisor"), args)?;
        }
        let sup_addrs = c.supervisor_addrs().join(",");
        for a in c.agents.clone() {
            let mut args: Vec<String> = vec![
                "--node".into(),
                a.clone(),
                "--listen".into(),
                format!("{}:{AGENT_PORT}", c.net.ip(&a)?),
                "--data-dir".into(),
                c.data(&a),
                "--supervisors".into(),
                sup_addrs.clone(),
                "--depmgr".into(),
                depmgr_url.clone(),
            ];
            args.extend(AGENT_FLAGS.iter().map(|s| s.to_string()));
            c.add(&a, Some(a.clone()), bins.join("agent"), args)?;
        }
        let admin = c.admin(Duration::from_secs(2));
        let n = c.agents.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(nodes) = admin.nodes().await
                && nodes.iter().filter(|n| n.status == "ready").count() == n
            {
                return Ok(c);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the cluster did not come up within 60 s (logs in {})",
                    c.dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn depmgr_url(&self) -> String {
        format!("http://{HARNESS_IP}:{DEPMGR_PORT}")
    }

    fn data(&self, name: &str) -> String {
        self.dir.join("data").join(name).display().to_string()
    }

    pub fn supervisor_addrs(&self) -> Vec<String> {
        self.supervisors
            .iter()
            .map(|s| format!("{}:{SUPERVISOR_PORT}", self.net.ip(s).unwrap_or_default()))
            .collect()
    }

    /// A client of every supervisor (moves on when one is unreachable).
    pub fn admin(&self, timeout: Duration) -> AdminClient {
        AdminClient::new(self.supervisor_addrs(), None).with_timeout(timeout)
    }

    /// A client of one supervisor only.
    pub fn admin_of(&self, supervisor: &str, timeout: Duration) -> AdminClient {
        let addr = format!(
            "{}:{SUPERVISOR_PORT}",
            self.net.ip(supervisor).unwrap_or_default()
        );
        AdminClient::new(vec![addr], None).with_timeout(timeout)
    }

    fn add(
        &mut self,
        key: &str,
        host: Option<String>,
        program: PathBuf,
        args: Vec<String>,
    ) -> Result<()> {
        let mut p = Proc {
            host,
            program,
            args,
            log: self.dir.join("logs").join(format!("{key}.log")),
            child: None,
            paused: false,
        };
        self.spawn(&mut p)?;
        self.procs.insert(key.to_string(), p);
        Ok(())
    }

    fn spawn(&self, p: &mut Proc) -> Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(&p.log)?;
        let mut cmd = match &p.host {
            Some(h) => self.net.command(h, &p.program),
            None => Command::new(&p.program),
        };
        let child = cmd
            .args(&p.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", p.program.display()))?;
        p.child = Some(child);
        p.paused = false;
        Ok(())
    }

    fn proc(&mut self, key: &str) -> Result<&mut Proc> {
        self.procs
            .get_mut(key)
            .with_context(|| format!("no process {key}"))
    }

    /// SIGKILL; evidence that it was running and died of it.
    pub fn kill(&mut self, key: &str) -> Result<(bool, String)> {
        let p = self.proc(key)?;
        let Some(mut c) = p.child.take() else {
            return Ok((false, format!("{key} was not running")));
        };
        if let Ok(Some(status)) = c.try_wait() {
            return Ok((false, format!("{key} had already exited: {status}")));
        }
        c.kill()?;
        let status = c.wait()?;
        use std::os::unix::process::ExitStatusExt;
        let killed = status.signal() == Some(9);
        Ok((killed, format!("{key} pid {}: {status}", c.id())))
    }

    /// Starts a killed process again on its data dir.
    pub fn restart(&mut self, key: &str) -> Result<()> {
        let mut p = self
            .procs
            .remove(key)
            .with_context(|| format!("no process {key}"))?;
        let r = if p.child.is_none() {
            self.spawn(&mut p)
        } else {
            Ok(())
        };
        self.procs.insert(key.to_string(), p);
        r
    }

    /// SIGSTOP; evidence that the process is stopped.
    pub async fn pause(&mut self, key: &str) -> Result<(bool, String)> {
        let p = self.proc(key)?;
        let Some(c) = &p.child else {
            return Ok((false, format!("{key} was not running")));
        };
        let pid = c.id();
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
        p.paused = true;
        // The state letter turns to T once the signal is delivered.
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(state) = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next())
                && state == 'T'
            {
                return Ok((true, format!("{key} pid {pid} in state T")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((false, format!("{key} pid {pid} never showed state T")))
    }

    pub fn resume(&mut self, key: &str) -> Result<()> {
        let p = self.proc(key)?;
        if let Some(c) = &p.child
            && p.paused
        {
            kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT)?;
        }
        p.paused = false;
        Ok(())
    }

    /// Resumes and restarts everything; true when something needed it.
    pub fn heal_processes(&mut self) -> Result<Vec<String>> {
        let keys: Vec<String> = self.procs.keys().cloned().collect();
        let mut touched = vec![];
        for k in keys {
            let p = self.proc(&k)?;
            if p.paused {
                self.resume(&k)?;
                touched.push(format!("resumed {k}"));
            } else if p.child.is_none() {
                self.restart(&k)?;
                touched.push(format!("restarted {k}"));
            }
        }
        Ok(touched)
    }

    /// SIGKILLs everything (agents first, so their modules die with them).
    pub fn kill_all(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(c) = &p.child
                && p.paused
            {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            }
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        self.net.teardown();
    }
}
