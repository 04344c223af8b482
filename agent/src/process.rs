//! One module process: how it is launched, watched and stopped.
//!
//! A module runs under its own [`crate::shim`]: the agent binary re-run as
//! `module-shim`, which forks the module in a process group of its own (in
//! `MODULE_DIR`, stdin closed, stdout/stderr appended to the module's
//! `output.log`, rotated by size: [`crate::logs`]), keeps every process the module forks in its tree (child
//! subreaper), holds the lease deadline itself, and kills the whole tree
//! when the module's main process ends, when the lease passes without
//! renewal, when the agent says so or when the agent dies. [`launch`]
//! spawns the shim through the [`Spawner`], waits for its `started <pid>`
//! (or `failed ...`: a module that cannot be executed is a failed launch)
//! and starts a task that awaits the shim's exit, which mirrors the
//! module's: the exit is known the moment tokio reaps the shim, published
//! on a watch channel ([`ProcessHandle::exited`]) and handed to a callback.
//!
//! [`ProcessHandle::stop`] is SIGTERM to the shim, which forwards it to
//! every process of the tree, up to `grace` for the module to exit, then
//! `kill` on the shim's control pipe (SIGKILL to the whole tree). It is
//! idempotent and may be called from several places at once.
//! [`ProcessHandle::set_deadline`] moves the shim's lease deadline.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::shim;
use crate::spawner::Spawner;

/// The shim is the agent's own executable.
const SHIM_EXE: &str = "/proc/self/exe";

/// Longest wait for the shim's `started` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here (appended, rotated by the shim as
    /// `rotation` says; see [`crate::logs`]).
    pub log: PathBuf,
    pub rotation: crate::logs::Rotation,
}

/// A started module (its shim and its main process); clones watch the
/// same process.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    /// The module's main process.
    pub pid: u32,
    /// Its shim (0 for a table test's fake handle).
    shim: u32,
    control: Option<Arc<Mutex<std::fs::File>>>,
    exited: watch::Receiver<Option<String>>,
}

impl ProcessHandle {
    /// A handle on no real process, for table tests: `exited` is the exit
    /// description it shows (`None`: still running).
    #[cfg(test)]
    pub(crate) fn fake(pid: u32, exited: Option<&str>) -> ProcessHandle {
        let (_tx, rx) = watch::channel(exited.map(str::to_string));
        ProcessHandle {
            pid,
            shim: 0,
            control: None,
            exited: rx,
        }
    }

    /// A receiver that holds `Some(description)` once the process exited.
    pub fn exited(&self) -> watch::Receiver<Option<String>> {
        self.exited.clone()
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Tells the shim the lease deadline by which it kills the module's
    /// tree unless told a later one (`None`: no lease). Never blocks: when
    /// the pipe is full (a shim that does not read), the update is
    /// dropped and the shim keeps the earlier, shorter deadline.
    pub fn set_deadline(&self, at: Option<Instant>) {
        self.send(&shim::lease_line(at.map(monotonic_ns_of)));
    }

    fn send(&self, line: &str) {
        let Some(control) = &self.control else { return };
        if self.has_exited() {
            return;
        }
        let mut pipe = control.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = pipe.write_all(line.as_bytes()) {
            tracing::debug!(pid = self.pid, "module shim control: {e}");
        }
    }

    /// SIGTERM to the module's tree (through its shim), `grace`, SIGKILL to
    /// the tree. Returns how the module ended.
    pub async fn stop(&self, grace: Duration) -> String {
        let mut exited = self.exited();
        if !self.has_exited() {
            signal_pid(self.shim, Signal::SIGTERM);
            let _ = tokio::time::timeout(grace, exited.wait_for(Option::is_some)).await;
        }
        if !self.has_exited() {
            self.send(shim::KILL_LINE);
            let quick = Duration::from_secs(2);
            if tokio::time::timeout(quick, exited.wait_for(Option::is_some))
                .await
                .is_err()
            {
                // A shim that does not answer (stopped?): kill it and its
                // group; the module's main process dies with it.
                tracing::warn!(
                    pid = self.pid,
                    shim = self.shim,
                    "module shim did not stop the module within 2 s: SIGKILL to the shim"
                );
                signal_group(self.pid, Signal::SIGKILL);
                signal_pid(self.shim, Signal::SIGKILL);
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some)).await
        {
            Ok(Ok(v)) => v.clone().unwrap_or_default(),
            Ok(Err(_)) => "exit watcher gone".into(),
            Err(_) => "did not exit within 10 s of SIGKILL".into(),
        }
    }
}

/// `at` on `CLOCK_MONOTONIC` in nanoseconds (the clock the shim reads).
fn monotonic_ns_of(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = shim::monotonic_ns();
    if at >= now {
        now_ns.saturating_add((at - now).as_nanos() as u64)
    } else {
        now_ns.saturating_sub((now - at).as_nanos() as u64)
    }
}

fn signal_pid(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, ?sig, "kill: {e}"),
    }
}

