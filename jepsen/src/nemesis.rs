//! The nemesis: a schedule of faults drawn from a seed (so a run can be
//! replayed), and their injection and healing on a running cluster.
//!
//! Faults run one at a time, each for a bounded duration, separated by calm
//! periods. Targets that depend on the moment (the current leader, the node
//! a module runs on) are resolved when the fault starts; the random choices
//! among them are fixed by the schedule.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::history::{FaultKind, Nanos};

pub const ALL_KINDS: [FaultKind; 10] = [
    FaultKind::IsolateLeader,
    FaultKind::RandomHalves,
    FaultKind::MajoritiesRing,
    FaultKind::AgentLeaderCut,
    FaultKind::OneWayCut,
    FaultKind::KillSupervisor,
    FaultKind::KillAgent,
    FaultKind::PauseSupervisor,
    FaultKind::PauseAgent,
    FaultKind::CrashLoop,
];

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Offset from the start of the fault phase.
    pub at: Duration,
    pub kind: FaultKind,
    pub duration: Duration,
    /// Drives the choice of targets when the fault starts.
    pub pick: u64,
}

/// The schedule for `seed` over `length`: every kind appears at least once
/// when `length` allows (the first ten faults are a shuffled round of all
/// kinds), then kinds at random. Each fault lasts 3-7 s and is followed by
/// 2-4 s of calm.
pub fn schedule(seed: u64, length: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut round = ALL_KINDS.to_vec();
    round.shuffle(&mut rng);
    let mut out = vec![];
    let mut t = Duration::from_secs(2);
    loop {
        let kind = if out.len() < round.len() {
            round[out.len()]
        } else {
            ALL_KINDS[rng.gen_range(0..ALL_KINDS.len())]
        };
        let duration = Duration::from_millis(rng.gen_range(3000..7000));
        if t + duration > length {
            return out;
        }
        out.push(Planned {
            at: t,
            kind,
            duration,
            pick: rng.r#gen(),
        });
        t += duration + Duration::from_millis(rng.gen_range(2000..4000));
    }
}

/// A fault in force, with what is needed to heal it and to judge it.
pub struct Active {
    pub kind: FaultKind,
    pub targets: Vec<String>,
    pub start_ns: Nanos,
    /// Hosts whose rules' dropped-packet counts show the cut took effect.
    pub cut_hosts: Vec<String>,
    /// Evidence gathered when the fault started (processes).
    pub evidence: Option<(bool, String)>,
    /// The crash-loop marker to remove at the end.
    pub marker: Option<std::path::PathBuf>,
    /// Whether the crash loop's SIGKILL reached the running copy.
    pub killed: Option<(bool, String)>,
}

impl Active {
    /// The module a crash-loop fault targets.
    pub fn module(&self) -> Option<String> {
        (self.kind == FaultKind::CrashLoop)
            .then(|| self.targets.first()?.split('@').next().map(str::to_string))
            .flatten()
    }
}

/// The current leader's host name (`s<id>`), if a supervisor names one.
pub async fn leader(c: &Cluster) -> Option<String> {
    for s in &c.supervisors {
        if let Ok(v) = c.admin_of(s, Duration::from_secs(1)).cluster().await
            && let Some(l) = v.leader
        {
            return Some(format!("s{l}"));
        }
    }
    None
}

fn cut(c: &Cluster, a: &str, b: &str, active: &mut Active) -> Result<()> {
    c.net.cut(a, b)?;
    for h in [a, b] {
        if !active.cut_hosts.iter().any(|x| x == h) {
            active.cut_hosts.push(h.to_string());
        }
    }
    Ok(())
}

fn pick<'a>(rng: &mut StdRng, from: &'a [String]) -> &'a String {
    &from[rng.gen_range(0..from.len())]
}

