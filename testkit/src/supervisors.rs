//! Real supervisor replicas on loopback, owned by the test.
//!
//! [`Supervisors`] picks free addresses and starts replicas of the release
//! `supervisor` binary: ids `1..=n`, data dirs `<dir>/s<id>`, logs
//! `<dir>/logs/s<id>.log`, every replica told about every other one
//! (`--peers`) and about depmgr, with timing flags (a default set from
//! [`crate::flags`], overridden flag by flag by the test's own). The
//! processes live in a [`ProcessSet`], so a test can SIGKILL a replica,
//! start it again on its data dir, stop it cleanly, or add a replica with a
//! new id; and it can find the leader the live replicas agree on.
//!
//! The supervisor's own tests and bench use it with simulated node managers
//! ([`Supervisors::start`]: a temp dir, the fast flags, waits for a leader);
//! `cluster-tests`' `TestCluster` puts it beside depmgr and real agents
//! ([`Supervisors::spawn_in`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use admin_api::{AdminClient, ClusterView, ModuleView};

use crate::bins::bin;
use crate::certs::Certs;
use crate::flags::{SUPERVISOR_FLAGS_FAKE_AGENTS, with_defaults};
use crate::net::free_addr;
use crate::poll::eventually;
use crate::process::{ProcessSet, Program};

