//! The module shim: one small process per running module, between the
//! agent and the module, that keeps the module's whole process tree on a
//! leash the agent cannot forget.
//!
//! A module may fork: a shell script that starts a server without `exec`,
//! a daemon that double-forks and calls `setsid`, a child that clears its
//! environment. Process groups, the parent-death signal and the agent's
//! environment sweep each miss one of those. The shim is the agent binary
//! itself, run as `agent __module-shim [--lease-ns N] -- PROGRAM ARGS...`
//! ([`command`]); it
//! - makes itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so every
//!   process the module leaves behind, however it forked, is re-parented to
//!   the shim and stays in its tree ([`descendants`]);
//! - starts the module in a process group of its own (stdin closed,
//!   stdout and stderr to one pipe the shim reads), the module getting
//!   `SIGKILL` as its parent-death signal should the shim itself be
//!   killed;
//! - writes what the module prints, and its own messages, to the module's
//!   `output.log` with size rotation (`--log`, `--log-max-bytes`,
//!   `--log-files`; see [`crate::logs`]), draining the pipe before it exits
//!   so no line is lost (without `--log`, the module writes to the shim's
//!   stderr directly);
//! - tells the agent on its stdout `started <pid>` or `failed <errno>
//!   <message>` (a module that cannot be executed is a failed launch, as
//!   before, not a crash);
//! - **holds the lease deadline itself**: the agent writes `lease <ns>`
//!   (an absolute `CLOCK_MONOTONIC` time, shared by every process on the
//!   host) on the shim's stdin at every renewal; when the deadline passes
//!   with no renewal, the shim kills the whole tree, whether or not the
//!   agent is still able to (a stopped, stalled or hung agent does not
//!   extend a lease it no longer renews);
//! - kills the whole tree when the agent dies (its stdin reaches end of
//!   file, or `SIGHUP`, the shim's parent-death signal), when the agent
//!   says `kill`, and when the module's main process exits (what it left
//!   behind goes with it);
//! - forwards `SIGTERM` (and `SIGINT`) to every process of the tree, so a
//!   graceful stop reaches processes that left the module's process group;
//! - exits as the module's main process did (its exit code, or the same
//!   signal), so the agent reports the module's own exit.
//!
//! Where the machine has a writable cgroup v1 freezer hierarchy, the
//! module also runs in a cgroup of its own ([`crate::cgroup`]): each kill
//! freezes it first and kills every member, so nothing outruns the kill
//! and nothing that left the tree is missed.
//!
//! The tree is killed by repeated rounds of "list the descendants, SIGKILL
//! each, reap": a process forked during a round is re-parented to the shim
//! when its parent dies and is caught by the next round (`Tree::kill_all`).
//!
//! The shim is synchronous and single-threaded: one `poll` over its stdin,
//! a `signalfd` and the module's output pipe, with the lease deadline as
//! the timeout. It shares no
//! runtime, lock or disk with the agent, so nothing the agent waits on can
//! delay it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

use crate::logs::{RotatingWriter, Rotation};

/// First argument that makes the agent binary run as a module shim.
pub const ARG: &str = "__module-shim";

/// Longest control line the shim accepts from the agent.
const MAX_LINE: usize = 256;

/// Longest the shim spends killing a tree before it gives up with a
/// message (a fork bomb outrunning it).
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Most bytes the shim reads from the module's output at a time.
const OUTPUT_CHUNK: usize = 64 << 10;

/// The module's output log, once the shim opened it (its own messages go
/// there too).
static LOG: Mutex<Option<RotatingWriter>> = Mutex::new(None);

/// A message of the shim: to the module's output log when open, to
/// stderr before.
fn say(msg: &str) {
    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    match log.as_mut() {
        Some(w) => {
            let _ = w.write(format!("module-shim: {msg}\n").as_bytes());
        }
        None => eprintln!("module-shim: {msg}"),
    }
}

