//! Log append throughput and latency with sync on, against the raw fsync
//! rate of the same disk, measured in the same run.
//!
//! `cargo bench -p raft-store --bench append` (optional args: seconds per
//! case, default 3; data dir, default a temp dir under $TMPDIR).

use std::io::{Seek, Write};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorageExt;
use raft_store::Store;
use testkit::kv::{Kv, KvConfig, entry};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, entries: u64, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<32} {:>10.0} entries/s   p50 {:>8.3} ms   p99 {:>8.3} ms   ({} calls)",
        entries as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
}

/// The physical reference: 128-byte writes, each followed by fdatasync,
/// into a growing file and into a preallocated one (as RocksDB's WAL is).
fn raw_fsync(dir: &std::path::Path, budget: Duration) {
    for preallocated in [false, true] {
        let path = dir.join(format!("raw-fsync-{preallocated}"));
        let mut f = std::fs::File::create(&path).expect("create");
        if preallocated {
            f.write_all(&vec![0u8; 64 << 20]).expect("preallocate");
            f.sync_all().expect("sync");
            f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        }
        let record = [7u8; 128];
        let mut lat = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget {
            let t = Instant::now();
            f.write_all(&record).expect("write");
            f.sync_data().expect("fdatasync");
            lat.push(t.elapsed());
        }
        let n = lat.len() as u64;
        let name = if preallocated {
            "raw fdatasync, preallocated"
        } else {
            "raw fdatasync, growing file"
        };
        report(name, n, start.elapsed(), lat);
        drop(f);
        let _ = std::fs::remove_file(&path);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(3);
    let budget = Duration::from_secs(secs);
    let base = match args.get(1) {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    println!("data dir {} ({}s per case)", base.path().display(), secs);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    raw_fsync(base.path(), budget);
    for batch in [1u64, 16, 256] {
        let dir = tempfile::tempdir_in(base.path()).expect("dir");
        let (mut log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open");
        let mut next = 1u64;
        let mut lat = Vec::new();
        let start = Instant::now();
        rt.block_on(async {
            while start.elapsed() < budget {
                let entries: Vec<_> = (next..next + batch).map(|i| entry(1, i)).collect();
                let t = Instant::now();
                log.blocking_append(entries).await.expect("append");
                lat.push(t.elapsed());
                next += batch;
            }
        });
        report(
            &format!("append batch {batch}"),
            next - 1,
            start.elapsed(),
            lat,
        );
    }

    // Eight appenders at once, one entry each: group commit shares syncs.
    let dir = tempfile::tempdir_in(base.path()).expect("dir");
    let (log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open");
    let start = Instant::now();
    let lat = rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let mut log = log.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0;
                    while start.elapsed() < budget {
                        let t0 = Instant::now();
                        log.blocking_append([entry(1, t * 10_000_000 + i + 1)])
                            .await
                            .expect("append");
                        lat.push(t0.elapsed());
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let n = lat.len() as u64;
    report("append batch 1, 8 concurrent", n, start.elapsed(), lat);
    println!("  WAL syncs: {} for {n} appends", log.sync_count());
}
