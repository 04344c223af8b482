//! Faults beyond the network, with real replicas: a replica whose disk
//! fills up stops (exit status 3, one `error` line naming the cause) while
//! the other two keep committing; `/ready` says which replicas can serve
//! linearizable reads.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::spec;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::flags::SUPERVISOR_FLAGS_FAKE_AGENTS;
use testkit::supervisors::{Supervisors, wait_module};

const T: Duration = Duration::from_secs(30);

/// The exit status of a replica whose Raft stopped on a fatal error.
const EXIT_RAFT_STOPPED: i32 = supervisor::server::EXIT_RAFT_STOPPED as i32;

use testkit::tmpfs::Tmpfs;

async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let resp = http.get(format!("http://{addr}{path}")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fills_up_exits_and_the_others_keep_committing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Replica 3's data dir (`<dir>/s3`) on a 16 MiB tmpfs: small enough that
    // RocksDB cannot preallocate its WAL there.
    let tmpfs = match Tmpfs::mount(&tmp.path().join("s3"), "16m") {
        Ok(m) => m,
        Err(why) => {
            println!(
                "SKIPPED a_replica_whose_disk_fills_up_exits_and_the_others_keep_committing: \
                 needs root and permission to mount a tmpfs: {why}"
            );
            return;
        }
    };
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::spawn_in(
        tmp.path(),
        3,
        &depmgr.url,
        &SUPERVISOR_FLAGS_FAKE_AGENTS,
        &[],
    );
    cluster.wait_leader(T).await;
    let c = cluster.client();
    c.deploy(&spec("before", None, 1))
        .await
        .expect("deploy before the fill");
    eventually("replica 3 applied the first deploy", T, || async {
        let v = cluster.client_of(2).module("before").await.ok()?;
        (v.name == "before").then_some(())
    })
    .await;

    tmpfs.fill();
    // Writes to the two healthy replicas (either may lead) until replica 3
    // has to write its log and cannot.
    let healthy = admin_api::AdminClient::new(cluster.addrs[..2].to_vec(), cluster.token())
        .with_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let mut deployed = 0;
    let status = loop {
        assert!(
            started.elapsed() < T,
            "replica 3 still runs {T:?} after its disk filled ({deployed} deploys); log:\n{}",
            cluster.log_tail(2, 40)
        );
        if healthy
            .deploy(&spec(&format!("m{deployed}"), None, 1))
            .await
            .is_ok()
        {
            deployed += 1;
        }
        if let Some(status) = cluster.wait_exit(2, Duration::from_millis(100)).await {
            break status;
        }
    };
    let log = cluster.log(2);
    assert_eq!(
        status.code(),
        Some(EXIT_RAFT_STOPPED),
        "exit status {status:?} (signal {:?}); log:\n{}",
        status.signal(),
        cluster.log_tail(2, 40)
    );
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("Raft stopped: storage error"))
        .unwrap_or_else(|| panic!("no `Raft stopped: storage error` line; log:\n{log}"));
    assert!(line.contains("No space left on device"), "{line}");
    assert!(line.contains("exiting with status 3"), "{line}");
    assert!(
        !log.contains("supervisor replica stopped"),
        "a fatal stop is not a clean shutdown"
    );
    println!("replica 3 exited after {deployed} deploys: {line}");

    // The other two still commit.
    let _ = healthy.deploy(&spec("after", None, 1)).await;
    eventually(
        "a deploy commits on the two healthy replicas",
        T,
        || async {
            match healthy.module("after").await {
                Ok(_) => Some(()),
                Err(_) => {
                    let _ = healthy.deploy(&spec("after", None, 1)).await;
                    None
                }
            }
        },
    )
    .await;
    for i in 0..2 {
        wait_module(
            &cluster.client_of(i),
            "after",
            "the deploy applied on both healthy replicas",
            T,
            |m| m.name == "after",
        )
        .await;
        let (status, _) = get(&cluster.addrs[i], "/ready").await.expect("/ready");
        assert_eq!(status, 200);
    }
    drop(cluster);
    drop(tmpfs);
}

/// `/ready` of replica `i`: its status and JSON body.
async fn ready(cluster: &Supervisors, i: usize) -> Option<(u16, serde_json::Value)> {
    let (status, body) = get(&cluster.addrs[i], "/ready").await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

async fn all_ready(cluster: &Supervisors, what: &str) {
    eventually(what, T, || async {
        let mut leaders = std::collections::BTreeSet::new();
        for i in 0..3 {
            let (status, body) = ready(cluster, i).await?;
            if status != 200 || body["ready"] != true {
                return None;
            }
            leaders.insert(body["leader"].as_u64()?);
        }
        (leaders.len() == 1).then_some(())
    })
    .await;
}

async fn not_ready(cluster: &Supervisors, i: usize, what: &str) -> serde_json::Value {
    eventually(what, T, || async {
        let (status, body) = ready(cluster, i).await?;
        (status == 503 && body["ready"] == false && body["reason"].is_string()).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_on_a_replica_cut_from_the_quorum() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::start(3, &depmgr.url).await;
    all_ready(&cluster, "all three ready").await;
    let (status, body) = get(&cluster.addrs[0], "/health").await.expect("/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // The leader without its followers: no quorum confirms it.
    let leader = cluster.wait_leader(T).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &f in &followers {
        cluster.pause(f);
    }
    let body = not_ready(&cluster, leader, "the lone leader not ready").await;
    println!("lone leader: {body}");
    let (status, _) = get(&cluster.addrs[leader], "/health")
        .await
        .expect("/health");
    assert_eq!(status, 200, "/health is about the process, not the quorum");
    for &f in &followers {
        cluster.resume(f);
    }
    all_ready(&cluster, "all three ready again").await;

    // A follower without the leader and the other follower.
    let leader = cluster.wait_leader(T).await;
    let lone = (0..3).find(|i| *i != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|i| *i != lone).collect();
    for &o in &others {
        cluster.pause(o);
    }
    let body = not_ready(&cluster, lone, "the lone follower not ready").await;
    println!("lone follower: {body}");
    for &o in &others {
        cluster.resume(o);
    }
    all_ready(&cluster, "all three ready at the end").await;
}