/// Supervisor replicas; stopped on drop.
pub struct Supervisors {
    /// Declared first: the processes stop before the temp dir goes.
    procs: ProcessSet,
    pub ids: Vec<u64>,
    pub addrs: Vec<String>,
    /// depmgr's base URL, as the replicas were told.
    pub depmgr: String,
    dir: PathBuf,
    /// Every replica's timing and other flags, after the fixed ones.
    flags: Vec<String>,
    /// With TLS: the CA; replica `id` holds `supervisor/<id>`, the admin
    /// clients `operator/ops`.
    pub certs: Option<Arc<Certs>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Supervisors {
    /// `n` replicas in a temp dir with [`SUPERVISOR_FLAGS_FAKE_AGENTS`];
    /// returns once they agree on a leader.
    pub async fn start(n: usize, depmgr: &str) -> Supervisors {
        Self::start_with(n, depmgr, &[]).await
    }

    /// As [`Supervisors::start`], with `extra` flags (which override the
    /// fast defaults they name).
    pub async fn start_with(n: usize, depmgr: &str, extra: &[&str]) -> Supervisors {
        Self::start_tls(n, depmgr, extra, None).await
    }

    /// As [`Supervisors::start_with`], with TLS when `certs` is given.
    pub async fn start_tls(
        n: usize,
        depmgr: &str,
        extra: &[&str],
        certs: Option<Arc<Certs>>,
    ) -> Supervisors {
        let tmp = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut s = Self::spawn_in_tls(
            tmp.path(),
            n,
            depmgr,
            &SUPERVISOR_FLAGS_FAKE_AGENTS,
            &extra,
            certs,
        );
        s._tmp = Some(tmp);
        s.wait_leader(Duration::from_secs(20)).await;
        s
    }

    /// Starts `n` replicas with data and logs under `dir` and `defaults`
    /// overridden by `extra`; does not wait for them.
    pub fn spawn_in(
        dir: &Path,
        n: usize,
        depmgr: &str,
        defaults: &[&str],
        extra: &[String],
    ) -> Supervisors {
        Self::spawn_in_tls(dir, n, depmgr, defaults, extra, None)
    }

    /// As [`Supervisors::spawn_in`], with TLS when `certs` is given.
    pub fn spawn_in_tls(
        dir: &Path,
        n: usize,
        depmgr: &str,
        defaults: &[&str],
        extra: &[String],
        certs: Option<Arc<Certs>>,
    ) -> Supervisors {
        let mut s = Supervisors {
            certs,
            procs: ProcessSet::new(dir.join("logs")).tail_on_panic(30),
            ids: (1..=n as u64).collect(),
            addrs: (0..n).map(|_| free_addr()).collect(),
            depmgr: depmgr.to_string(),
            dir: dir.to_path_buf(),
            flags: with_defaults(defaults, extra),
            _tmp: None,
        };
        for i in 0..n {
            s.spawn(i);
        }
        s
    }

    /// `--peers`: `<id>=<addr>,...` of every replica.
    pub fn peers(&self) -> String {
        self.ids
            .iter()
            .zip(&self.addrs)
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process key (and log name) of replica `i`: `s<id>`.
    pub fn key(&self, i: usize) -> String {
        format!("s{}", self.ids[i])
    }

    /// Starts replica `i` with the current peers.
    fn spawn(&mut self, i: usize) {
        let peers = self.peers();
        self.spawn_with_peers(i, &peers);
    }

    /// Starts replica `i` again (SIGKILL first if it runs) with `--peers`
    /// naming only the replicas `ids` (as a replica configured before the
    /// others joined would be).
    pub fn restart_knowing(&mut self, i: usize, ids: &[u64]) {
        self.kill(i);
        let peers = self
            .ids
            .iter()
            .zip(&self.addrs)
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        self.spawn_with_peers(i, &peers);
    }

    fn spawn_with_peers(&mut self, i: usize, peers: &str) {
        self.spawn_with(i, peers, &[]);
    }

    fn spawn_with(&mut self, i: usize, peers: &str, extra: &[std::ffi::OsString]) {
        let id = self.ids[i];
        let program = Program::new(bin("supervisor"))
            .args(["--id", &id.to_string(), "--listen", &self.addrs[i]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("s{id}")))
            .args(["--peers", peers, "--depmgr", &self.depmgr])
            .args(&self.flags)
            .args(self.tls_flags(id))
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn");
        let key = self.key(i);
        self.procs.spawn(&key, program).expect("spawn supervisor");
    }

    /// The TLS flags of replica `id` (none without TLS).
    pub fn tls_flags(&self, id: u64) -> Vec<String> {
        self.certs.as_ref().map_or_else(Vec::new, |c| {
            c.flags(tls::Role::Supervisor, &id.to_string())
        })
    }

    /// The operator identity the admin clients present, with TLS.
    pub fn operator(&self) -> Option<Arc<tls::Tls>> {
        self.certs.as_ref().map(|c| c.operator())
    }

    /// `https://` with TLS, else `http://`.
    pub fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// SIGKILLs replica `i`.
    pub fn kill(&mut self, i: usize) {
        let key = self.key(i);
        self.procs.kill9(&key);
    }

    /// Starts replica `i` again (killing it first if it runs) with the same
    /// flags and data dir.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Re-creates the cluster from scratch: SIGKILLs every replica, removes
    /// its data dir and starts it again on the same address with the same
    /// flags, so the replicas form a new cluster whose log starts at 1
    /// again (what an operator who lost every supervisor's disk would do).
    /// Does not wait for a leader.
    pub fn wipe(&mut self) {
        for i in 0..self.ids.len() {
            self.kill(i);
        }
        for i in 0..self.ids.len() {
            self.remove_data(i);
            self.spawn(i);
        }
    }

    /// Re-creates the cluster from a backup: SIGKILLs every replica,
    /// removes its data dir and starts it again on the same address with
    /// the same flags and `--restore-from <backup>` (an operator's restore
    /// after losing every supervisor's disk). Does not wait for a leader.
    pub fn wipe_and_restore(&mut self, backup: &Path) {
        for i in 0..self.ids.len() {
            self.kill(i);
        }
        let peers = self.peers();
        for i in 0..self.ids.len() {
            self.remove_data(i);
            let flag = [
                std::ffi::OsString::from("--restore-from"),
                backup.as_os_str().to_os_string(),
            ];
            self.spawn_with(i, &peers, &flag);
        }
    }

    /// Removes replica `i`'s data dir (it must not run).
    fn remove_data(&self, i: usize) {
        let data = self.dir.join(format!("s{}", self.ids[i]));
        if let Err(e) = std::fs::remove_dir_all(&data) {
            assert!(
                e.kind() == std::io::ErrorKind::NotFound,
                "cannot remove {}: {e}",
                data.display()
            );
        }
    }

    /// SIGTERM to replica `i`; its exit status, or `None` when it did not
    /// exit within `timeout` (then it is killed).
    pub async fn terminate(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let key = self.key(i);
        self.procs.terminate(&key, timeout).await
    }

    /// Starts a replica with a new `id` (not yet a member); its index.
    pub fn add(&mut self, id: u64) -> usize {
        self.ids.push(id);
        self.addrs.push(free_addr());
        let i = self.ids.len() - 1;
        self.spawn(i);
        i
    }

    /// The admin token the replicas were started with, if any.
    pub fn token(&self) -> Option<String> {
        let i = self.flags.iter().position(|a| a == "--admin-token")?;
        self.flags.get(i + 1).cloned()
    }

    /// An admin client that knows every replica.
    pub fn client(&self) -> AdminClient {
        AdminClient::with_tls(self.addrs.clone(), self.token(), self.operator().as_ref())
            .with_timeout(Duration::from_secs(5))
    }

    /// An admin client of replica `i` only.
    pub fn client_of(&self, i: usize) -> AdminClient {
        AdminClient::with_tls(
            vec![self.addrs[i].clone()],
            self.token(),
            self.operator().as_ref(),
        )
        .with_timeout(Duration::from_secs(5))
    }

    /// OS pid of replica `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.pid(&self.key(i))
    }

    /// Started and not killed or stopped since.
    pub fn running(&self, i: usize) -> bool {
        self.procs.started(&self.key(i))
    }

    /// The cluster view of replica `i`, if it answers.
    pub async fn view(&self, i: usize) -> Option<ClusterView> {
        self.client_of(i).cluster().await.ok()
    }

    /// Index of the leader that every live replica names.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        eventually(
            "one leader agreed by every live supervisor",
            timeout,
            || async {
                let mut leaders = BTreeSet::new();
                for i in 0..self.addrs.len() {
                    if self.running(i) {
                        leaders.insert(self.view(i).await?.leader?);
                    }
                }
                let id = (leaders.len() == 1).then(|| leaders.first().copied())??;
                let i = self.ids.iter().position(|x| *x == id)?;
                self.running(i).then_some(i)
            },
        )
        .await
    }

    /// The log of replica `i`.
    pub fn log(&self, i: usize) -> String {
        self.procs.log(&self.key(i))
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        self.procs.log_tail(&self.key(i), lines)
    }

    /// Waits up to `timeout` for replica `i` to exit on its own; its
    /// status, or `None` while it still runs.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let key = self.key(i);
        self.procs.wait_exit(&key, timeout).await
    }

    /// SIGSTOP to replica `i` (it keeps its sockets but answers nothing).
    pub fn pause(&mut self, i: usize) {
        let key = self.key(i);
        self.procs.pause(&key);
    }

    /// SIGCONT to a paused replica `i`.
    pub fn resume(&mut self, i: usize) {
        let key = self.key(i);
        self.procs.resume(&key);
    }
}

/// Waits until the module view (through `client`) satisfies `pred`.
pub async fn wait_module(
    client: &AdminClient,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ModuleView) -> bool,
) -> ModuleView {
    eventually(what, timeout, || async {
        let v = client.module(name).await.ok()?;
        pred(&v).then_some(v)
    })
    .await
}
