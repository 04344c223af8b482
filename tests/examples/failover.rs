//! Leader failover, measured: SIGKILL the supervisor leader, then time
//! (a) until every agent has had a heartbeat accepted by the new leader,
//! and (b) until the new leader has committed a restore order for a module
//! whose process was SIGKILLed at the same moment.
//!
//! The cluster is what `supctl dev` runs: 3 supervisors, depmgr and 3
//! agents, release binaries, mutual TLS, every flag at its default (the
//! supervisors' and the agents'), on loopback. Each trial waits for a
//! steady cluster (every replica ready, every agent accepted by the
//! leader, the module running), sleeps a random 0-300 ms (so the kill
//! falls anywhere in the heartbeat cycles), SIGKILLs the leader and the
//! module's process, polls every agent's `GET /v1/status` every 5 ms until
//! each names a leader other than the dead one, reads the `restore_ordered`
//! event's leader timestamp (`at_ms`, the same machine's wall clock) for
//! (b), and starts the killed replica again on its data dir.
//!
//! Build everything first, then run (prints one line per trial and a
//! summary):
//!
//! ```text
//! cargo build --release --workspace --bins --examples
//! <target>/release/examples/failover [trials]        # default 20
//! ```
//!
//! Extra supervisor flags can be given in `FAILOVER_SUPERVISOR_FLAGS`
//! (space-separated), e.g. `--election-timeout-ms 600` for the old default.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use testkit::supervisors::Supervisors;
use testkit::{Certs, ProcessSet, Program, free_addr};
use tls::Role;

