//! `fleetsim`: a simulated fleet against a real supervisor cluster.
//!
//! Starts three replicas of the release `supervisor` binary (RocksDB, mutual
//! TLS unless `--insecure`) and a fake depmgr, then `--agents` simulated
//! nodes, each running the agent's own heartbeat loop
//! (`agent::heartbeat::run`: its targets, leader search, table
//! acknowledgement and lease renewal) with its own client, connection and
//! certificate, over [`node::SimNode`] (modules without processes). Then,
//! phase by phase:
//!
//! 1. deploys `--agents` x `--modules` modules, each pinned to its node,
//!    and waits until every node holds its modules;
//! 2. holds the fleet for `--secs` while `--crash-rate` modules a second
//!    fail at random, printing a line every `--sample-secs`;
//! 3. a storm: `--storm` modules fail at once;
//! 4. node loss: `--lose-nodes` nodes stop heartbeating; their modules
//!    move to other nodes;
//! 5. catch-up: a fourth replica joins (`POST /v1/cluster/members`) while
//!    the fleet heartbeats.
//!
//! Before the fleet starts it measures a same-run reference: `GET /health`
//! on the idle leader in a closed loop (16 connections, 3 s), the HTTP
//! ceiling of this machine for the product's server stack.
//!
//! It prints heartbeats offered and handled per second, heartbeat and
//! crash-to-restore-order latencies (p50/p99/p99.9), each replica's CPU and
//! resident memory, elections, snapshots built (size, time), storm and
//! node-loss completion times and the catch-up time. A phase that does not
//! finish within its bound is reported as such and the run goes on.
//!
//! Needs the release binaries: `cargo build --release --workspace --bins`.

mod node;
mod report;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use testkit::Certs;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::spec::ModuleSpec;
use testkit::supervisors::Supervisors;
use tls::Role;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::{SimNode, Stats};
use crate::report::{Cluster, Sampler, pct_line};

#[derive(Debug, Parser)]
#[command(about = "A simulated fleet of agents against a real 3-replica supervisor cluster")]
struct Args {
    /// Simulated agents (nodes), each with its own connection.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Modules per agent.
    #[arg(long, default_value_t = 100)]
    modules: usize,
    /// Heartbeat period of every agent, ms.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// How long the fleet is held (crashes injected), seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Module crashes a second across the fleet while it is held.
    #[arg(long, default_value_t = 20.0)]
    crash_rate: f64,
    /// Modules failing at once in the storm (0: no storm).
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// Nodes lost at once after the storm (0: none).
    #[arg(long, default_value_t = 10)]
    lose_nodes: usize,
    /// A fourth replica joins at the end and its catch-up is timed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    catch_up: bool,
    /// A line of figures every this many seconds.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Concurrent deploy requests while setting up.
    #[arg(long, default_value_t = 64)]
    deployers: usize,
    /// Heartbeats as frames on one stream per agent (the agent's default),
    /// or `false`: one HTTP request each.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    heartbeat_stream: bool,
    /// Plaintext between everyone (default: mutual TLS).
    #[arg(long)]
    insecure: bool,
    /// `--heartbeat-ttl-ms` of the replicas (default: 5 heartbeat periods).
    #[arg(long)]
    heartbeat_ttl_ms: Option<u64>,
    /// `--lease-ms` of the replicas (default: 10 heartbeat periods).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Further flags for every replica, e.g. `--snapshot-logs=5000`.
    #[arg(long = "supervisor-flag", allow_hyphen_values = true)]
    supervisor_flags: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let args = Args::parse();
    if let Err(e) = testkit::bins::find_dir(&["supervisor"]) {
        eprintln!("fleetsim: {e}");
        std::process::exit(2);
    }
    if args.agents == 0 || args.heartbeat_ms == 0 {
        eprintln!("fleetsim: --agents and --heartbeat-ms must be above 0");
        std::process::exit(2);
    }
    run(args).await;
}

