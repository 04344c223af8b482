//! One module process: how it is launched, watched and stopped.
//!
//! A process runs in its own process group (its pid is the group id), in
//! `MODULE_DIR`, with stdin closed and stdout/stderr appended to the
//! module's `output.log`. [`launch`] spawns it through the [`Spawner`] and
//! starts a task that awaits `child.wait()`: the exit is known the moment
//! tokio reaps the child, published on a watch channel
//! ([`ProcessHandle::exited`]) and handed to a callback. Once the group
//! leader is gone, whatever is left of its group is killed (SIGKILL), so a
//! crashed module leaves no stray grandchildren behind.
//!
//! [`ProcessHandle::stop`] is SIGTERM to the group, up to `grace` for the
//! leader to exit, then SIGKILL to the group. It is idempotent and may be
//! called from several places at once.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use crate::spawner::Spawner;

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
}

/// A started process; clones watch the same process.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    pub pid: u32,
    exited: watch::Receiver<Option<String>>,
}

impl ProcessHandle {
    /// A handle on no real process, for table tests: `exited` is the exit
    /// description it shows (`None`: still running).
    #[cfg(test)]
    pub(crate) fn fake(pid: u32, exited: Option<&str>) -> ProcessHandle {
        let (_tx, rx) = watch::channel(exited.map(str::to_string));
        ProcessHandle { pid, exited: rx }
    }

    /// A receiver that holds `Some(description)` once the process exited.
    pub fn exited(&self) -> watch::Receiver<Option<String>> {
        self.exited.clone()
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// SIGTERM to the group, `grace`, SIGKILL to the group. Returns how the
    /// process ended.
    pub async fn stop(&self, grace: Duration) -> String {
        let mut exited = self.exited();
        if !self.has_exited() {
            signal_group(self.pid, Signal::SIGTERM);
            let _ = tokio::time::timeout(grace, exited.wait_for(Option::is_some)).await;
        }
        // Also when the leader went on SIGTERM: a child of it may not have.
        signal_group(self.pid, Signal::SIGKILL);
        match tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some)).await
        {
            Ok(Ok(v)) => v.clone().unwrap_or_default(),
            Ok(Err(_)) => "exit watcher gone".into(),
            Err(_) => "did not exit within 10 s of SIGKILL".into(),
        }
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

/// Spawns the process and its exit watcher; `on_exit` runs once with the
/// exit description, after the handle's watch channel is set, and the
/// watcher awaits the future it returns.
pub async fn launch<F, Fut>(
    spawner: &Spawner,
    l: &Launch,
    on_exit: F,
) -> std::io::Result<ProcessHandle>
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Some(parent) = l.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(&l.program);
    cmd.args(&l.args)
        .current_dir(&l.dir)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(false);
    let mut child = spawner.spawn(cmd).await?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let how = describe_exit(child.wait().await);
        // The leader is gone; its group must go too.
        signal_group(pid, Signal::SIGKILL);
        let _ = tx.send(Some(how.clone()));
        on_exit(how).await;
    });
    Ok(ProcessHandle { pid, exited: rx })
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
