//! The one thread that forks module processes, and the parent-death signal.
//!
//! A module must not outlive its agent: every child gets
//! `PR_SET_PDEATHSIG = SIGKILL`. Linux fires that signal when the *thread*
//! that forked the child exits, not the process, and tokio's blocking-pool
//! threads come and go. So every module is forked on one dedicated thread
//! that lives as long as the process: [`Spawner`] sends it spawn requests
//! over a channel and awaits the child. The thread enters the tokio runtime
//! so the children are reaped by tokio's process driver (`Child::wait` wakes
//! at once on exit), and it never returns, even when every sender is gone.
//!
//! This is the only module with `unsafe` code: the `pre_exec` hook, which
//! runs in the forked child before `exec` and may only make
//! async-signal-safe calls.

#![allow(unsafe_code)]

use std::io;
use std::sync::mpsc;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (Command, oneshot::Sender<io::Result<Child>>);

/// Handle to the spawner thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread; children are registered with `runtime`'s
    /// process driver.
    pub fn start(runtime: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("module-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
                // Never exit: the parent-death signal of every child forked
                // here fires when this thread ends.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Spawns `cmd` in its own process group with the parent-death signal
    /// `death`, on the spawner thread.
    pub async fn spawn(&self, mut cmd: Command, death: Signal) -> io::Result<Child> {
        cmd.process_group(0);
        set_parent_death_signal(cmd.as_std_mut(), death);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("spawner thread dropped the request"))?
    }
}

/// Makes the child of `cmd` receive `sig` when the thread that forks it
/// exits. Public so a test can show what happens when the forking thread is
/// a short-lived one, and for the module shim ([`crate::shim`]), which
/// forks the module on its only thread.
pub fn set_parent_death_signal(cmd: &mut std::process::Command, sig: Signal) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the child between fork and exec. It only
    // calls prctl(2) and getppid(2), which are async-signal-safe, touches no
    // locks and allocates nothing (the error values are plain OS codes).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                sig as libc::c_int as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The agent died between fork and prctl: the signal was missed.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