const AGENTS: [&str; 3] = ["a", "b", "c"];
const MODULE: &str = "victim";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`testkit::poll::poll_until`], an error naming `what` on timeout.
async fn wait<T, F, Fut>(what: &str, timeout: Duration, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match testkit::poll::poll_until(timeout, f).await {
        Some(v) => Ok(v),
        None => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

struct Cluster {
    _procs: ProcessSet,
    sups: Supervisors,
    agents: BTreeMap<String, String>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn agent_status(&self, node: &str) -> Option<serde_json::Value> {
        self.http
            .get(format!("https://{}/v1/status", self.agents[node]))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The address each agent last had a heartbeat accepted by.
    async fn agent_leaders(&self) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        for node in self.agents.keys() {
            let leader = self
                .agent_status(node)
                .await
                .and_then(|s| s["leader"].as_str().map(str::to_string));
            out.insert(node.clone(), leader);
        }
        out
    }

    async fn module_pid(&self) -> Option<(String, u64)> {
        for node in self.agents.keys() {
            let status = self.agent_status(node).await?;
            for m in status["modules"].as_array().into_iter().flatten() {
                if m["name"] == MODULE && m["state"] == "running" {
                    return Some((node.clone(), m["pid"].as_u64()?));
                }
            }
        }
        None
    }

    async fn ready(&self, i: usize) -> bool {
        let url = format!("https://{}/ready", self.sups.addrs[i]);
        matches!(
            self.http.get(url).timeout(Duration::from_millis(500)).send().await,
            Ok(r) if r.status().is_success()
        )
    }
}

async fn start() -> Result<Cluster> {
    let bins =
        testkit::bins::find_dir(&["supervisor", "agent", "depmgr"]).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let certs = Arc::new(Certs::init(&dir.path().join("ca")));
    let mut procs = ProcessSet::new(dir.path().join("logs"));
    let depmgr_addr = free_addr();
    let depmgr_url = format!("https://{depmgr_addr}");
    procs.spawn(
        "depmgr",
        Program::new(bins.join("depmgr"))
            .args(["--listen", &depmgr_addr])
            .arg("--data-dir")
            .arg(dir.path().join("depmgr"))
            .args(certs.flags(Role::Depmgr, "depmgr"))
            .env("RUST_LOG", "warn"),
    )?;
    let extra: Vec<String> = std::env::var("FAILOVER_SUPERVISOR_FLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // No test defaults: the binaries' own.
    let sups =
        Supervisors::spawn_in_tls(dir.path(), 3, &depmgr_url, &[], &extra, Some(certs.clone()));
    let mut agents = BTreeMap::new();
    for node in AGENTS {
        let addr = free_addr();
        procs.spawn(
            &format!("agent-{node}"),
            Program::new(bins.join("agent"))
                .args(["--node", node, "--listen", &addr])
                .arg("--data-dir")
                .arg(dir.path().join(format!("agent-{node}")))
                .args(["--supervisors", &sups.addrs.join(",")])
                .args(["--label", &format!("zone={node}")])
                .args(certs.flags(Role::Agent, node))
                .env("RUST_LOG", "warn"),
        )?;
        agents.insert(node.to_string(), addr);
    }
    let operator = certs.operator();
    let http =
        tls::client::http_builder(Some(&operator), &[Role::Agent, Role::Supervisor]).build()?;
    let c = Cluster {
        _procs: procs,
        sups,
        agents,
        http,
        _dir: dir,
    };
    c.sups.wait_leader(Duration::from_secs(30)).await;
    let admin = c.sups.client();
    wait("three ready nodes", Duration::from_secs(60), || async {
        let nodes = admin.nodes().await.ok()?;
        (nodes.iter().filter(|n| n.status == "ready").count() == 3).then_some(())
    })
    .await?;
    // The module: `sleep`, restored in place after every crash.
    let pkg = c._dir.path().join("victim-package");
    std::fs::create_dir_all(&pkg)?;
    std::fs::write(
        pkg.join("manifest.toml"),
        "name = \"victim\"\nversion = \"1.0.0\"\ncommand = \"/bin/sleep\"\nargs = [\"1000000\"]\n",
    )?;
    let packages = depmgr::client::Client::with_tls(
        &depmgr_url,
        depmgr::client::Timeouts::default(),
        Some(&operator),
    )?;
    wait("depmgr", Duration::from_secs(30), || async {
        packages.push_dir(&pkg).await.ok()
    })
    .await?;
    let spec = serde_json::json!({
        "name": MODULE,
        "package": {"name": "victim", "version": "1.0.0"},
        "restart": {"attempts": 100, "backoff_ms": 0, "min_healthy_ms": 300},
    });
    admin.deploy(&spec).await.context("deploying the module")?;
    Ok(c)
}

#[derive(Debug)]
struct Trial {
    elected_ms: u64,
    accepted_ms: BTreeMap<String, u64>,
    restore_ms: Option<u64>,
}

async fn trial(c: &mut Cluster, n: usize) -> Result<Trial> {
    // Steady: one leader, every replica ready, every agent on the leader,
    // the module running.
    let leader = c.sups.wait_leader(Duration::from_secs(30)).await;
    let leader_addr = c.sups.addrs[leader].clone();
    let admin = c.sups.client();
    wait("a steady cluster", Duration::from_secs(60), || async {
        for i in 0..3 {
            if !c.ready(i).await {
                return None;
            }
        }
        let leaders = c.agent_leaders().await;
        leaders
            .values()
            .all(|l| l.as_deref() == Some(leader_addr.as_str()))
            .then_some(())
    })
    .await?;
    let (node, pid) = wait("the module running", Duration::from_secs(60), || async {
        let m = admin.module(MODULE).await.ok()?;
        if m.state != "running" {
            return None;
        }
        c.module_pid().await
    })
    .await?;
    let last_event = admin.events(0).await?.last().map_or(0, |e| e.index);
    // Anywhere in the heartbeat cycles.
    let jitter = (wall_ms() * 7919 + n as u64 * 104_729) % 300;
    tokio::time::sleep(Duration::from_millis(jitter)).await;

    let t0 = Instant::now();
    let t0_wall = wall_ms();
    c.sups.kill(leader);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );

    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    let mut elected_ms = None;
    let deadline = t0 + Duration::from_secs(30);
    while accepted.len() < AGENTS.len() || elected_ms.is_none() {
        if Instant::now() > deadline {
            bail!("trial {n}: no new leader accepted by every agent within 30 s: {accepted:?}");
        }
        let leaders = c.agent_leaders().await;
        let now = t0.elapsed().as_millis() as u64;
        for (node, l) in leaders {
            if let Some(l) = l
                && l != leader_addr
            {
                accepted.entry(node).or_insert(now);
            }
        }
        if elected_ms.is_none() {
            for i in (0..3).filter(|i| *i != leader) {
                if let Some(v) = c.sups.view(i).await
                    && v.leader.is_some_and(|l| l != c.sups.ids[leader])
                {
                    elected_ms = Some(t0.elapsed().as_millis() as u64);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restore_ms = wait("restore_ordered", Duration::from_secs(30), || async {
        let events = admin.events(last_event).await.ok()?;
        events
            .iter()
            .find(|e| e.kind == "restore_ordered" && e.module.as_deref() == Some(MODULE))
            .map(|e| e.at_ms.saturating_sub(t0_wall))
    })
    .await
    .ok();
    c.sups.restart(leader);
    let t = Trial {
        elected_ms: elected_ms.unwrap_or(0),
        accepted_ms: accepted,
        restore_ms,
    };
    println!(
        "trial {n:2}: killed s{} (module on {node}); new leader seen by a replica after {} ms; accepted by agents {:?} ms; restore ordered after {} ms",
        c.sups.ids[leader],
        t.elected_ms,
        t.accepted_ms,
        t.restore_ms.map_or("-".into(), |r| r.to_string()),
    );
    Ok(t)
}

impl Trial {
    fn all_accepted(&self) -> u64 {
        self.accepted_ms.values().copied().max().unwrap_or(0)
    }
}

/// The `p`-th percentile (nearest rank) of `v`.
fn pct(v: &[u64], p: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<()> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let mut c = start().await?;
    let mut results = Vec::new();
    for n in 1..=trials {
        results.push(trial(&mut c, n).await?);
    }
    let elected: Vec<u64> = results.iter().map(|t| t.elected_ms).collect();
    let all: Vec<u64> = results.iter().map(Trial::all_accepted).collect();
    let restore: Vec<u64> = results.iter().filter_map(|t| t.restore_ms).collect();
    println!();
    println!("{trials} trials (p99 by nearest rank: with 20 trials, the largest)");
    println!(
        "SIGKILL leader -> a replica names a new leader: p50 {} ms, p99 {} ms, max {} ms",
        pct(&elected, 50.0),
        pct(&elected, 99.0),
        pct(&elected, 100.0)
    );
    println!(
        "SIGKILL leader -> new leader accepted by every agent: p50 {} ms, p99 {} ms, max {} ms",
        pct(&all, 50.0),
        pct(&all, 99.0),
        pct(&all, 100.0)
    );
    if restore.is_empty() {
        println!("SIGKILL leader -> crash restore-ordered by the new leader: no restore seen");
    } else {
        println!(
            "SIGKILL leader -> crash restore-ordered by the new leader: p50 {} ms, p99 {} ms, max {} ms ({} of {trials} trials)",
            pct(&restore, 50.0),
            pct(&restore, 99.0),
            pct(&restore, 100.0),
            restore.len()
        );
    }
    Ok(())
}
