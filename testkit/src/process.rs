//! Child processes a test owns: started with their output in a log file,
//! each in its own process group, and never left behind.
//!
//! A [`ProcessSet`] keeps, per key (`s1`, `agent-a`, `depmgr`), how to start
//! a program ([`Program`]) and its current child, so a test can SIGKILL a
//! process, SIGTERM it and read its exit status, pause it, and start it again
//! with the same arguments on the same data dir. Output (stdout and stderr)
//! is appended to `<log dir>/<key>.log`, across restarts.
//!
//! Dropping the set stops every child: SIGTERM to every process group at
//! once (with SIGCONT, so a paused one can act on it), then SIGKILL to
//! whatever is still there after the grace. When the drop comes from a
//! panic, the tail of each log is printed if the set was asked to
//! ([`ProcessSet::tail_on_panic`]).
//!
//! A child runs in a process group of its own, so a signal from the
//! terminal reaches the test only; it gets `PR_SET_PDEATHSIG = SIGKILL`
//! instead, so nothing outlives an interrupted run (Ctrl-C, a killed test
//! binary) either. Linux fires that signal when the *thread* that started
//! the child ends: start children from a thread that lives as long as the
//! set (the test's own thread or a runtime worker, never a blocking-pool
//! thread).
//!
//! Invariant: a child is signalled only until it is reaped, so a pid the
//! kernel has handed to another process is never hit.
//!
//! Also here, for processes a test did not start itself (a module run by an
//! agent): [`pid_alive`], [`proc_state`] and [`signal`]; and
//! [`output_within`], which runs a command to its end with a deadline.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How often a wait looks at a child.
const TICK: Duration = Duration::from_millis(10);

