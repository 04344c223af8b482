//! The cluster under test on namespaced hosts: three supervisors (`s1`..),
//! three agents (`a1`..), and depmgr beside the harness on the bridge.
//! Everything runs over mutual TLS: a CA made by `supctl ca` in the run's
//! directory, one certificate per program, the harness as operator `ops`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use testkit::flags::{AGENT_FLAGS, SUPERVISOR_FLAGS};
use testkit::process::{ProcessSet, Program, proc_state};
use testkit::{Certs, poll_until};
use tls::Role;

use crate::admin::AdminClient;
use crate::netns::{HARNESS_IP, Net};

pub const SUPERVISOR_PORT: u16 = 7100;
pub const AGENT_PORT: u16 = 7200;
pub const DEPMGR_PORT: u16 = 7400;

/// The directory holding the release binaries the run starts (see
/// `testkit::bins`), or which one is missing.
pub fn bin_dir() -> Result<PathBuf> {
    testkit::bins::find_dir(&["supervisor", "agent", "depmgr", "probe-module"])
        .map_err(anyhow::Error::msg)
}

/// The processes of one run.
pub struct Cluster {
    pub net: Net,
    pub dir: PathBuf,
    pub supervisors: Vec<String>,
    pub agents: Vec<String>,
    /// The run's CA and certificates.
    pub certs: Arc<Certs>,
    /// Keyed by host (`s1`, `a1`) or `depmgr`; logs in `<dir>/logs/`.
    procs: ProcessSet,
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
        let certs = Arc::new(Certs::init(&dir.join("ca")));
        let mut c = Cluster {
            certs,
            dir: dir.to_path_buf(),
            supervisors,
            agents,
            procs: ProcessSet::new(dir.join("logs")),
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
            ]
            .into_iter()
            .chain(c.certs.flags(Role::Depmgr, "depmgr"))
            .collect(),
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
            args.extend(c.certs.flags(Role::Supervisor, &s[1..]));
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
            args.extend(c.certs.flags(Role::Agent, &a));
            c.add(&a, Some(a.clone()), bins.join("agent"), args)?;
        }
        let admin = c.admin(Duration::from_secs(2));
        let n = c.agents.len();
        let ready = poll_until(Duration::from_secs(60), || async {
            let nodes = admin.nodes().await.ok()?;
            (nodes.iter().filter(|n| n.status == "ready").count() == n).then_some(())
        })
        .await;
        if ready.is_none() {
            bail!(
                "the cluster did not come up within 60 s (logs in {})",
                c.dir.join("logs").display()
            );
        }
        Ok(c)
    }

    pub fn depmgr_url(&self) -> String {
        format!("https://{HARNESS_IP}:{DEPMGR_PORT}")
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
        AdminClient::with_tls(self.supervisor_addrs(), None, Some(&self.certs.operator()))
            .with_timeout(timeout)
    }

    /// A client of one supervisor only.
    pub fn admin_of(&self, supervisor: &str, timeout: Duration) -> AdminClient {
        let addr = format!(
            "{}:{SUPERVISOR_PORT}",
            self.net.ip(supervisor).unwrap_or_default()
        );
        AdminClient::with_tls(vec![addr], None, Some(&self.certs.operator())).with_timeout(timeout)
    }

    /// Starts `program` under `key`, on `host` when given (through `ip
    /// netns exec`, which execs it: the pid is the program's).
    fn add(
        &mut self,
        key: &str,
        host: Option<String>,
        program: PathBuf,
        args: Vec<String>,
    ) -> Result<()> {
        let mut p = Program::new(program)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn");
        if let Some(h) = host {
            p = p.wrapped(self.net.exec_prefix(&h));
        }
        self.procs.spawn(key, p)?;
        Ok(())
    }

    fn known(&self, key: &str) -> Result<()> {
        if self.procs.keys().iter().any(|k| k == key) {
            Ok(())
        } else {
            bail!("no process {key}")
        }
    }

    /// SIGKILL; evidence that it was running and died of it.
    pub fn kill(&mut self, key: &str) -> Result<(bool, String)> {
        self.known(key)?;
        let Some(ended) = self.procs.kill9(key) else {
            return Ok((false, format!("{key} was not running")));
        };
        if !ended.signalled {
            return Ok((false, format!("{key} had already exited: {}", ended.status)));
        }
        use std::os::unix::process::ExitStatusExt;
        let killed = ended.status.signal() == Some(9);
        Ok((killed, format!("{key} pid {}: {}", ended.pid, ended.status)))
    }

    /// Starts a killed process again on its data dir.
    pub fn restart(&mut self, key: &str) -> Result<()> {
        self.known(key)?;
        if !self.procs.started(key) {
            self.procs.start(key)?;
        }
        Ok(())
    }

    /// SIGSTOP; evidence that the process is stopped.
    pub async fn pause(&mut self, key: &str) -> Result<(bool, String)> {
        self.known(key)?;
        let Some(pid) = self.procs.pause(key) else {
            return Ok((false, format!("{key} was not running")));
        };
        // The state letter turns to T once the signal is delivered.
        let stopped = poll_until(Duration::from_millis(500), || async {
            (proc_state(pid) == Some('T')).then_some(())
        })
        .await;
        Ok(match stopped {
            Some(()) => (true, format!("{key} pid {pid} in state T")),
            None => (false, format!("{key} pid {pid} never showed state T")),
        })
    }

    pub fn resume(&mut self, key: &str) -> Result<()> {
        self.known(key)?;
        self.procs.resume(key);
        Ok(())
    }

    /// Resumes and restarts everything; true when something needed it.
    pub fn heal_processes(&mut self) -> Result<Vec<String>> {
        let mut touched = vec![];
        for k in self.procs.keys() {
            if self.procs.paused(&k) {
                self.resume(&k)?;
                touched.push(format!("resumed {k}"));
            } else if !self.procs.started(&k) {
                self.restart(&k)?;
                touched.push(format!("restarted {k}"));
            }
        }
        Ok(touched)
    }

    /// SIGKILLs everything (agents first: their keys sort first, and their
    /// modules die with them).
    pub fn kill_all(&mut self) {
        self.procs.kill_all();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        self.net.teardown();
    }
}