/// The shim's command line for `program args...` under an initial lease
/// deadline (`None`: no lease, an `at-least-one` module), writing the
/// module's output to `log` rotated as it says (`None`: to the shim's
/// stderr).
pub fn command(
    lease_ns: Option<u64>,
    log: Option<(&Path, Rotation)>,
    program: &Path,
    args: &[String],
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![ARG.into()];
    if let Some(ns) = lease_ns {
        argv.push("--lease-ns".into());
        argv.push(ns.to_string().into());
    }
    if let Some((path, rotation)) = log {
        argv.push("--log".into());
        argv.push(path.as_os_str().to_owned());
        argv.push("--log-max-bytes".into());
        argv.push(rotation.max_bytes.to_string().into());
        argv.push("--log-files".into());
        argv.push(rotation.files.to_string().into());
    }
    argv.push("--".into());
    argv.push(program.as_os_str().to_owned());
    argv.extend(args.iter().map(OsString::from));
    argv
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds (the clock of every lease
/// deadline the shim is told).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The control line that sets the lease deadline (`None`: no lease).
pub fn lease_line(deadline_ns: Option<u64>) -> String {
    match deadline_ns {
        Some(ns) => format!("lease {ns}\n"),
        None => "lease none\n".into(),
    }
}

/// The control line that kills the tree at once.
pub const KILL_LINE: &str = "kill\n";

/// What the shim was asked to run.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    lease_ns: Option<u64>,
    log: Option<(PathBuf, Rotation)>,
    program: OsString,
    args: Vec<OsString>,
}

fn parse_args(argv: &[OsString]) -> Result<Args, String> {
    let mut it = argv.iter();
    let mut lease_ns = None;
    let mut log: Option<PathBuf> = None;
    let mut rotation = Rotation::default();
    loop {
        match it.next().and_then(|a| a.to_str()) {
            Some("--lease-ns") => {
                let v = it
                    .next()
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or("--lease-ns needs a number of nanoseconds")?;
                lease_ns = Some(v);
            }
            Some("--log") => {
                log = Some(PathBuf::from(it.next().ok_or("--log needs a path")?));
            }
            Some("--log-max-bytes") => {
                rotation.max_bytes = it
                    .next()
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&v| v > 0)
                    .ok_or("--log-max-bytes needs a number of bytes")?;
            }
            Some("--log-files") => {
                rotation.files = it
                    .next()
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|&v| v > 0)
                    .ok_or("--log-files needs a number of files")?;
            }
            Some("--") => break,
            other => {
                return Err(format!(
                    "unexpected argument {other:?} (usage: {ARG} [--lease-ns N] [--log PATH --log-max-bytes N --log-files N] -- PROGRAM ARGS...)"
                ));
            }
        }
    }
    let program = it.next().ok_or("no program to run")?.clone();
    Ok(Args {
        lease_ns,
        log: log.map(|p| (p, rotation)),
        program,
        args: it.cloned().collect(),
    })
}

/// A control line from the agent.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Lease(Option<u64>),
    Kill,
}

fn parse_line(line: &str) -> Option<Control> {
    match line.trim().split_once(' ') {
        Some(("lease", "none")) => Some(Control::Lease(None)),
        Some(("lease", ns)) => ns.parse().ok().map(|ns| Control::Lease(Some(ns))),
        None if line.trim() == "kill" => Some(Control::Kill),
        _ => None,
    }
}

/// Runs the shim (`argv` after [`ARG`]) and exits as the module did.
pub fn main(argv: &[OsString]) -> ! {
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("module-shim: {e}");
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(status) => exit_as(status),
        Err(e) => {
            eprintln!("module-shim: {e}");
            std::process::exit(70);
        }
    }
}

