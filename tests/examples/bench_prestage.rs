//! Failover time with a large configuration package: pre-staged on the
//! failover node versus fetched from depmgr at failover, in the same run.
//!
//! Two whole clusters of the real release binaries run side by side on
//! loopback (3 supervisors, depmgr and agents `a`, `b`, `c` each, mutual
//! TLS, the tests' fast timing flags): one with `--prestage false`
//! (fetched at failover), one with pre-staging on (the default). Rounds
//! alternate between them. Each round, in each cluster:
//! 1. a fresh package (a new random payload of `MIB` MiB, so a new digest
//!    no node holds yet) is pushed, and a module of it with
//!    `restart.attempts = 1` (the least a spec may say; backoff 100 ms) is
//!    deployed on `a` and runs;
//! 2. with pre-staging: wait for its `package_prestaged` event (the node
//!    its failover would go to has the package in its cache);
//! 3. the module is made to fail at start on `a` (the test module's
//!    marker), and its process is killed (SIGKILL): the one restore in
//!    place fails, the module fails over. The figure is the time from the
//!    kill to the start of the new process on the failover node (the
//!    module script appends a line to a marker file as its first act;
//!    polled every 2 ms): failure seen, the restore on `a` (backoff, start,
//!    exit seen), failover placed and committed,
//!    package retrieved (metadata), install directive, archive from the
//!    cache or from depmgr, verified, unpacked, process started;
//! 4. the module is removed (every node's load is back to 0).
//!
//! Usage (binaries first, as for the whole-cluster tests):
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p cluster-tests --example bench_prestage -- [ROUNDS] [MIB]
//! ```
//! (defaults: 5 rounds, 50 MiB).

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_tests::{Options, TestCluster, spec, test_package};
use proto::record::EventKind;
use testkit::eventually;

const T: Duration = Duration::from_secs(120);

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

/// `mib` MiB of incompressible bytes, different for every `seed`.
fn write_payload(path: &Path, seed: u64, mib: u64) {
    use std::io::Write;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("payload"));
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf).expect("write payload");
    }
    f.flush().expect("flush");
}

fn starts(c: &TestCluster, module: &str) -> Vec<String> {
    c.starts(module)
        .into_iter()
        .map(|(node, _, _)| node)
        .collect()
}

struct Round {
    ms: f64,
    to: String,
    prestaged_on: Option<String>,
}

async fn round(c: &TestCluster, name: &str, seed: u64, mib: u64, prestage: bool) -> Round {
    let dir = c.dir.path().join(format!("pkg-{name}"));
    test_package(&dir, name, &c.markers());
    write_payload(&dir.join("payload.bin"), seed, mib);
    c.push_package(&dir).await;
    c.admin()
        .deploy(&spec(name, Some("a"), 1, 2))
        .await
        .expect("deploy");
    c.wait_module(name, "running on a", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("a")
    })
    .await;
    let prestaged_on = if prestage {
        Some(
            eventually("package_prestaged", T, || async {
                c.events_of(name).await.into_iter().find_map(|e| {
                    (e.event_kind() == Some(EventKind::PackagePrestaged))
                        .then_some(e.node)
                        .flatten()
                })
            })
            .await,
        )
    } else {
        None
    };
    let pid: u32 = eventually("the module's pid", T, || async {
        let s = c.agent_status("a").await?;
        let m = s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name && m["state"] == "running")?
            .clone();
        m["pid"].as_u64().map(|p| p as u32)
    })
    .await;
    let before = starts(c, name).len();
    c.set_failing("a", true);
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let to = loop {
        if let Some(node) = starts(c, name).get(before) {
            break node.clone();
        }
        assert!(killed.elapsed() < T, "no failover within {T:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let ms = killed.elapsed().as_secs_f64() * 1000.0;
    c.set_failing("a", false);
    c.admin().remove(name).await.expect("remove");
    eventually("removed", T, || async {
        c.running_copies(name).await.is_empty().then_some(())
    })
    .await;
    Round {
        ms,
        to,
        prestaged_on,
    }
}

fn summary(label: &str, ms: &mut [f64]) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    println!(
        "| {label} | {} | {median:.0} | {:.0} | {:.0} |",
        ms.len(),
        ms[0],
        ms[ms.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = arg(1, 5);
    let mib = arg(2, 50);
    let cold = TestCluster::start(Options {
        supervisor_flags: vec!["--prestage".into(), "false".into()],
        ..Options::default()
    })
    .await;
    let warm = TestCluster::start(Options::default()).await;
    let (mut fetched, mut prestaged) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        for (c, pre) in [(&cold, false), (&warm, true)] {
            let name = format!("m{i}");
            let r = round(c, &name, i * 2 + u64::from(pre) + 1, mib, pre).await;
            let mode = if pre {
                "pre-staged"
            } else {
                "fetched at failover"
            };
            println!(
                "round {i}: {mode}: kill -> new process on {} in {:.0} ms{}",
                r.to,
                r.ms,
                r.prestaged_on
                    .as_ref()
                    .map(|n| format!(" (pre-staged on {n})"))
                    .unwrap_or_default()
            );
            if let Some(n) = &r.prestaged_on {
                assert_eq!(
                    n, &r.to,
                    "the failover went elsewhere than the pre-staged node"
                );
            }
            if pre {
                prestaged.push(r.ms);
            } else {
                fetched.push(r.ms);
            }
        }
    }
    println!();
    println!("package: {mib} MiB payload (incompressible), kill -> new process started, ms");
    println!("| mode | rounds | median | min | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    summary("fetched at failover", &mut fetched);
    summary("pre-staged", &mut prestaged);
}
