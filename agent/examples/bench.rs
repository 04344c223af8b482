//! Agent overhead benchmark (not a test).
//!
//! Starts the real `agent` binary (built by cargo as a sibling of this
//! example) against an in-process fake supervisor and fake depmgr,
//! installs N idle modules, then measures:
//! 1. the agent's CPU (utime+stime from /proc) and resident memory while
//!    it supervises them idle at the given heartbeat period;
//! 2. module exit → heartbeat latency: a module is killed (SIGKILL) and the
//!    fake supervisor timestamps the arrival of the first heartbeat that
//!    shows it failed; the module is then restored and the next one killed.
//!
//! Run: `cargo build --release -p agent --bins --examples && \
//!       target/release/examples/bench [modules] [heartbeat_ms] [idle_secs] [kills]`
//! (defaults 100 200 30 200; the target dir is wherever cargo puts it).

use std::time::{Duration, Instant};

use proto::heartbeat::ModuleStatus;
use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::{install, restore};
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::FakeSupervisor;
use testkit::package::PackageBuilder;
use testkit::process::signal;
use testkit::procstat::{cpu_ticks, status_kib};

/// /proc reports CPU times in USER_HZ, 100 on Linux.
const USER_HZ: f64 = 100.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let modules = *args.first().unwrap_or(&100) as usize;
    let heartbeat_ms = *args.get(1).unwrap_or(&200);
    let idle_secs = *args.get(2).unwrap_or(&30);
    let kills = *args.get(3).unwrap_or(&200) as usize;

    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = FakeSupervisor::start().await;
    let pkgs = FakeDepmgr::start().await;
    let pkg = PackageBuilder::new("idle", "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", "#!/bin/sh\nexec sleep 100000\n", 0o755)
        .build();
    pkgs.put(&pkg);
    let names: Vec<String> = (0..modules).map(|i| format!("m{i:03}")).collect();
    sup.set_directives(
        names
            .iter()
            .map(|n| install(n, 1, Fencing::AtLeastOne, &[&pkg], &pkgs.url))
            .collect(),
    );

    let data = tmp.path().join("data");
    let mut args = AgentArgs::new(&data, &sup.addr);
    args.node = "bench";
    args.heartbeat_ms = heartbeat_ms;
    // Stopped on drop, so a failing run leaves no agent behind.
    let mut agent = AgentProc::spawn(args);
    agent.ready().await;
    let pid = agent.pid();
    let listen = agent.listen.clone();

    let t = Instant::now();
    eventually("all modules running", Duration::from_secs(120), || async {
        names
            .iter()
            .all(|n| {
                sup.module(n)
                    .is_some_and(|s| s.status == ModuleStatus::Running)
            })
            .then_some(())
    })
    .await;
    println!(
        "{modules} modules installed and running in {:?}",
        t.elapsed()
    );
    // Like the leader, stop repeating directives once they took effect.
    sup.set_directives(vec![]);
    // Settle, then measure idle overhead.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let beats0 = sup.beat_count();
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu1 = cpu_ticks(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let beats = sup.beat_count() - beats0;
    let cpu_pct = (cpu1 - cpu0) as f64 / USER_HZ / elapsed * 100.0;
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "idle: {modules} modules, heartbeat {heartbeat_ms} ms, {elapsed:.1} s: CPU {cpu_pct:.2}% of one core, \
         RSS {:.1} MiB (peak {:.1} MiB), {beats} heartbeats ({:.1}/s)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        beats as f64 / elapsed
    );

    // Exit → heartbeat latency.
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(kills);
    for i in 0..kills {
        let name = &names[i % modules];
        let status: serde_json::Value = client
            .get(format!("http://{listen}/v1/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        let m = status["modules"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == name.as_str()).cloned())
            .expect("module in status");
        let mpid = m["pid"].as_u64().expect("pid") as u32;
        let seq = m["restore_seq"].as_u64().unwrap_or(0) as u32 + 1;
        let from = sup.beat_count();
        let killed = Instant::now();
        signal(mpid, nix::sys::signal::Signal::SIGKILL);
        let beat = eventually("failure heartbeat", Duration::from_secs(10), || async {
            sup.first_beat_with(from, name, ModuleStatus::Failed)
        })
        .await;
        latencies.push(beat.at.duration_since(killed));
        sup.send_once(restore(name, 1, seq));
        eventually("restored", Duration::from_secs(10), || async {
            sup.module(name)
                .filter(|s| s.status == ModuleStatus::Running && s.restore_seq == seq)
        })
        .await;
    }
    latencies.sort();
    println!(
        "exit -> heartbeat arrival over {kills} kills: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!(
        "agent after the kills: RSS {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0
    );

    let t = Instant::now();
    let code = agent.terminate(Duration::from_secs(30)).await;
    println!("shutdown with {modules} modules: {:?}, {code}", t.elapsed());
}