fn run(args: Args) -> Result<WaitStatus, String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    // The module: stdout and stderr to one pipe we read and write to the
    // rotated log (or, without --log or when the log cannot be opened, to
    // our stderr); it dies with us even if we are SIGKILLed (its own
    // children are then the cgroup's or the agent's restart sweep's to
    // find).
    let mut output: Option<std::fs::File> = None;
    let sink = match &args.log {
        Some((path, rotation)) => match RotatingWriter::open(path, *rotation) {
            Ok(w) => {
                *LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("cannot make the output pipe: {e}"))?;
                // Our end only: the module's end stays blocking.
                nix::fcntl::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&read),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(|e| format!("cannot make the output pipe non-blocking: {e}"))?;
                output = Some(std::fs::File::from(read));
                write
            }
            Err(e) => {
                eprintln!(
                    "module-shim: cannot open {}: {e}; the module's output goes here, unrotated",
                    path.display()
                );
                stderr_fd()?
            }
        },
        None => stderr_fd()?,
    };
    let sink2 = sink
        .try_clone()
        .map_err(|e| format!("cannot duplicate the output pipe: {e}"))?;
    let mut cmd = std::process::Command::new(&args.program);
    // Its own process group, as the contract says (the pid the status API
    // shows is the group id).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.args(&args.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(sink))
        .stderr(Stdio::from(sink2));
    crate::spawner::set_parent_death_signal(&mut cmd, Signal::SIGKILL);
    // The module's cgroup, where there can be one: the shim enters it to
    // fork the module (which inherits it) and leaves it at once.
    let me = std::process::id();
    let home = crate::cgroup::home();
    // The agent's data dir is three levels above the placement dir.
    let data_dir = std::env::var_os("MODULE_PACKAGES_DIR").and_then(|p| {
        std::path::Path::new(&p)
            .ancestors()
            .nth(3)
            .map(std::path::Path::to_path_buf)
    });
    let mut cgroup = match (
        &home,
        std::env::var("MODULE_NODE"),
        std::env::var("MODULE_NAME"),
        data_dir,
    ) {
        (Some(_), Ok(node), Ok(module), Some(data_dir)) => {
            crate::cgroup::ModuleCgroup::enter(&crate::cgroup::scope(&node, &data_dir), &module, me)
        }
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end: the module holds the only ones,
    // so the pipe ends when the module's tree is gone.
    drop(cmd);
    if let (Some(cg), Some(home)) = (&cgroup, &home)
        && let Err(e) = cg.leave(home, me)
    {
        // Still inside: freezing it would freeze the shim too. Go on
        // without the cgroup (the subreaper tree still holds).
        say(&format!(
            "cannot leave the module's cgroup {}: {e}",
            cg.dir().display()
        ));
        cgroup = None;
    }
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(cg) = &cgroup {
                cg.remove();
            }
            let _ = writeln!(out, "failed {} {e}", e.raw_os_error().unwrap_or(0));
            let _ = out.flush();
            std::process::exit(127);
        }
    };
    let main_pid = Pid::from_raw(child.id() as i32);
    let _ = writeln!(out, "started {main_pid}");
    let _ = out.flush();
    drop(out);
    // The std handle is not used to wait: the loop reaps with waitpid.
    drop(child);

    let mut tree = Tree {
        me: Pid::this(),
        main_pid,
        main_status: None,
        cgroup,
        output,
    };
    let mut lease = args.lease_ns;
    // Unbuffered: a buffered reader could hold lines poll no longer sees.
    let mut control = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("cannot duplicate stdin: {e}"))?,
    );
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if tree.main_status.is_some() {
            // What the main process left behind goes with it.
            return tree.kill_all("the module's main process ended");
        }
        let timeout = match lease {
            Some(ns) => {
                let now = monotonic_ns();
                if now >= ns {
                    say(&format!(
                        "the lease ended {} ms ago without renewal from the agent: killing every process of the module",
                        (now - ns) / 1_000_000
                    ));
                    return tree.kill_all("lease ended");
                }
                // Round up, so the wake-up is never early.
                PollTimeout::try_from((ns - now).div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let (stdin_ready, signal_ready, output_ready) = {
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(control.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(out) = &tree.output {
                fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (
                ready(&fds[1]),
                ready(&fds[0]),
                fds.get(2).is_some_and(ready),
            )
        };
        if output_ready {
            tree.copy_output(1);
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {
                        tree.reap();
                    }
                    Ok(Signal::SIGHUP) => {
                        return tree.kill_all("the agent is gone (SIGHUP)");
                    }
                    Ok(sig) => {
                        // SIGTERM, SIGINT, SIGQUIT: to every process of the tree.
                        for pid in descendants(tree.me) {
                            let _ = kill(pid, sig);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if stdin_ready {
            let mut buf = [0u8; 512];
            match control.read(&mut buf) {
                Ok(0) | Err(_) => {
                    return tree.kill_all("the agent is gone (control pipe closed)");
                }
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        match parse_line(&String::from_utf8_lossy(&line)) {
                            Some(Control::Lease(l)) => lease = l,
                            Some(Control::Kill) => {
                                return tree.kill_all("stopped by the agent");
                            }
                            None => say(&format!(
                                "ignoring a control line: {:?}",
                                String::from_utf8_lossy(&line)
                            )),
                        }
                    }
                    if pending.len() > MAX_LINE {
                        pending.clear();
                    }
                }
            }
        }
    }
}

/// The module's tree as the shim sees it: itself, the main process, and
/// the main process's exit status once reaped.
struct Tree {
    me: Pid,
    main_pid: Pid,
    main_status: Option<WaitStatus>,
    /// The module's cgroup, when one could be made.
    cgroup: Option<crate::cgroup::ModuleCgroup>,
    /// Our end of the module's output pipe (non-blocking), until it ends.
    output: Option<std::fs::File>,
}

/// Our stderr, for a module that writes there.
fn stderr_fd() -> Result<std::os::fd::OwnedFd, String> {
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate stderr: {e}"))
}

impl Tree {
    /// Copies what the module wrote to its output log: up to `chunks`
    /// reads of [`OUTPUT_CHUNK`] (0: until the pipe is empty). The pipe is
    /// dropped once every writer is gone.
    fn copy_output(&mut self, chunks: usize) {
        let Some(pipe) = &mut self.output else { return };
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        let mut done = 0;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.output = None;
                    return;
                }
                Ok(n) => {
                    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(w) = log.as_mut() {
                        // A full disk loses output, not the module.
                        let _ = w.write(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.output = None;
                    return;
                }
            }
            done += 1;
            if chunks != 0 && done >= chunks {
                return;
            }
        }
    }

    /// Reaps every child that has exited (the main process or an orphan
    /// re-parented here); records the main process's status. Returns
    /// whether any child is left.
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(s) => {
                    if s.pid() == Some(self.main_pid) && self.main_status.is_none() {
                        self.main_status = Some(s);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false, // ECHILD: no child at all
            }
        }
    }

    /// SIGKILLs every process of the tree until none is left, reaping as
    /// it goes; `why` goes to the log when anything was killed. Returns
    /// the main process's status.
    fn kill_all(&mut self, why: &str) -> Result<WaitStatus, String> {
        let status = self.kill_tree(why);
        // Every writer is gone: what is left in the pipe goes to the log
        // (a process that escaped the kill may still hold it: then what
        // is there now).
        self.copy_output(0);
        status
    }

    fn kill_tree(&mut self, why: &str) -> Result<WaitStatus, String> {
        let start = Instant::now();
        let mut killed = BTreeSet::new();
        loop {
            // The cgroup first: frozen, nothing in it can fork meanwhile,
            // and it holds what may have left the tree.
            if let Some(cg) = &self.cgroup {
                killed.extend(cg.kill_all(start + KILL_DEADLINE));
            }
            let tree = descendants(self.me);
            for &pid in &tree {
                if kill(pid, Signal::SIGKILL).is_ok() {
                    killed.insert(pid);
                }
            }
            let left = self.reap();
            if tree.is_empty() && !left {
                break;
            }
            if start.elapsed() > KILL_DEADLINE {
                say(&format!(
                    "{} processes still alive after {} s of SIGKILL rounds; giving up",
                    tree.len(),
                    KILL_DEADLINE.as_secs()
                ));
                break;
            }
            if tree.is_empty() {
                // Killed but not yet reapable: give them a moment.
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if let Some(cg) = &self.cgroup {
            cg.remove();
        }
        if !killed.is_empty() {
            // What the module wrote before it was killed comes first.
            self.copy_output(0);
            say(&format!(
                "{why}: killed {} processes of the module ({})",
                killed.len(),
                killed
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        self.main_status
            .ok_or_else(|| format!("module process {} was never reaped", self.main_pid))
    }
}

/// Every process whose parent chain leads to `root` (not `root` itself),
/// from `/proc`.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parens.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(Pid::from_raw(c));
            todo.push(c);
        }
    }
    out
}

/// Exits the way the module's main process did.
fn exit_as(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, sig, _) => {
            // Default dispositions (nothing was ever caught here); unblock
            // and take the same signal.
            let _ = SigSet::all().thread_unblock();
            let _ = kill(Pid::this(), sig);
            std::process::exit(128 + sig as i32)
        }
        _ => std::process::exit(70),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_round_trip() {
        let rotation = Rotation {
            max_bytes: 4096,
            files: 2,
        };
        let argv = command(
            Some(42),
            Some((Path::new("/d/output.log"), rotation)),
            Path::new("/bin/x"),
            &["a".into(), "--".into()],
        );
        assert_eq!(argv[0], ARG);
        assert_eq!(
            parse_args(&argv[1..]),
            Ok(Args {
                lease_ns: Some(42),
                log: Some(("/d/output.log".into(), rotation)),
                program: "/bin/x".into(),
                args: vec!["a".into(), "--".into()],
            })
        );
        let argv = command(None, None, Path::new("/bin/y"), &[]);
        assert_eq!(parse_args(&argv[1..]).map(|a| a.lease_ns), Ok(None));
        assert_eq!(parse_args(&argv[1..]).map(|a| a.log), Ok(None));
        assert!(parse_args(&["--log-files".into(), "0".into()]).is_err());
        assert!(parse_args(&["--lease-ns".into(), "x".into()]).is_err());
        assert!(parse_args(&["--".into()]).is_err());
        assert!(parse_args(&["/bin/x".into()]).is_err());
    }

    #[test]
    fn control_lines() {
        assert_eq!(
            parse_line(&lease_line(Some(7))),
            Some(Control::Lease(Some(7)))
        );
        assert_eq!(parse_line(&lease_line(None)), Some(Control::Lease(None)));
        assert_eq!(parse_line(KILL_LINE), Some(Control::Kill));
        assert_eq!(parse_line("lease soon\n"), None);
        assert_eq!(parse_line("halt\n"), None);
    }
}
