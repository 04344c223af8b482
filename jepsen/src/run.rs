//! One run of the harness for one seed: hosts, cluster, workload, nemesis,
//! heal, observation, checkers, and the files it leaves behind
//! (`history.jsonl`, `summary.json`, `logs/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::admin::ModuleView;
use crate::checker::{self, Bounds, Report};
use crate::cluster::Cluster;
use crate::history::{
    Alive, Crash, Fault, FaultKind, ModuleSeen, Nanos, Observation, OpKind, Outcome, Record,
    ReplicaView, now_ns,
};
use crate::nemesis;
use crate::netns::Net;
use crate::workload;

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Length of the fault phase.
    pub length: Duration,
    pub dir: PathBuf,
    pub bins: PathBuf,
    pub clients: u32,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub length_s: u64,
    /// `kind/outcome` → count.
    pub ops: BTreeMap<String, usize>,
    /// fault kind → (injected, took effect).
    pub faults: BTreeMap<String, (usize, usize)>,
    pub alive_records: usize,
    pub crash_records: usize,
    pub violations: BTreeMap<String, usize>,
    pub converge_ms: Option<u64>,
    pub report: Report,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.report.violations.is_empty()
    }
}

const HOSTS: [(&str, u8); 6] = [
    ("s1", 11),
    ("s2", 12),
    ("s3", 13),
    ("a1", 21),
    ("a2", 22),
    ("a3", 23),
];

/// Parses the probes' ledger.
pub fn read_ledger(path: &Path) -> (Vec<Alive>, Vec<Crash>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut alive = vec![];
    let mut crash = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["alive", m, n, e, pid, at] => {
                if let (Ok(epoch), Ok(pid), Ok(at_ns)) = (e.parse(), pid.parse(), at.parse()) {
                    alive.push(Alive {
                        module: m.to_string(),
                        node: n.to_string(),
                        epoch,
                        pid,
                        at_ns,
                    });
                }
            }
            ["crash", m, n, e, at] => {
                if let (Ok(epoch), Ok(at_ns)) = (e.parse(), at.parse()) {
                    crash.push(Crash {
                        module: m.to_string(),
                        node: n.to_string(),
                        epoch,
                        at_ns,
                    });
                }
            }
            _ => {}
        }
    }
    (alive, crash)
}

/// `(module, node, pid)` of copies that wrote in the last 300 ms.
fn running_now(alive: &[Alive], now: Nanos) -> Vec<(String, String, u32)> {
    let mut latest: BTreeMap<u32, &Alive> = BTreeMap::new();
    for a in alive.iter().filter(|a| a.at_ns + 300_000_000 > now) {
        latest.insert(a.pid, a);
    }
    latest
        .values()
        .map(|a| (a.module.clone(), a.node.clone(), a.pid))
        .collect()
}

fn write_package(dir: &Path, bins: &Path, ledger: &Path, crash_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let manifest = format!(
        "name = \"{}\"\nversion = \"1.0.0\"\ncommand = \"{}\"\n\n[env]\nPROBE_LEDGER = \"{}\"\nPROBE_CRASH_DIR = \"{}\"\n",
        workload::PACKAGE,
        bins.join("probe-module").display(),
        ledger.display(),
        crash_dir.display()
    );
    std::fs::write(dir.join("manifest.toml"), manifest)?;
    Ok(())
}

async fn observe(c: &Cluster) -> Observation {
    let at_ns = now_ns();
    let mut replicas = vec![];
    for s in &c.supervisors {
        let admin = c.admin_of(s, Duration::from_secs(1));
        let id: u64 = s[1..].parse().unwrap_or(0);
        let (leader, last_applied) = match admin.cluster().await {
            Ok(v) => (v.leader, v.last_applied),
            Err(_) => (None, 0),
        };
        let modules = match admin.get::<Vec<ModuleView>>("/v1/modules?stale=true").await {
            Ok(ms) => {
                let mut v: Vec<ModuleSeen> = ms
                    .into_iter()
                    .map(|m| ModuleSeen {
                        name: m.name,
                        node: m.node,
                        epoch: m.epoch,
                        state: m.state,
                    })
                    .collect();
                v.sort();
                v
            }
            Err(_) => vec![],
        };
        replicas.push(ReplicaView {
            id,
            leader,
            last_applied,
            modules,
        });
    }
    Observation { at_ns, replicas }
}