/// How to start a program: kept so that it can be started again.
#[derive(Debug, Clone)]
pub struct Program {
    wrapper: Vec<OsString>,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Program {
    pub fn new(program: impl Into<PathBuf>) -> Program {
        Program {
            wrapper: Vec::new(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Program {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Program
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Program {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the program through `wrapper` (e.g. `ip netns exec <host>`),
    /// which must exec it, so that the pid is the program's.
    pub fn wrapped<I, S>(mut self, wrapper: I) -> Program
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    pub fn path(&self) -> &Path {
        &self.program
    }

    fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// How a process ended when the set SIGKILLed it.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub pid: u32,
    pub status: ExitStatus,
    /// False when it had exited on its own before the signal.
    pub signalled: bool,
}

struct Proc {
    program: Program,
    log: PathBuf,
    child: Option<Child>,
    /// How the last child ended, once reaped.
    last: Option<ExitStatus>,
    paused: bool,
}

impl Proc {
    /// Reaps the child if it has exited; how the last child ended.
    fn reap(&mut self) -> Option<ExitStatus> {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            self.last = Some(status);
            self.paused = false;
        }
        if self.child.is_some() {
            None
        } else {
            self.last
        }
    }

    fn signal_group(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::killpg(Pid::from_raw(c.id() as i32), sig);
        }
    }

    fn kill9(&mut self) -> Option<Ended> {
        let mut child = self.child.take()?;
        self.paused = false;
        let pid = child.id();
        if let Ok(Some(status)) = child.try_wait() {
            self.last = Some(status);
            return Some(Ended {
                pid,
                status,
                signalled: false,
            });
        }
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let status = child.wait().ok()?;
        self.last = Some(status);
        Some(Ended {
            pid,
            status,
            signalled: true,
        })
    }

    fn tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Child processes by key; every one stopped on drop (see the module doc).
pub struct ProcessSet {
    dir: PathBuf,
    procs: BTreeMap<String, Proc>,
    grace: Duration,
    tail_on_panic: usize,
}

impl ProcessSet {
    /// An empty set whose logs go to `log_dir` (created).
    pub fn new(log_dir: impl Into<PathBuf>) -> ProcessSet {
        let dir = log_dir.into();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the log dir {}: {e}", dir.display()));
        ProcessSet {
            dir,
            procs: BTreeMap::new(),
            grace: Duration::from_secs(10),
            tail_on_panic: 0,
        }
    }

    /// How long a drop waits after SIGTERM before SIGKILL (default 10 s).
    pub fn grace(mut self, grace: Duration) -> ProcessSet {
        self.grace = grace;
        self
    }

    /// Prints the last `lines` lines of every log when the set is dropped
    /// during a panic (default 0: nothing).
    pub fn tail_on_panic(mut self, lines: usize) -> ProcessSet {
        self.tail_on_panic = lines;
        self
    }

    /// Where the output of `key` goes.
    pub fn log_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.log"))
    }

    /// Starts `program` under `key` (replacing the program of an earlier
    /// process under that key, which must not be running); its pid.
    pub fn spawn(&mut self, key: &str, program: Program) -> io::Result<u32> {
        if let Some(p) = self.procs.get_mut(key) {
            p.reap();
            if p.child.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{key} is running"),
                ));
            }
            p.program = program;
        } else {
            let log = self.log_path(key);
            self.procs.insert(
                key.to_string(),
                Proc {
                    program,
                    log,
                    child: None,
                    last: None,
                    paused: false,
                },
            );
        }
        self.start(key)
    }

    /// Starts `key` again with its program (after it was killed, stopped or
    /// exited); its pid.
    pub fn start(&mut self, key: &str) -> io::Result<u32> {
        let p = self
            .procs
            .get_mut(key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no process {key}")))?;
        p.reap();
        if p.child.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{key} is running"),
            ));
        }
        let log = OpenOptions::new().create(true).append(true).open(&p.log)?;
        let mut cmd = p.program.command();
        die_with_parent(&mut cmd);
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", p.program.path().display()),
                )
            })?;
        let pid = child.id();
        p.child = Some(child);
        p.last = None;
        p.paused = false;
        Ok(pid)
    }

    /// Kills `key` if it runs, then starts it again with its program.
    pub fn restart(&mut self, key: &str) -> io::Result<u32> {
        self.kill9(key);
        self.start(key)
    }

    pub fn keys(&self) -> Vec<String> {
        self.procs.keys().cloned().collect()
    }

    /// The pid of `key`'s child, until the set has seen it end.
    pub fn pid(&self, key: &str) -> Option<u32> {
        self.procs.get(key)?.child.as_ref().map(Child::id)
    }

    /// Started and not seen to end (killed, stopped or reaped) since.
    pub fn started(&self, key: &str) -> bool {
        self.procs.get(key).is_some_and(|p| p.child.is_some())
    }

    /// Whether `key`'s child is still there (reaps it if it has exited).
    pub fn running(&mut self, key: &str) -> bool {
        self.procs.get_mut(key).is_some_and(|p| {
            p.reap();
            p.child.is_some()
        })
    }

    /// SIGKILL to the process group, then reaps: how it ended, or `None`
    /// when nothing ran under `key`.
    pub fn kill9(&mut self, key: &str) -> Option<Ended> {
        self.procs.get_mut(key)?.kill9()
    }

    /// SIGKILLs every child.
    pub fn kill_all(&mut self) {
        for p in self.procs.values_mut() {
            p.kill9();
        }
    }

    /// SIGTERM to the process group, then waits up to `timeout` for the
    /// exit status. Past it the group is SIGKILLed and the answer is `None`,
    /// as it is when nothing ran under `key`.
    pub async fn terminate(&mut self, key: &str, timeout: Duration) -> Option<ExitStatus> {
        let p = self.procs.get_mut(key)?;
        p.child.as_ref()?;
        p.signal_group(Signal::SIGTERM);
        if p.paused {
            p.signal_group(Signal::SIGCONT);
        }
        match self.wait_exit(key, timeout).await {
            Some(status) => Some(status),
            None => {
                self.kill9(key);
                None
            }
        }
    }

    /// Waits up to `timeout` for `key` to exit on its own; its status, or
    /// `None` (still running, or never started).
    pub async fn wait_exit(&mut self, key: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.procs.get_mut(key)?;
            if let Some(status) = p.reap() {
                return Some(status);
            }
            if p.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// SIGSTOP to the process group; its pid, or `None` when not running.
    pub fn pause(&mut self, key: &str) -> Option<u32> {
        let p = self.procs.get_mut(key)?;
        let pid = p.child.as_ref()?.id();
        p.signal_group(Signal::SIGSTOP);
        p.paused = true;
        Some(pid)
    }

    /// SIGCONT to a paused process group.
    pub fn resume(&mut self, key: &str) {
        if let Some(p) = self.procs.get_mut(key)
            && p.paused
        {
            p.signal_group(Signal::SIGCONT);
            p.paused = false;
        }
    }

    pub fn paused(&self, key: &str) -> bool {
        self.procs.get(key).is_some_and(|p| p.paused)
    }

    /// The whole log of `key`.
    pub fn log(&self, key: &str) -> String {
        std::fs::read_to_string(self.log_path(key)).unwrap_or_default()
    }

    /// The last `lines` lines of `key`'s log, for failure messages.
    pub fn log_tail(&self, key: &str, lines: usize) -> String {
        tail(&self.log(key), lines)
    }

    /// Stops every child: SIGTERM (and SIGCONT) to every group at once,
    /// SIGKILL to what is left after `grace`. Blocking: for `Drop`.
    pub fn stop_all_blocking(&mut self, grace: Duration) {
        for p in self.procs.values_mut() {
            p.reap();
            p.signal_group(Signal::SIGTERM);
            p.signal_group(Signal::SIGCONT);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let mut left = 0;
            for p in self.procs.values_mut() {
                p.reap();
                left += usize::from(p.child.is_some());
            }
            if left == 0 {
                return;
            }
            std::thread::sleep(TICK);
        }
        self.kill_all();
    }
}

