//! Hosts with their own network stacks: one Linux network namespace per
//! host, each joined by a veth pair to a bridge in the harness's namespace,
//! and partitions as iptables rules inside the hosts.
//!
//! The harness runs inside its own network, mount and PID namespaces (see
//! `enter_private_namespaces`), so the bridge, the namespaces and every
//! process started in them vanish with it, even when it is killed.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bridge's subnet; the harness itself (depmgr, clients) is `.254`.
pub const SUBNET: &str = "10.77.0";
pub const HARNESS_IP: &str = "10.77.0.254";
const BRIDGE: &str = "jbr0";
/// Marks our rules so that counting and flushing touch nothing else.
const RULE_TAG: &str = "jepsen";

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host: a namespace named like the host, with one address.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ip: String,
}

/// The hosts of one run, on one bridge.
#[derive(Debug)]
pub struct Net {
    pub hosts: Vec<Host>,
}

impl Net {
    /// Creates the bridge (with the harness's address) and one namespace per
    /// `(name, last address byte)`. Removes leftovers of an earlier run in
    /// this same namespace first.
    pub fn create(hosts: &[(&str, u8)]) -> Result<Net> {
        let _ = Net::teardown_names(hosts.iter().map(|(n, _)| *n));
        run("ip", &["link", "set", "lo", "up"])?;
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{HARNESS_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        let mut net = Net { hosts: vec![] };
        for (name, byte) in hosts {
            let ip = format!("{SUBNET}.{byte}");
            let veth = format!("v-{name}");
            run("ip", &["netns", "add", name])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", name,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", BRIDGE, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    name,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", name, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", name, "link", "set", "lo", "up"])?;
            net.hosts.push(Host {
                name: name.to_string(),
                ip,
            });
        }
        Ok(net)
    }

    fn teardown_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
        for n in names {
            let _ = run("ip", &["netns", "del", n]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
        Ok(())
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))
    }

    pub fn ip(&self, name: &str) -> Result<String> {
        Ok(self.host(name)?.ip.clone())
    }

    /// What runs a program inside `host`'s namespace when put before it
    /// (the process is the program itself: `ip netns exec` execs it).
    pub fn exec_prefix(&self, host: &str) -> [String; 4] {
        ["ip", "netns", "exec", host].map(str::to_string)
    }

    fn iptables(&self, host: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", host, "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Drops every packet from `from` arriving at `to` (one direction).
    pub fn cut_one_way(&self, from: &str, to: &str) -> Result<()> {
        let src = self.ip(from)?;
        self.iptables(
            to,
            &[
                "-A",
                "INPUT",
                "-s",
                &src,
                "-j",
                "DROP",
                "-m",
                "comment",
                "--comment",
                RULE_TAG,
            ],
        )?;
        Ok(())
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: &str, b: &str) -> Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Packets our rules dropped in `host` so far.
    pub fn dropped(&self, host: &str) -> Result<u64> {
        let out = self.iptables(host, &["-L", "INPUT", "-v", "-x", "-n"])?;
        Ok(out
            .lines()
            .filter(|l| l.contains(RULE_TAG))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    /// Removes every rule in every host; the packets they dropped, per host.
    pub fn heal(&self) -> Result<Vec<(String, u64)>> {
        let mut counts = vec![];
        for h in &self.hosts {
            let n = self.dropped(&h.name)?;
            self.iptables(&h.name, &["-F", "INPUT"])?;
            if n > 0 {
                counts.push((h.name.clone(), n));
            }
        }
        Ok(counts)
    }

    /// Deletes the namespaces and the bridge.
    pub fn teardown(&self) {
        let _ = Net::teardown_names(self.hosts.iter().map(|h| h.name.as_str()));
    }
}

/// Environment variable set once the harness runs in its private namespaces.
pub const INNER_ENV: &str = "JEPSEN_INNER";

/// Re-runs this program inside new network, mount and PID namespaces
/// (`unshare`), with a private `/run/netns`, and returns its exit code.
/// Inside, this program runs as the namespace's init: it starts the harness
/// as its child, reaps every orphan, and exits with the harness's status;
/// when init exits, the kernel kills everything left in the namespace.
pub fn reexec_in_private_namespaces() -> Result<i32> {
    let exe = std::env::current_exe().context("finding this program")?;
    let script = format!(
        "mount --make-rprivate / && mkdir -p /run/netns && mount -t tmpfs jepsen-netns /run/netns && exec {} \"$@\"",
        shell_quote(&exe.display().to_string())
    );
    let status = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--",
            "sh",
            "-c",
            &script,
            "jepsen",
        ])
        .args(std::env::args().skip(1))
        .env(INNER_ENV, "init")
        .status()
        .context("running unshare (util-linux) to enter private namespaces; the harness must run as root")?;
    Ok(status.code().unwrap_or(1))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// As PID 1 of the private namespace: run the harness as a child and reap
/// orphans until it exits; its exit code.
pub fn run_as_init() -> Result<i32> {
    use nix::sys::wait::{WaitStatus, waitpid};
    let exe = std::env::current_exe().context("finding this program")?;
    let child = Command::new(exe)
        .args(std::env::args().skip(1))
        .env(INNER_ENV, "harness")
        .spawn()
        .context("starting the harness")?;
    let harness = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == harness => return Ok(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == harness => {
                return Ok(128 + sig as i32);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("waiting for the harness: {e}"),
        }
    }
}
