//! Crash test: a child process appends entries and saves votes, printing
//! each one as soon as the store acknowledges it; the test SIGKILLs the child
//! at a random moment, reopens the store, and checks that every
//! acknowledged entry and the last acknowledged vote are there. The kill
//! comes at a random moment after the child's first real acknowledgement,
//! so every run checks something.
//!
//! The child is this same test binary, re-run with `crash_child` selected
//! and `RAFT_STORE_CRASH_DIR` set. `RAFT_STORE_CRASH_SEED` replays one run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorageExt;
use openraft::{RaftLogReader, Vote, storage::RaftLogStorage};
use raft_store::Store;
use rand::{Rng, SeedableRng, rngs::StdRng};
use testkit::kv::{Kv, KvConfig, entry};

const DIR_ENV: &str = "RAFT_STORE_CRASH_DIR";
const SEED_ENV: &str = "RAFT_STORE_CRASH_SEED";

/// The child: appends batches forever, reporting acknowledgements on stdout.
#[test]
#[ignore = "run by crash_loses_nothing_acknowledged as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let (mut log, _sm) = Store::open::<KvConfig, Kv>(std::path::Path::new(&dir)).expect("open");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next = 1u64;
        let mut term = 1u64;
        loop {
            let n = rng.gen_range(1..=32);
            let batch: Vec<_> = (next..next + n).map(|i| entry(term, i)).collect();
            log.blocking_append(batch).await.expect("append");
            next += n;
            println!("ack {}", next - 1);
            if rng.gen_ratio(1, 8) {
                term += 1;
                log.save_vote(&Vote::new(term, 1)).await.expect("vote");
                println!("vote {term}");
            }
        }
    });
}

fn run_once(seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = StdRng::seed_from_u64(seed);
    let kill_after = Duration::from_millis(rng.gen_range(50..600));
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Wait for the first acknowledgement, then kill at a random moment.
    let mut last_ack = 0u64;
    let mut last_vote = 0u64;
    let handle = |line: String, last_ack: &mut u64, last_vote: &mut u64| {
        if let Some(n) = line.strip_prefix("ack ") {
            *last_ack = n.parse().expect("ack index");
        } else if let Some(t) = line.strip_prefix("vote ") {
            *last_vote = t.parse().expect("vote term");
        }
    };
    // The child's first lines are libtest's own ("running 1 test"): only an
    // `ack` line is a first acknowledgement, and the kill timer starts there.
    let first_deadline = Instant::now() + Duration::from_secs(120);
    while last_ack == 0 {
        let line = rx
            .recv_timeout(first_deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("seed {seed}: child never acknowledged an append ({e})"));
        handle(line, &mut last_ack, &mut last_vote);
    }
    let deadline = Instant::now() + kill_after;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        handle(line, &mut last_ack, &mut last_vote);
        if Instant::now() >= deadline {
            break;
        }
    }
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    // Lines already written before the kill are acknowledgements too.
    reader.join().expect("reader thread");
    while let Ok(line) = rx.try_recv() {
        handle(line, &mut last_ack, &mut last_vote);
    }
    assert!(
        last_ack > 0,
        "seed {seed}: the first acknowledgement was seen"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("reopen after crash");
        let state = log.get_log_state().await.expect("log state");
        let last = state.last_log_id.expect("entries survived").index;
        assert!(last >= last_ack, "seed {seed}: acknowledged {last_ack}, found only up to {last}");
        let entries = log.try_get_log_entries(1..=last_ack).await.expect("read back");
        assert_eq!(entries.len() as u64, last_ack, "seed {seed}: missing acknowledged entries");
        for e in &entries {
            let expected = entry(e.log_id.leader_id.term, e.log_id.index);
            assert_eq!(e.payload, expected.payload, "seed {seed}: entry {} differs", e.log_id.index);
        }
        let vote = log.read_vote().await.expect("read vote");
        if last_vote > 0 {
            let vote = vote.expect("acknowledged vote lost");
            assert!(vote.leader_id.term >= last_vote, "seed {seed}: vote {vote:?} older than {last_vote}");
        }
        println!("seed {seed}: killed after {kill_after:?}; {last_ack} acknowledged, {last} on disk, vote term {last_vote}");
    });
}

#[test]
fn crash_loses_nothing_acknowledged() {
    let base: u64 = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("RAFT_STORE_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    };
    let runs = if std::env::var(SEED_ENV).is_ok() {
        1
    } else {
        5
    };
    for seed in base..base + runs {
        println!("crash run with {SEED_ENV}={seed}");
        run_once(seed);
    }
}
