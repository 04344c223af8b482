//! A freezer cgroup per module, where the machine gives the agent one.
//!
//! The module shim ([`crate::shim`]) keeps a module's processes in its tree
//! as a child subreaper; that holds while the shim lives. A cgroup holds
//! even when it does not: every process a module forks stays in the
//! module's cgroup whatever it does (new session, empty environment,
//! re-parented to init), and the cgroup can be frozen, so a kill cannot be
//! outrun by forks. Cgroup v1's freezer controller is what our hosts and
//! Docker engine offer (`/sys/fs/cgroup/freezer`); where it is missing or
//! read-only (an unprivileged container), the shim works without it.
//!
//! Layout: `/sys/fs/cgroup/freezer/sup-modules/<scope>/<module>.<shim pid>`,
//! the scope being the node name and a hash of the agent's data dir
//! ([`scope`]), so that agents sharing a host (tests, several nodes on one
//! machine) never sweep each other's modules.
//! The shim creates its module's cgroup and enters it just before it forks
//! the module, then goes back to its own cgroup, so only the module's
//! processes are in it ([`ModuleCgroup::enter`]). To kill: freeze, SIGKILL
//! every member, thaw, until empty ([`ModuleCgroup::kill_all`]), then the
//! directory is removed. At start the agent kills what is left in its
//! node's cgroups from an earlier run ([`sweep`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Mount point of the v1 freezer hierarchy.
const FREEZER: &str = "/sys/fs/cgroup/freezer";
/// Our part of it.
const ROOT: &str = "sup-modules";

/// The cgroup of one module.
#[derive(Debug)]
pub struct ModuleCgroup {
    dir: PathBuf,
}

/// The scope of an agent's module cgroups: `<node>.<FNV-1a of the data
/// dir's path>`.
pub fn scope(node: &str, data_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    // Component by component, so `/a/b` and `/a/b/` are the same dir.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in data_dir.components() {
        for &b in c.as_os_str().as_bytes().iter().chain(b"/") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{node}.{h:016x}")
}

/// A name usable as one path component.
fn component(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')).then_some(s)
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// The calling process's own freezer cgroup directory.
fn own_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "freezer")
            .then(|| path.to_string())
    })?;
    Some(Path::new(FREEZER).join(path.trim_start_matches('/')))
}

/// The processes in the cgroup at `dir`.
fn members(dir: &Path) -> Vec<Pid> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// Freezes the cgroup at `dir`, SIGKILLs every member, thaws it, until it
/// is empty or `deadline` passes. Returns the pids killed.
fn freeze_and_kill(dir: &Path, deadline: Instant) -> Vec<Pid> {
    let mut killed = Vec::new();
    loop {
        let _ = write(&dir.join("freezer.state"), "FROZEN");
        // FREEZING until every task stopped; a short wait at most.
        let frozen_by = Instant::now() + Duration::from_millis(500);
        while Instant::now() < frozen_by {
            match std::fs::read_to_string(dir.join("freezer.state")) {
                Ok(s) if s.trim() == "FROZEN" => break,
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
        let procs = members(dir);
        for &pid in &procs {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed.push(pid);
            }
        }
        let _ = write(&dir.join("freezer.state"), "THAWED");
        if procs.is_empty() || Instant::now() >= deadline {
            return killed;
        }
        // Killed processes leave the cgroup once they are dead.
        std::thread::sleep(Duration::from_micros(500));
    }
}

impl ModuleCgroup {
    /// Creates the cgroup of `module` in `scope` for the shim `shim` and
    /// moves the calling process (the shim, about to fork the module) into
    /// it. `None` where no cgroup can be had (no freezer hierarchy, not
    /// writable, bad names): the shim goes on without.
    pub fn enter(scope: &str, module: &str, shim: u32) -> Option<ModuleCgroup> {
        let (scope, module) = (component(scope)?, component(module)?);
        let dir = Path::new(FREEZER)
            .join(ROOT)
            .join(scope)
            .join(format!("{module}.{shim}"));
        std::fs::create_dir_all(&dir).ok()?;
        if write(&dir.join("cgroup.procs"), &shim.to_string()).is_err() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(ModuleCgroup { dir })
    }

    /// Moves the calling process back to `home` (its cgroup before
    /// [`ModuleCgroup::enter`]), leaving only the module's processes.
    pub fn leave(&self, home: &Path, me: u32) -> std::io::Result<()> {
        write(&home.join("cgroup.procs"), &me.to_string())
    }

    /// Freezes, kills every member, thaws, until empty (at most until
    /// `deadline`). Returns the pids killed.
    pub fn kill_all(&self, deadline: Instant) -> Vec<Pid> {
        freeze_and_kill(&self.dir, deadline)
    }

    /// Removes the (empty) cgroup.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The calling process's freezer cgroup, to come back to after
/// [`ModuleCgroup::enter`].
pub fn home() -> Option<PathBuf> {
    own_cgroup()
}

/// Kills every process left in the module cgroups of `scope` by an
/// earlier run of the agent (a shim killed with SIGKILL leaves its
/// module's cgroup behind), and removes them. Returns the pids killed.
pub fn sweep(scope: &str) -> Vec<u32> {
    let Some(scope) = component(scope) else {
        return Vec::new();
    };
    let base = Path::new(FREEZER).join(ROOT).join(scope);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        killed.extend(
            freeze_and_kill(&dir, deadline)
                .into_iter()
                .map(|p| p.as_raw() as u32),
        );
        // Empty once the killed are gone.
        while !members(&dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        assert_eq!(component("web"), Some("web"));
        let a = scope("n1", Path::new("/var/lib/agent"));
        assert!(a.starts_with("n1.") && a.len() == 3 + 16, "{a}");
        assert_ne!(a, scope("n1", Path::new("/var/lib/agent2")));
        assert_eq!(a, scope("n1", Path::new("/var/lib/agent/")));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert_eq!(component(bad), None, "{bad:?}");
        }
    }
}
