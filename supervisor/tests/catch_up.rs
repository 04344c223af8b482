//! A follower that was down while the leader snapshotted and purged the
//! log it missed catches up from a snapshot the leader sends (stored
//! outside RocksDB's WAL and decoded off the runtime's threads), and then
//! holds every module the cluster acknowledged, across a restart too.

mod common;

use std::time::Duration;

use common::spec;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::prom::scrape;
use testkit::supervisors::Supervisors;

const T: Duration = Duration::from_secs(60);
/// A snapshot every 50 entries; openraft keeps 1,000 entries behind it
/// (`max_in_snapshot_log_to_keep`), so the deploys below outrun the log.
const SNAPSHOT_LOGS: &str = "50";
const DEPLOYS: usize = 1_300;

/// Snapshot RPCs sent, summed over the replicas at `addrs` (whichever of
/// them leads sends them).
async fn snapshots_sent(addrs: &[String]) -> f64 {
    let mut sent = 0.0;
    for addr in addrs {
        let m = scrape(addr).await.expect("scrape");
        sent += m
            .value("supervisor_raft_rpc_seconds_count", &[("rpc", "snapshot")])
            .unwrap_or(0.0);
    }
    sent
}

/// The module names replica `addr` holds in its own applied state.
async fn modules_here(addr: &str) -> Option<Vec<String>> {
    let list: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("http://{addr}/v1/modules?stale=true"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut names: Vec<String> = list
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster =
        Supervisors::start_with(3, &depmgr.url, &["--snapshot-logs", SNAPSHOT_LOGS]).await;
    let leader = cluster.wait_leader(T).await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let behind = cluster
        .view(follower)
        .await
        .expect("follower view")
        .last_applied;
    cluster.kill(follower);

    // Acknowledged writes, one log entry each, while the follower is down.
    let c = cluster.client();
    let mut deployed = Vec::with_capacity(DEPLOYS);
    for i in 0..DEPLOYS {
        let name = format!("m{i:05}");
        c.deploy(&spec(&name, None, 1))
            .await
            .unwrap_or_else(|e| panic!("deploy {name}: {e}"));
        deployed.push(name);
    }
    deployed.sort();

    // The other two have snapshotted and purged past where the follower
    // stopped (either may lead when it comes back).
    let others: Vec<String> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| cluster.addrs[i].clone())
        .collect();
    eventually(
        "the others purged the follower's missing log",
        T,
        || async {
            for addr in &others {
                let m = scrape(addr).await?;
                if m.value("supervisor_log_purged_index", &[])? <= behind as f64 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let sent_before = snapshots_sent(&others).await;

    cluster.restart(follower);
    let follower_addr = cluster.addrs[follower].clone();
    let expected = deployed.clone();
    eventually("the follower holds every deployed module", T, || async {
        let here = modules_here(&follower_addr).await?;
        (expected.iter().all(|n| here.binary_search(n).is_ok())).then_some(())
    })
    .await;

    // It got there through a snapshot the leader sent, not the log.
    let sent = snapshots_sent(&others).await;
    assert!(
        sent > sent_before,
        "no snapshot chunk was sent ({sent_before} -> {sent})"
    );
    // (Its log is written by a background writer: wait for the line.)
    let logged = eventually("the follower logs the install", T, || async {
        cluster
            .log(follower)
            .contains("snapshot installed (sent by the leader)")
            .then_some(())
    });
    logged.await;

    // And what it installed is durable: restarted again, it starts from
    // its stored snapshot (the leader sends none) and holds every module.
    cluster.restart(follower);
    eventually("the follower holds them after a restart", T, || async {
        let here = modules_here(&follower_addr).await?;
        (deployed.iter().all(|n| here.binary_search(n).is_ok())).then_some(())
    })
    .await;
    let sent_again = snapshots_sent(&others).await;
    assert_eq!(
        sent_again, sent,
        "a second snapshot was sent after the restart"
    );
    // The cluster still commits with it.
    c.deploy(&spec("after", None, 1))
        .await
        .expect("deploy after the catch-up");
}