async fn run(args: Args) {
    let period = Duration::from_millis(args.heartbeat_ms);
    let total = args.agents * args.modules;
    println!(
        "fleetsim: {} agents x {} modules = {total} modules, heartbeat every {} ms {}, {}",
        args.agents,
        args.modules,
        args.heartbeat_ms,
        if args.heartbeat_stream {
            "as frames on a stream per agent"
        } else {
            "as one HTTP request each"
        },
        if args.insecure {
            "plaintext"
        } else {
            "mutual TLS"
        }
    );
    raise_open_files();

    // The cluster.
    let certs = (!args.insecure).then(|| Arc::new(Certs::new()));
    let depmgr = match &certs {
        Some(c) => FakeDepmgr::any_package_tls(c.load(Role::Depmgr, "depmgr")).await,
        None => FakeDepmgr::any_package().await,
    };
    let ttl = args.heartbeat_ttl_ms.unwrap_or(5 * args.heartbeat_ms);
    let lease = args.lease_ms.unwrap_or((10 * args.heartbeat_ms).max(1000));
    let mut flags = vec![
        "--heartbeat-ttl-ms".to_string(),
        ttl.to_string(),
        "--lease-ms".into(),
        lease.to_string(),
        "--max-connections".into(),
        (args.agents + 1024).to_string(),
    ];
    flags.extend(args.supervisor_flags.iter().cloned());
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut sups = Supervisors::start_tls(3, &depmgr.url, &flag_refs, certs.clone()).await;
    println!(
        "cluster: 3 replicas (release binaries, RocksDB), flags {}",
        flags.join(" ")
    );
    let cluster = Cluster::new(&sups).await;
    match report::health_ceiling(&sups, certs.as_ref().map(|c| c.operator()), 16, 3).await {
        Ok(reference) => println!(
            "reference, same run: GET /health on the idle leader, closed loop, 16 connections: {reference:.0} requests/s"
        ),
        Err(e) => {
            println!("reference, same run: not measured: building its HTTP client failed: {e}")
        }
    }

    // The fleet: every node its own heartbeat loop, client and certificate,
    // started over one period (as nodes of a real fleet do not start in
    // the same millisecond).
    let stats = Arc::new(Stats::default());
    let t0 = Instant::now();
    let nodes: Vec<SimNode> = (0..args.agents)
        .map(|i| SimNode::new(format!("n{i:05}"), stats.clone()))
        .collect();
    let mut stops = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let settings = agent::heartbeat::HeartbeatSettings {
            supervisors: sups.addrs.clone(),
            period,
            request_timeout: Duration::from_secs(5),
            tls: certs.as_ref().map(|c| c.load(Role::Agent, node.name())),
            stream: args.heartbeat_stream,
        };
        let stop = CancellationToken::new();
        let delay = period.mul_f64(i as f64 / args.agents as f64);
        let (node, token) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            agent::heartbeat::run(node, settings, token).await;
        });
        stops.push(stop);
    }
    println!(
        "{} agents started in {:.1}s (certificates issued)",
        args.agents,
        t0.elapsed().as_secs_f64()
    );
    let registered = cluster
        .wait_gauge(
            "supervisor_nodes",
            ("status", "ready"),
            args.agents as f64,
            Duration::from_secs(120),
        )
        .await;
    println!(
        "{} nodes ready after {:.1}s",
        registered,
        t0.elapsed().as_secs_f64()
    );

    // Deploy every module, pinned to its node.
    let t1 = Instant::now();
    deploy(&sups, args.agents, args.modules, args.deployers).await;
    let deployed = t1.elapsed().as_secs_f64();
    println!(
        "deployed {total} modules in {deployed:.1}s ({:.0}/s, {} connections)",
        total as f64 / deployed,
        args.deployers
    );
    let installed = testkit::poll_until(Duration::from_secs(600), || async {
        (stats.modules.load(Ordering::Relaxed) as usize >= total).then_some(())
    })
    .await;
    println!(
        "{} of {total} modules installed on their nodes after {:.1}s{}",
        stats.modules.load(Ordering::Relaxed),
        t1.elapsed().as_secs_f64(),
        if installed.is_some() {
            ""
        } else {
            " (NOT ALL, gave up after 600 s)"
        }
    );

    // Hold: crashes at a steady rate, a sample line every sample_secs.
    println!();
    println!(
        "hold: {} s, {} crashes/s injected",
        args.secs, args.crash_rate
    );
    stats.heartbeat.take();
    let sampler = Sampler::start(&cluster, &stats).await;
    let term0 = sampler.term();
    let crasher = {
        let (nodes, stop) = (nodes.clone(), CancellationToken::new());
        let rate = args.crash_rate;
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            if rate <= 0.0 {
                return 0u64;
            }
            let gap = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut n = 0u64;
            let mut pick = 0x9e37_79b9_7f4a_7c15u64;
            loop {
                next += gap;
                tokio::select! {
                    _ = token.cancelled() => return n,
                    _ = tokio::time::sleep_until(next) => {}
                }
                // xorshift: a spread of nodes and modules, the same each run.
                pick ^= pick << 13;
                pick ^= pick >> 7;
                pick ^= pick << 17;
                let node = &nodes[(pick % nodes.len() as u64) as usize];
                if node.crash((pick >> 32) as usize) {
                    n += 1;
                }
            }
        });
        (handle, stop)
    };
    let hold_end = Instant::now() + Duration::from_secs(args.secs);
    let mut lines = Vec::new();
    while Instant::now() < hold_end {
        let wait = Duration::from_secs(args.sample_secs).min(hold_end - Instant::now());
        tokio::time::sleep(wait).await;
        let line = sampler.sample(&cluster, &stats).await;
        println!("  {line}");
        lines.push(line);
    }
    crasher.1.cancel();
    let crashes = crasher.0.await.unwrap_or(0);
    let hold = sampler.summary(&cluster, &stats).await;
    println!("hold summary ({crashes} crashes injected):");
    for l in hold.lines() {
        println!("  {l}");
    }
    let restore = stats.crash_to_restore.take();
    println!(
        "  crash-to-restore-order: {}",
        pct_line(&restore, crashes as usize)
    );
    let beats = stats.heartbeat.take();
    println!("  heartbeat round trip: {}", pct_line(&beats, beats.len()));

    // Storm: `storm` modules fail at once, spread over the nodes.
    if args.storm > 0 && total > 0 {
        println!();
        let storm = args.storm.min(total);
        let restores0 = stats.restores.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut failed = 0u64;
        for k in 0..storm {
            if nodes[k % nodes.len()].crash(k / nodes.len()) {
                failed += 1;
            }
        }
        let done = testkit::poll_until(Duration::from_secs(60), || async {
            (stats.restores.load(Ordering::Relaxed) - restores0 >= failed).then_some(())
        })
        .await;
        let took = t.elapsed().as_secs_f64();
        let got = stats.restores.load(Ordering::Relaxed) - restores0;
        let lat = stats.crash_to_restore.take();
        match done {
            Some(()) => println!(
                "storm: {failed} modules failed at once; every restore order out in {took:.2}s ({})",
                pct_line(&lat, lat.len())
            ),
            None => println!(
                "storm: {failed} modules failed at once; only {got} restore orders after {took:.0}s"
            ),
        }
    }

    // Node loss: the first `lose_nodes` nodes stop heartbeating.
    if args.lose_nodes > 0 {
        println!();
        let lost = args.lose_nodes.min(nodes.len().saturating_sub(1));
        let t = Instant::now();
        {
            let mut awaited = stats.awaited.lock().expect("awaited");
            for n in &nodes[..lost] {
                for m in n.module_names() {
                    awaited.insert(m, t);
                }
            }
        }
        let count = stats.awaited.lock().expect("awaited").len();
        for s in &stops[..lost] {
            s.cancel();
        }
        let bound = Duration::from_millis(ttl + lease) * 3 + Duration::from_secs(60);
        let done = testkit::poll_until(bound, || async {
            stats
                .awaited
                .lock()
                .expect("awaited")
                .is_empty()
                .then_some(())
        })
        .await;
        let moved = stats.moved.take();
        match done {
            Some(()) => println!(
                "node loss: {lost} nodes stopped; all {count} of their modules installed elsewhere after {:.2}s (heartbeat TTL {ttl} ms, lease {lease} ms; per module {})",
                t.elapsed().as_secs_f64(),
                pct_line(&moved, moved.len())
            ),
            None => println!(
                "node loss: {lost} nodes stopped; {} of {count} modules installed elsewhere after {:.0}s",
                moved.len(),
                t.elapsed().as_secs_f64()
            ),
        }
    }

    // Catch-up: a fourth replica joins while the fleet heartbeats.
    if args.catch_up {
        println!();
        stats.heartbeat.take();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = stats.heartbeat.take();
        let leader_applied = match cluster.leader_addr().await {
            Some(addr) => cluster.last_applied_at(addr).await.unwrap_or(0),
            None => 0,
        };
        let i = sups.add(4);
        let joining = sups.addrs[i].clone();
        let t = Instant::now();
        let added = cluster.add_member(4, &joining).await;
        let answered = t.elapsed().as_secs_f64();
        let caught_up = testkit::poll_until(Duration::from_secs(300), || async {
            let applied = cluster.last_applied_at(&joining).await?;
            (applied >= leader_applied).then_some(applied)
        })
        .await;
        let took = t.elapsed().as_secs_f64();
        let during = stats.heartbeat.take();
        match added {
            Ok(()) => println!(
                "catch-up: POST /v1/cluster/members answered after {answered:.1}s (learner added, promoted)"
            ),
            Err(e) => {
                println!("catch-up: POST /v1/cluster/members failed after {answered:.1}s: {e}")
            }
        }
        match caught_up {
            Some(applied) => println!(
                "  replica 4 applied index {applied} (the leader's when it joined: {leader_applied}) {took:.1}s after the join began"
            ),
            None => println!(
                "  replica 4 had not applied the leader's index {leader_applied} after {took:.0}s"
            ),
        }
        println!(
            "  heartbeat round trip 5 s before: {}",
            pct_line(&before, before.len())
        );
        println!(
            "  heartbeat round trip while it joined: {}",
            pct_line(&during, during.len())
        );
    }

    println!();
    println!("{}", cluster.snapshots(&sups));
    let term1 = cluster.term().await;
    println!(
        "elections: term {term0} at the start of the hold, {} at the end ({})",
        term1.map_or("unknown".into(), |t| t.to_string()),
        match term1 {
            Some(t) if t == term0 => "none",
            Some(_) => "ELECTIONS HAPPENED",
            None => "no leader at the end",
        }
    );
    println!(
        "lease lapses (an accepted heartbeat sent after the node's lease ran out): {}",
        stats.lease_lapses.load(Ordering::Relaxed)
    );
    if args.heartbeat_stream {
        println!(
            "heartbeat streams opened: {} for {} agents (reopened on leader changes, node loss and broken streams)",
            agent::metrics::METRICS.streams_opened.get(),
            args.agents
        );
    }
    for s in &stops {
        s.cancel();
    }
    for i in 0..sups.ids.len() {
        sups.kill(i);
    }
}

/// Deploys `agents` x `modules` modules (`m<node>-<k>` pinned to its node)
/// over `conns` concurrent requests; panics on a refused deploy.
async fn deploy(sups: &Supervisors, agents: usize, modules: usize, conns: usize) {
    let admin = sups.client();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = agents * modules;
    let tasks: Vec<_> = (0..conns.max(1))
        .map(|_| {
            let (admin, next) = (admin.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let node = format!("n{:05}", i / modules);
                    let spec = ModuleSpec::new(&format!("m{:05}-{}", i / modules, i % modules))
                        .package("web", "1.0.0")
                        .restart(3, 0, 0)
                        .node(Some(&node))
                        .json();
                    let mut tries = 0;
                    while let Err(e) = admin.deploy(&spec).await {
                        tries += 1;
                        assert!(tries < 5, "deploy {i} refused 5 times: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("deployer");
    }
}

/// Each simulated agent holds a connection (and the replicas' clients
/// more): raise the soft open-file limit to the hard one.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