/// Sends `sig` to the process group `pgid`; a group that is gone is fine.
pub fn signal_group(pgid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return; // never signal "every process" or init's group
    }
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, ?sig, "killpg: {e}"),
    }
}

/// Describes an exit status for reports and logs.
pub fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!(
                "killed by signal {sig} ({})",
                Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?")
            ),
            _ => format!("ended: {s}"),
        },
        Err(e) => format!("cannot wait for the process: {e}"),
    }
}

/// Spawns the module under its shim, with its exit watcher; `deadline`
/// is the lease deadline the shim holds (`None`: no lease, an
/// `at-least-one` module). `on_exit` runs once with the exit description,
/// after the handle's watch channel is set, and the watcher awaits the
/// future it returns.
pub async fn launch<F, Fut>(
    spawner: &Spawner,
    l: &Launch,
    deadline: Option<Instant>,
    on_exit: F,
) -> std::io::Result<ProcessHandle>
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Some(parent) = l.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let mut cmd = Command::new(SHIM_EXE);
    cmd.arg0("module-shim")
        .args(shim::command(
            deadline.map(monotonic_ns_of),
            Some((&l.log, l.rotation)),
            &l.program,
            &l.args,
        ))
        .current_dir(&l.dir)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    // SIGHUP, not SIGKILL: the shim must outlive the agent long enough to
    // kill the module's tree.
    let mut child = spawner.spawn(cmd, Signal::SIGHUP).await?;
    let shim_pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("module shim exited before its pid was read"))?;
    let control = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("module shim has no control pipe"))?
        .into_owned_fd()?;
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&control),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    let control = std::fs::File::from(control);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("module shim has no stdout"))?;
    let mut first = String::new();
    let read = tokio::time::timeout(
        START_TIMEOUT,
        tokio::io::BufReader::new(stdout).read_line(&mut first),
    )
    .await;
    let pid = match (read, parse_started(&first)) {
        (Ok(Ok(_)), Ok(pid)) => pid,
        (Ok(Ok(_)), Err(e)) => {
            let _ = child.wait().await;
            return Err(e);
        }
        (Ok(Err(e)), _) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(std::io::Error::other(format!("module shim: {e}")));
        }
        (Err(_), _) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(std::io::Error::other(format!(
                "module shim did not start the module within {} s",
                START_TIMEOUT.as_secs()
            )));
        }
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let how = describe_exit(child.wait().await);
        // The shim is gone (it kills the tree before it exits, unless it
        // was killed itself): whatever is left of the module's group goes
        // too. A group id is not reused while the group has members.
        signal_group(pid, Signal::SIGKILL);
        let _ = tx.send(Some(how.clone()));
        on_exit(how).await;
    });
    Ok(ProcessHandle {
        pid,
        shim: shim_pid,
        control: Some(Arc::new(Mutex::new(control))),
        exited: rx,
    })
}

/// The shim's first line: `started <pid>`, or `failed <errno> <message>`
/// (empty: it ended before saying either).
fn parse_started(line: &str) -> std::io::Result<u32> {
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("started ") {
        return pid
            .parse()
            .map_err(|_| std::io::Error::other(format!("module shim said {line:?}")));
    }
    if let Some(rest) = line.strip_prefix("failed ") {
        let (errno, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let kind = errno
            .parse::<i32>()
            .map(|n| std::io::Error::from_raw_os_error(n).kind())
            .unwrap_or(std::io::ErrorKind::Other);
        return Err(std::io::Error::new(kind, msg.to_string()));
    }
    Err(std::io::Error::other(if line.is_empty() {
        "module shim ended before starting the module".to_string()
    } else {
        format!("module shim said {line:?}")
    }))
}

/// Kills what is left of an earlier incarnation's modules: processes whose
/// environment says they are a module of this node under this data dir
/// (`MODULE_NODE`, `MODULE_DIR` under `modules_root`), with their process
/// groups. The parent-death signal only reaches a module's direct child, so
/// a grandchild can outlive an agent killed with SIGKILL; this sweep at
/// start-up makes "every module is stopped after a restart" true. Returns
/// the pids killed.
pub fn sweep_orphans(node: &str, modules_root: &std::path::Path) -> Vec<u32> {
    let me = std::process::id();
    let want_node = format!("MODULE_NODE={node}");
    let want_dir = format!("MODULE_DIR={}/", modules_root.display());
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in proc_dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mut node_ok = false;
        let mut dir_ok = false;
        for var in environ.split(|&b| b == 0) {
            let var = String::from_utf8_lossy(var);
            node_ok |= var == want_node;
            dir_ok |= var.starts_with(&want_dir);
        }
        if !(node_ok && dir_ok) {
            continue;
        }
        let pgid = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = stat.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(2)?.parse::<u32>().ok()
            });
        if let Some(pgid) = pgid {
            signal_group(pgid, Signal::SIGKILL);
        }
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        killed.push(pid);
    }
    killed
}