impl Drop for ProcessSet {
    fn drop(&mut self) {
        self.stop_all_blocking(self.grace);
        if std::thread::panicking() && self.tail_on_panic > 0 {
            for (key, p) in &self.procs {
                eprintln!("--- {key} log tail ({}) ---", p.log.display());
                eprintln!("{}", p.tail(self.tail_on_panic));
            }
        }
    }
}

/// Makes the child of `cmd` receive SIGKILL when the thread that forks it
/// exits (see the module doc).
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the child between fork and exec. It only
    // calls prctl(2) and getppid(2), which are async-signal-safe, takes no
    // lock and allocates nothing (errors are plain OS codes).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent died between fork and prctl: the signal was missed.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`...),
/// or `None` when there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    !matches!(proc_state(pid), Some('Z') | Some('X') | None)
}

/// Watches `pid` (any process, not only a child) from a thread blocked on
/// its pidfd: the receiver gets the instant the kernel reported its exit,
/// taken as soon as that thread runs, not at the next turn of a polling
/// loop. So a test can compare when a process died with a deadline within
/// a scheduling delay instead of a poll interval. An error when the pid is
/// gone already or pidfds are not available (Linux before 5.3).
pub fn watch_exit(pid: u32) -> std::io::Result<std::sync::mpsc::Receiver<Instant>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor (or -1), which is owned from here on.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: a valid descriptor just returned by pidfd_open, owned once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(n) if n > 0 => {
                    let _ = tx.send(Instant::now());
                    return;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    });
    Ok(rx)
}

/// Sends `sig` to `pid`, ignoring errors (it may be gone already).
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

/// Runs `cmd` to its end with stdout and stderr captured; past `timeout`
/// it is killed and the answer is a `TimedOut` error.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {what}: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what}: still running after {timeout:?}, killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}