/// Starts `p` on the cluster. `running` lists `(module, node, pid)` of
/// modules the ledger shows running now (for crash loops).
pub async fn start(
    c: &mut Cluster,
    p: &Planned,
    running: &[(String, String, u32)],
    crash_dir: &Path,
    now: Nanos,
) -> Result<Active> {
    let mut rng = StdRng::seed_from_u64(p.pick);
    let sups = c.supervisors.clone();
    let agents = c.agents.clone();
    let all: Vec<String> = sups.iter().chain(&agents).cloned().collect();
    let leader = match leader(c).await {
        Some(l) => l,
        None => pick(&mut rng, &sups).clone(),
    };
    let mut active = Active {
        kind: p.kind,
        targets: vec![],
        start_ns: now,
        cut_hosts: vec![],
        evidence: None,
        marker: None,
        killed: None,
    };
    match p.kind {
        FaultKind::IsolateLeader => {
            for h in all.iter().filter(|h| **h != leader) {
                cut(c, &leader, h, &mut active)?;
            }
            active.targets = vec![leader];
        }
        FaultKind::RandomHalves => {
            let mut hosts = all.clone();
            hosts.shuffle(&mut rng);
            let (a, b) = hosts.split_at(hosts.len() / 2);
            for x in a {
                for y in b {
                    cut(c, x, y, &mut active)?;
                }
            }
            active.targets = vec![a.join("+"), b.join("+")];
        }
        FaultKind::MajoritiesRing => {
            // With three supervisors a ring is the full mesh, so the
            // smallest case of "every node sees a majority, each a
            // different one": one bridge supervisor, the link between the
            // other two cut. The bridge is a follower, so the leader loses
            // one follower that still sees the bridge. Agents keep every
            // link.
            let mut s: Vec<String> = sups.iter().filter(|x| **x != leader).cloned().collect();
            s.shuffle(&mut rng);
            let bridge = s.remove(0);
            s.push(leader.clone());
            s.insert(0, bridge.clone());
            for (i, x) in s.iter().enumerate().skip(1) {
                for y in s.iter().skip(i + 1) {
                    cut(c, x, y, &mut active)?;
                }
            }
            active.targets = vec![format!("bridge {bridge}")];
            active.targets.extend(s.into_iter().skip(1));
        }
        FaultKind::AgentLeaderCut => {
            for a in &agents {
                cut(c, &leader, a, &mut active)?;
            }
            active.targets = vec![leader];
        }
        FaultKind::OneWayCut => {
            // From the leader to another host, or from an agent to the leader.
            let (from, to) = if rng.gen_bool(0.5) {
                let others: Vec<String> = all.iter().filter(|h| **h != leader).cloned().collect();
                (leader.clone(), pick(&mut rng, &others).clone())
            } else {
                (pick(&mut rng, &agents).clone(), leader.clone())
            };
            c.net.cut_one_way(&from, &to)?;
            active.cut_hosts.push(to.clone());
            active.targets = vec![format!("{from}->{to}")];
        }
        FaultKind::KillSupervisor | FaultKind::PauseSupervisor => {
            let target = if rng.gen_bool(0.5) {
                leader
            } else {
                pick(&mut rng, &sups).clone()
            };
            active.evidence = Some(if p.kind == FaultKind::KillSupervisor {
                c.kill(&target)?
            } else {
                c.pause(&target).await?
            });
            active.targets = vec![target];
        }
        FaultKind::KillAgent | FaultKind::PauseAgent => {
            let target = pick(&mut rng, &agents).clone();
            active.evidence = Some(if p.kind == FaultKind::KillAgent {
                c.kill(&target)?
            } else {
                c.pause(&target).await?
            });
            active.targets = vec![target];
        }
        FaultKind::CrashLoop => {
            if running.is_empty() {
                active.evidence = Some((false, "no module was running".into()));
            } else {
                let (module, node, pid) = &running[rng.gen_range(0..running.len())];
                let marker = crash_dir.join(format!("{module}@{node}"));
                std::fs::write(&marker, "")?;
                active.marker = Some(marker);
                // Its running copy crashes now; restarts on that node fail.
                let killed = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                active.killed = Some((killed.is_ok(), format!("{killed:?}")));
                active.targets = vec![format!("{module}@{node}")];
            }
        }
    }
    Ok(active)
}

/// Ends `a`: heals the network and the processes. Returns whether it took
/// effect and the evidence. `ledger(target, since)` counts, for the crash
/// loop's `module@node`, the ledger's crash records on that node and the
/// alive records on other nodes since the fault started: the module either
/// crashed at start there or was driven to another node.
pub fn stop(
    c: &mut Cluster,
    a: &Active,
    ledger: impl Fn(&str, Nanos) -> (usize, usize),
) -> Result<(bool, String)> {
    let mut dropped = 0;
    let mut per_host = vec![];
    for h in &a.cut_hosts {
        let n = c.net.dropped(h)?;
        dropped += n;
        per_host.push(format!("{h}:{n}"));
    }
    c.net.heal()?;
    let touched = c.heal_processes()?;
    if let Some(m) = &a.marker {
        let _ = std::fs::remove_file(m);
    }
    Ok(match a.kind {
        FaultKind::IsolateLeader
        | FaultKind::RandomHalves
        | FaultKind::MajoritiesRing
        | FaultKind::AgentLeaderCut
        | FaultKind::OneWayCut => (
            dropped > 0,
            format!("{dropped} packets dropped ({})", per_host.join(" ")),
        ),
        FaultKind::KillSupervisor
        | FaultKind::KillAgent
        | FaultKind::PauseSupervisor
        | FaultKind::PauseAgent => {
            let (ok, what) = a.evidence.clone().unwrap_or((false, "no evidence".into()));
            (ok, format!("{what}; then {}", touched.join(", ")))
        }
        FaultKind::CrashLoop => match &a.evidence {
            Some(e) => e.clone(),
            None => {
                let target = a.targets.first().cloned().unwrap_or_default();
                let (crashed, elsewhere) = ledger(&target, a.start_ns);
                let (killed, how) = a.killed.clone().unwrap_or((false, "not killed".into()));
                (
                    killed && (crashed > 0 || elsewhere > 0),
                    format!(
                        "running copy SIGKILLed: {how}; {crashed} crashes of {target} at start, {elsewhere} alive records on other nodes since"
                    ),
                )
            }
        },
    })
}