/// Runs one seed. Errors are harness failures (the cluster could not be
/// set up); violations are in the summary.
pub async fn run(cfg: &RunConfig) -> Result<Summary> {
    let bounds = Bounds::default();
    std::fs::create_dir_all(&cfg.dir)?;
    let ledger = cfg.dir.join("ledger.log");
    let crash_dir = cfg.dir.join("crash");
    std::fs::create_dir_all(&crash_dir)?;
    let net = Net::create(&HOSTS).context("creating the network namespaces")?;
    let mut c = Cluster::start(&cfg.bins, &cfg.dir, net).await?;
    let pkg = cfg.dir.join("package");
    write_package(&pkg, &cfg.bins, &ledger, &crash_dir)?;
    depmgr::client::Client::with_tls(
        &c.depmgr_url(),
        depmgr::client::Timeouts::default(),
        Some(&c.certs.operator()),
    )?
    .push_dir(&pkg)
    .await
    .context("pushing the probe package")?;

    let shared = Arc::new(Mutex::new(workload::Shared::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..cfg.clients)
        .map(|i| {
            tokio::spawn(workload::client(
                i,
                cfg.seed,
                c.supervisor_addrs(),
                Some(c.certs.operator()),
                shared.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Warm-up: faults start once the clients' first modules run.
    let warm = Instant::now() + Duration::from_secs(30);
    while Instant::now() < warm {
        let (alive, _) = read_ledger(&ledger);
        let running = running_now(&alive, now_ns());
        if running.len() >= workload::MIN_LIVE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let schedule = nemesis::schedule(cfg.seed, cfg.length);
    let began = Instant::now();
    let mut faults = vec![];
    for (id, p) in schedule.iter().enumerate() {
        tokio::time::sleep_until((began + p.at).into()).await;
        let (alive, _) = read_ledger(&ledger);
        // Crash-loop candidates: running copies of modules no client will
        // remove while the fault lasts (they are protected until its end).
        // After a partition none may run yet: wait up to 5 s for one.
        let mut alive = alive;
        let wait_until = Instant::now() + Duration::from_secs(5);
        let running = loop {
            let running: Vec<_> = {
                let s = shared.lock().expect("shared state");
                running_now(&alive, now_ns())
                    .into_iter()
                    .filter(|(m, _, _)| s.modules.iter().any(|x| x.0 == *m && !x.1 && x.2))
                    .collect()
            };
            if p.kind != FaultKind::CrashLoop || !running.is_empty() || Instant::now() > wait_until
            {
                break running;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            alive = read_ledger(&ledger).0;
        };
        let active = nemesis::start(&mut c, p, &running, &crash_dir, now_ns())
            .await
            .with_context(|| format!("starting fault {id} ({:?})", p.kind))?;
        if let Some(m) = active.module() {
            shared.lock().expect("shared state").protected.insert(m);
        }
        println!(
            "  {:>5.1}s fault {id}: {:?} {:?} for {:.1}s",
            began.elapsed().as_secs_f64(),
            p.kind,
            active.targets,
            p.duration.as_secs_f64()
        );
        tokio::time::sleep(p.duration).await;
        let (alive, crashes) = read_ledger(&ledger);
        let (took_effect, evidence) = nemesis::stop(&mut c, &active, |target, since| {
            let (module, node) = target.split_once('@').unwrap_or((target, ""));
            let crashed = crashes
                .iter()
                .filter(|x| x.module == module && x.node == node && x.at_ns >= since)
                .count();
            let elsewhere = alive
                .iter()
                .filter(|x| x.module == module && x.node != node && x.at_ns >= since)
                .count();
            (crashed, elsewhere)
        })?;
        shared.lock().expect("shared state").protected.clear();
        faults.push(Fault {
            id: id as u32,
            kind: active.kind,
            targets: active.targets.clone(),
            start_ns: active.start_ns,
            end_ns: now_ns(),
            took_effect,
            evidence,
        });
    }
    tokio::time::sleep_until((began + cfg.length).into()).await;
    // The final heal (every fault was healed at its end; this makes sure).
    c.net.heal()?;
    c.heal_processes()?;
    for e in std::fs::read_dir(&crash_dir)? {
        let _ = std::fs::remove_file(e?.path());
    }
    let healed_ns = now_ns();
    stop.cancel();
    for h in clients {
        let _ = h.await;
    }
    println!(
        "  {:>5.1}s healed; observing",
        began.elapsed().as_secs_f64()
    );

    // Observe until converged and stable for 5 s, or the bound has passed.
    let mut observations = vec![];
    let deadline =
        Instant::now() + Duration::from_nanos(bounds.converge_within_ns) + Duration::from_secs(5);
    let base: Vec<Record> = {
        let s = shared.lock().expect("shared state");
        s.ops.clone()
    };
    let assemble = |observations: &[Observation]| -> Vec<Record> {
        let (alive, crashes) = read_ledger(&ledger);
        let mut records = base.clone();
        records.extend(faults.iter().cloned().map(Record::Fault));
        records.push(Record::Healed { at_ns: healed_ns });
        records.extend(observations.iter().cloned().map(Record::Observation));
        records.extend(alive.into_iter().map(Record::Alive));
        records.extend(crashes.into_iter().map(Record::Crash));
        records
    };
    loop {
        observations.push(observe(&c).await);
        if Instant::now() > deadline {
            break;
        }
        let report = checker::check_all(&assemble(&observations), &bounds);
        if let Some(conv) = report.converge_ns
            && now_ns().saturating_sub(healed_ns + conv) > 5_000_000_000
            && !report.violations.iter().any(|v| v.checker == "convergence")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The cluster's own account, for whoever investigates a violation.
    if let Ok(events) = c.admin(Duration::from_secs(5)).events(0).await {
        std::fs::write(
            cfg.dir.join("events.json"),
            serde_json::to_string_pretty(&events)?,
        )?;
    }
    c.kill_all();
    let records = assemble(&observations);
    let report = checker::check_all(&records, &bounds);

    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(cfg.dir.join("history.jsonl"), text)?;

    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut fault_counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut alive_records, mut crash_records) = (0, 0);
    for r in &records {
        match r {
            Record::Op(op) => {
                let kind = match op.kind {
                    OpKind::Deploy { .. } => "deploy",
                    OpKind::Remove => "remove",
                    OpKind::Read => "read",
                };
                let outcome = match op.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Fail => "fail",
                    Outcome::Unknown => "unknown",
                };
                *ops.entry(format!("{kind}/{outcome}")).or_default() += 1;
            }
            Record::Fault(f) => {
                let e = fault_counts.entry(kind_name(f.kind)).or_default();
                e.0 += 1;
                e.1 += usize::from(f.took_effect);
            }
            Record::Alive(_) => alive_records += 1,
            Record::Crash(_) => crash_records += 1,
            _ => {}
        }
    }
    let mut violations: BTreeMap<String, usize> = BTreeMap::new();
    for v in &report.violations {
        *violations.entry(v.checker.to_string()).or_default() += 1;
    }
    let summary = Summary {
        seed: cfg.seed,
        length_s: cfg.length.as_secs(),
        ops,
        faults: fault_counts,
        alive_records,
        crash_records,
        violations,
        converge_ms: report.converge_ns.map(|n| n / 1_000_000),
        report,
    };
    std::fs::write(
        cfg.dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}

pub fn kind_name(k: FaultKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{k:?}"))
}
