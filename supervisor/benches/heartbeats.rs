//! Heartbeat ingest, crash-to-restore latency and a failure storm, measured
//! against a real 3-replica cluster on loopback with simulated agents.
//!
//! `cargo bench -p supervisor --bench heartbeats` (env: BENCH_AGENTS,
//! default 200; BENCH_MODULES per agent, default 64; BENCH_SECS, default 10;
//! BENCH_CONNS concurrent heartbeat senders, default 16; BENCH_TLS `both`
//! (default), `on` or `off`; BENCH_STREAM `both` (default), `on` or `off`).
//!
//! Heartbeats go as frames on each agent's stream (`GET /v1/agent/stream`,
//! upgraded) or as `POST /v1/agent/heartbeat` requests: with
//! BENCH_STREAM=both the ingest phase runs both ways, requests first, and
//! the later phases use the stream; `on`/`off` use one way throughout.
//!
//! With `both`, the whole bench runs twice in the same process, first in
//! plaintext, then with mutual TLS (a CA, a supervisor certificate per
//! replica, an agent certificate per simulated agent), and ends with the
//! cost of TLS side by side. Each simulated agent has its own client and
//! so its own persistent connection, as real agents do, in both modes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::heartbeat::{
    Directive, Heartbeat, HeartbeatReply, ModuleStatus, ModuleTable, PackedStatuses, ReplyOutcome,
    TableEntry,
};
use testkit::Certs;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::procstat::cpu_ticks;
use testkit::spec::ModuleSpec;
use testkit::supervisors::Supervisors;
use tls::frames::{self, Kind};
use tls::{Identity, Role, Tls, TlsFiles};
use tokio::io::BufStream;
use tokio::sync::Mutex;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A simulated agent driven by the bench (not on a timer), with its own
/// client (its own connection; with TLS, its own certificate).
struct SimAgent {
    http: reqwest::Client,
    /// Heartbeats on the stream (else requests).
    use_stream: bool,
    stream: Option<BufStream<reqwest::Upgraded>>,
    node: String,
    seq: u64,
    table_version: u64,
    acked: u64,
    modules: Vec<(TableEntry, ModuleStatus)>,
}

impl SimAgent {
    fn heartbeat(&mut self) -> Heartbeat {
        self.seq += 1;
        Heartbeat {
            node: self.node.clone(),
            incarnation: 1,
            seq: self.seq,
            table_version: self.table_version,
            table: (self.acked != self.table_version).then(|| ModuleTable {
                addr: format!("{}:1", self.node),
                labels: BTreeMap::new(),
                modules: self.modules.iter().map(|(e, _)| e.clone()).collect(),
                cluster: 0,
            }),
            statuses: PackedStatuses::pack(
                &self.modules.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            ),
            reports: vec![],
        }
    }

    /// Takes a reply: acknowledgement and directives (installs and restores
    /// succeed at once). Returns whether a restore was among them.
    fn take(&mut self, reply: HeartbeatReply) -> bool {
        let mut restored = false;
        if let ReplyOutcome::Accepted { table_version, .. } = reply.outcome {
            self.acked = if reply.need_table { 0 } else { table_version };
        }
        for d in reply.directives {
            match d {
                Directive::Install(i) => {
                    self.modules.retain(|(e, _)| e.module != i.module);
                    self.modules.push((
                        TableEntry {
                            module: i.module,
                            epoch: i.epoch,
                            restore_seq: 0,
                        },
                        ModuleStatus::Running,
                    ));
                }
                Directive::Restore(r) => {
                    for (e, s) in &mut self.modules {
                        if e.module == r.module {
                            e.restore_seq = r.seq;
                            *s = ModuleStatus::Running;
                            restored = true;
                        }
                    }
                }
                Directive::Stop(s) => self.modules.retain(|(e, _)| e.module != s.module),
                // This fake has no cache: nothing to pre-stage.
                Directive::Prefetch(_) => continue,
            }
            self.table_version += 1;
        }
        restored
    }
}

impl SimAgent {
    /// One heartbeat to `addr` (the leader's base URL, `http://` or
    /// `https://`), on the agent's stream (opened when needed) or as a
    /// request.
    async fn send(&mut self, addr: &str, hb: &Heartbeat) -> Option<HeartbeatReply> {
        let body = proto::encode(hb).ok()?;
        if !self.use_stream {
            let resp = self
                .http
                .post(format!("{addr}/v1/agent/heartbeat"))
                .timeout(Duration::from_secs(5))
                .body(body)
                .send()
                .await
                .ok()?;
            return proto::decode(&resp.bytes().await.ok()?).ok();
        }
        if self.stream.is_none() {
            let resp = self
                .http
                .get(format!("{addr}{}", frames::PATH))
                .header(reqwest::header::CONNECTION, "upgrade")
                .header(reqwest::header::UPGRADE, frames::PROTOCOL)
                .send()
                .await
                .ok()?;
            if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
                return None;
            }
            self.stream = Some(BufStream::new(resp.upgrade().await.ok()?));
        }
        let io = self.stream.as_mut()?;
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            frames::write(io, Kind::Heartbeat, &body).await.ok()?;
            match frames::read(io, 64 << 20).await {
                Ok(Some((Kind::Reply, b))) => proto::decode(&b).ok(),
                _ => None,
            }
        })
        .await
        .ok()
        .flatten();
        if reply.is_none() {
            self.stream = None;
        }
        reply
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

type Agents = Arc<Vec<Mutex<SimAgent>>>;

/// Every agent heartbeats once (concurrently, `conns` at a time).
async fn round(addr: &str, agents: &Agents, conns: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, agents, next) = (addr.to_string(), agents.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(agent) = agents.get(i) else { break };
                    let mut a = agent.lock().await;
                    let hb = a.heartbeat();
                    if let Some(r) = a.send(&addr, &hb).await {
                        a.take(r);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Every agent heartbeats as fast as the leader answers, `conns` at a time,
/// for `secs`: heartbeats a second, and the leader's CPU in % of a core.
async fn ingest(addr: &str, agents: &Agents, conns: usize, secs: u64, pid: u32) -> (f64, f64) {
    let cpu0 = cpu_ticks(pid);
    let start = Instant::now();
    let count = Arc::new(AtomicU64::new(0));
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|w| {
            let (addr, agents, count) = (addr.to_string(), agents.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < deadline {
                    let mut a = agents[i % agents.len()].lock().await;
                    let hb = a.heartbeat();
                    if let Some(r) = a.send(&addr, &hb).await {
                        a.take(r);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    i += conns;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
    (
        count.load(Ordering::Relaxed) as f64 / elapsed,
        cpu / elapsed * 100.0,
    )
}

/// The figures of one run, for the side-by-side comparison.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    reference: f64,
    /// Heartbeats a second on streams (or as requests with BENCH_STREAM=off).
    ingest: f64,
    /// As requests (0 with BENCH_STREAM=on).
    ingest_unary: f64,
    leader_cpu: f64,
    p50: f64,
    p99: f64,
    max: f64,
    storm_secs: f64,
}

/// A client of the supervisors as `role/name` (with TLS: its certificate,
/// issued now by the CA in `certs`, by the code `supctl ca issue` runs),
/// keeping up to `pool` idle connections.
fn client(certs: Option<&Certs>, role: Role, name: &str, pool: usize) -> reqwest::Client {
    let tls = certs.map(|c| issue(c.dir(), role, name));
    tls::client::http_builder(tls.as_ref(), &[Role::Supervisor])
        .pool_max_idle_per_host(pool)
        .build()
        .expect("client")
}

fn issue(dir: &Path, role: Role, name: &str) -> Arc<Tls> {
    let id = Identity::new(role, name).expect("identity");
    let cert = tls::ca::issue(dir, &id, &[], 30).expect("issue");
    Tls::load(TlsFiles {
        ca: tls::ca::ca_cert_path(dir),
        cert,
        key: tls::ca::key_path(dir, name),
    })
    .expect("load")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_agents = env("BENCH_AGENTS", 200) as usize;
    let n_modules = env("BENCH_MODULES", 64) as usize;
    let secs = env("BENCH_SECS", 10);
    let conns = env("BENCH_CONNS", 16) as usize;
    let ways: &[bool] = match std::env::var("BENCH_STREAM").as_deref().unwrap_or("both") {
        "on" => &[true],
        "off" => &[false],
        "both" => &[false, true],
        other => panic!("BENCH_STREAM={other:?}: use both, on or off"),
    };
    let mode = std::env::var("BENCH_TLS").unwrap_or_else(|_| "both".into());
    let modes: &[bool] = match mode.as_str() {
        "on" => &[true],
        "off" => &[false],
        "both" => &[false, true],
        other => panic!("BENCH_TLS={other:?}: use both, on or off"),
    };
    println!(
        "{n_agents} simulated agents x {n_modules} modules, {conns} concurrent senders, {secs}s per phase"
    );
    let mut all = Vec::new();
    for &tls in modes {
        println!();
        println!("=== {} ===", if tls { "mutual TLS" } else { "plaintext" });
        all.push((tls, run(tls, n_agents, n_modules, secs, conns, ways).await));
    }
    if let [(false, plain), (true, tls)] = all.as_slice() {
        let cost = |a: f64, b: f64| (b - a) / a * 100.0;
        println!();
        println!("TLS against plaintext, same run:");
        println!(
            "  reference GET /health: {:.0} -> {:.0} req/s ({:+.1}%)",
            plain.reference,
            tls.reference,
            cost(plain.reference, tls.reference)
        );
        if plain.ingest_unary > 0.0 {
            println!(
                "  ingest as requests: {:.0} -> {:.0} heartbeats/s ({:+.1}%)",
                plain.ingest_unary,
                tls.ingest_unary,
                cost(plain.ingest_unary, tls.ingest_unary)
            );
        }
        println!(
            "  ingest: {:.0} -> {:.0} heartbeats/s ({:+.1}%); leader CPU {:.0}% -> {:.0}% of one core",
            plain.ingest,
            tls.ingest,
            cost(plain.ingest, tls.ingest),
            plain.leader_cpu,
            tls.leader_cpu
        );
        println!(
            "  crash-to-restore p50 {:.2} -> {:.2} ms, p99 {:.2} -> {:.2} ms, max {:.2} -> {:.2} ms",
            plain.p50, tls.p50, plain.p99, tls.p99, plain.max, tls.max
        );
        println!(
            "  storm: {:.2} -> {:.2} s",
            plain.storm_secs, tls.storm_secs
        );
    }
}

async fn run(
    tls: bool,
    n_agents: usize,
    n_modules: usize,
    secs: u64,
    conns: usize,
    ways: &[bool],
) -> Figures {
    let mut figures = Figures::default();
    let certs = tls.then(|| Arc::new(Certs::new()));
    let depmgr = match &certs {
        Some(c) => FakeDepmgr::any_package_tls(c.load(Role::Depmgr, "depmgr")).await,
        None => FakeDepmgr::any_package().await,
    };
    let cluster = Supervisors::start_tls(
        3,
        &depmgr.url,
        &["--heartbeat-ttl-ms", "30000", "--lease-ms", "30000"],
        certs.clone(),
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let addr = format!("{}://{}", cluster.scheme(), cluster.addrs[leader]);
    let http = client(certs.as_deref(), Role::Operator, "bench", conns * 2);
    let agents: Agents = Arc::new(
        (0..n_agents)
            .map(|i| {
                let node = format!("n{i:04}");
                Mutex::new(SimAgent {
                    http: client(certs.as_deref(), Role::Agent, &node, 2),
                    use_stream: *ways.last().expect("a way"),
                    stream: None,
                    node,
                    seq: 0,
                    table_version: 1,
                    acked: 0,
                    modules: vec![],
                })
            })
            .collect(),
    );

    // Register every node, deploy every module pinned to its node, install.
    let admin = cluster.client_of(leader);
    eventually("every node registered", Duration::from_secs(60), || async {
        round(&addr, &agents, conns).await;
        (admin.nodes().await.ok()?.len() == n_agents).then_some(())
    })
    .await;
    let t0 = Instant::now();
    let total = n_agents * n_modules;
    let next = Arc::new(AtomicU64::new(0));
    let deployers: Vec<_> = (0..32)
        .map(|_| {
            let (admin, next) = (admin.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= total {
                        break;
                    }
                    let spec = ModuleSpec::new(&format!("m{i:06}"))
                        .package("web", "1.0.0")
                        .restart(3, 0, 0)
                        .node(Some(&format!("n{:04}", i / n_modules)))
                        .json();
                    admin.deploy(&spec).await.expect("deploy");
                }
            })
        })
        .collect();
    for d in deployers {
        d.await.expect("deployer");
    }
    println!(
        "deployed {total} modules in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    eventually(
        "every module installed",
        Duration::from_secs(600),
        || async {
            round(&addr, &agents, conns).await;
            let mut installed = 0;
            for a in agents.iter() {
                installed += a.lock().await.modules.len();
            }
            (installed == total).then_some(())
        },
    )
    .await;
    let admin_all = cluster.client();
    eventually("every module running", Duration::from_secs(600), || async {
        round(&addr, &agents, conns).await;
        let m = admin_all.modules().await.ok()?;
        m.iter().all(|m| m.state == "running").then_some(())
    })
    .await;
    println!(
        "all {total} modules running after {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Reference, same run: the HTTP ceiling of this machine for the same
    // client and server stack, `GET /health` on the leader in a closed loop.
    figures.reference = testkit::reference::get_rate(
        &http,
        &format!("{addr}/health"),
        conns,
        Duration::from_secs(secs.min(5)),
    )
    .await;
    println!(
        "reference: GET /health {:.0} requests/s ({conns} connections of one client, same server)",
        figures.reference
    );
    // Phase 1: steady-state ingest, closed loop, each way asked for.
    let term_before = cluster.view(leader).await.expect("view").term;
    let pid = cluster.pid(leader).expect("leader pid");
    let hb_size = proto::encode(&agents[0].lock().await.heartbeat())
        .expect("encode")
        .len();
    for &on_stream in ways {
        for a in agents.iter() {
            a.lock().await.use_stream = on_stream;
        }
        let (rate, cpu) = ingest(&addr, &agents, conns, secs, pid).await;
        let term_after = cluster.view(leader).await.expect("view").term;
        println!(
            "ingest {}: {rate:.0} heartbeats/s ({:.2}x GET /health; {hb_size} bytes each); leader CPU {cpu:.0}% of one core; term {term_before} -> {term_after}",
            if on_stream {
                "on streams (frames)"
            } else {
                "as requests (POST)"
            },
            rate / figures.reference,
        );
        if on_stream {
            figures.ingest = rate;
            figures.leader_cpu = cpu;
        } else {
            figures.ingest_unary = rate;
        }
    }

    // Phase 2: crash-to-restore latency, one module at a time, while the
    // other agents keep heartbeating in the background.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every agent heartbeats once per BENCH_PERIOD_MS (default 300), as
    // real agents do, spread over `conns` senders.
    let period = Duration::from_millis(env("BENCH_PERIOD_MS", 300));
    let sent = Arc::new(AtomicU64::new(0));
    let background: Vec<_> = (0..conns)
        .map(|w| {
            let (addr, agents, stop, sent) =
                (addr.clone(), agents.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let round = Instant::now();
                    for i in (w..agents.len()).step_by(conns) {
                        let mut a = agents[i].lock().await;
                        let hb = a.heartbeat();
                        if let Some(r) = a.send(&addr, &hb).await {
                            a.take(r);
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(period.saturating_sub(round.elapsed())).await;
                }
            })
        })
        .collect();
    let phase2 = Instant::now();
    let mut lat = Vec::new();
    let samples = 200.min(total);
    for k in 0..samples {
        let mut a = agents[(k * 7919) % n_agents].lock().await;
        let pos = k % a.modules.len();
        a.modules[pos].1 = ModuleStatus::Failed;
        let hb = a.heartbeat();
        let t = Instant::now();
        let reply = a.send(&addr, &hb).await.expect("reply");
        let shown = format!(
            "{:?} need_table={} directives={:?}",
            reply.outcome, reply.need_table, reply.directives
        );
        let got = a.take(reply);
        assert!(
            got,
            "sample {k}: the reply to the failing heartbeat carries no restore directive: {shown}"
        );
        lat.push(t.elapsed());
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in background {
        let _ = t.await;
    }
    let rate = sent.load(Ordering::Relaxed) as f64 / phase2.elapsed().as_secs_f64();
    lat.sort();
    figures.p50 = pct(&lat, 0.5);
    figures.p99 = pct(&lat, 0.99);
    figures.max = pct(&lat, 1.0);
    println!(
        "background load during the samples: {rate:.0} heartbeats/s ({n_agents} agents every {period:?})"
    );
    println!(
        "crash-to-restore: heartbeat reporting the failure -> reply carrying the restore directive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        lat.len()
    );

    // Phase 3: a storm: one module fails on every agent at once.
    let metrics = |body: String, name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let scrape = || async {
        http.get(format!("{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let before = scrape().await.expect("metrics");
    let (t0, b0) = (
        metrics(before.clone(), "supervisor_transitions_total"),
        metrics(before, "supervisor_batches_total"),
    );
    for a in agents.iter() {
        let mut a = a.lock().await;
        if let Some(m) = a.modules.last_mut() {
            m.1 = ModuleStatus::Failed;
        }
    }
    let start = Instant::now();
    round(&addr, &agents, conns).await;
    let storm = start.elapsed().as_secs_f64();
    figures.storm_secs = storm;
    let after = scrape().await.expect("metrics");
    let (t1, b1) = (
        metrics(after.clone(), "supervisor_transitions_total"),
        metrics(after, "supervisor_batches_total"),
    );
    println!(
        "storm: {n_agents} modules failed at once; every failing heartbeat answered with its restore in {storm:.2}s; {} transitions in {} log entries ({:.0} transitions/s, {:.1} per entry)",
        t1 - t0,
        b1 - b0,
        (t1 - t0) as f64 / storm,
        (t1 - t0) as f64 / (b1 - b0).max(1) as f64
    );
    let m = scrape().await.expect("metrics");
    let passes = metrics(m.clone(), "supervisor_control_passes_total").max(1);
    println!(
        "control loop: {passes} passes, mean {:.2} ms each, of which planning {:.2} ms",
        metrics(m.clone(), "supervisor_control_pass_micros_total") as f64 / passes as f64 / 1e3,
        metrics(m, "supervisor_plan_micros_total") as f64 / passes as f64 / 1e3
    );
    let term_end = cluster.view(leader).await.expect("view").term;
    println!(
        "term at the end: {term_end} (no election during the bench: {})",
        term_end == term_before
    );
    figures
}
