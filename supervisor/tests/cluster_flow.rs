//! Three real supervisor replicas (RocksDB, HTTP Raft) and simulated node
//! managers: the recovery flow survives the loss of the leader mid-flow and
//! a restart of the whole cluster.

mod common;

use std::time::Duration;

use common::spec;
use proto::record::EventKind;
use testkit::eventually;
use testkit::fake_agent::FakeAgent;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::supervisors::{Supervisors, wait_module};

const T: Duration = Duration::from_secs(30);

async fn nodes_ready(cluster: &Supervisors, n: usize) {
    let c = cluster.client();
    eventually("nodes ready", T, || async {
        let nodes = c.nodes().await.ok()?;
        (nodes.iter().filter(|n| n.status == "ready").count() == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_failover_new_leader_completes_it() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::start(3, &depmgr.url).await;
    let agents: Vec<FakeAgent> = ["a", "b", "c"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    nodes_ready(&cluster, 3).await;
    let c = cluster.client();
    let deployed = c.deploy(&spec("web", Some("a"), 3)).await.expect("deploy");
    assert!(deployed.epoch > 0);
    wait_module(&c, "web", "web running on a", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("a")
    })
    .await;

    // web now fails on a every time: restores, then a failover.
    agents[0].set_failing("web", true);
    wait_module(&c, "web", "two restores ordered", T, |m| {
        m.restore_attempts >= 2
    })
    .await;
    let leader = cluster.wait_leader(T).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(T).await;
    assert_ne!(new_leader, leader);

    let done = wait_module(&c, "web", "failover completed by the new leader", T, |m| {
        m.state == "running" && m.node.as_deref() != Some("a")
    })
    .await;
    assert_eq!(done.failovers, 1);
    assert!(done.epoch > Some(deployed.epoch));
    // Exactly one running copy, on the placement's node, at its epoch.
    let running: Vec<&FakeAgent> = agents.iter().filter(|a| a.is_running("web")).collect();
    assert_eq!(
        running.len(),
        1,
        "running on {:?}",
        running.iter().map(|a| &a.node).collect::<Vec<_>>()
    );
    assert_eq!(Some(running[0].node.as_str()), done.node.as_deref());
    assert_eq!(running[0].epoch_of("web"), done.epoch);

    // Counters were not reset by the leader change: each restore attempt
    // was ordered once, then one failover.
    let events = c.events(0).await.expect("events");
    let web: Vec<_> = events
        .iter()
        .filter(|e| e.module.as_deref() == Some("web"))
        .collect();
    let attempts: Vec<&str> = web
        .iter()
        .filter(|e| e.event_kind() == Some(EventKind::RestoreOrdered))
        .map(|e| e.detail["attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"], "{web:#?}");
    assert_eq!(
        web.iter()
            .filter(|e| e.event_kind() == Some(EventKind::FailoverStarted))
            .count(),
        1
    );
    assert!(
        web.iter()
            .any(|e| e.event_kind() == Some(EventKind::FailoverCompleted))
    );

    // The killed replica comes back and catches up.
    cluster.restart(leader);
    let last = cluster.view(new_leader).await.expect("view").last_applied;
    eventually("restarted replica catches up", T, || async {
        let v = cluster.view(leader).await?;
        (v.last_applied >= last).then_some(())
    })
    .await;
    let local = cluster
        .client_of(leader)
        .get::<serde_json::Value>("/v1/modules/web?stale=true")
        .await
        .expect("stale read");
    assert_eq!(local["epoch"], serde_json::json!(done.epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_modules_counters_and_placements() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::start(3, &depmgr.url).await;
    let agents: Vec<FakeAgent> = ["a", "b"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    nodes_ready(&cluster, 2).await;
    let c = cluster.client();
    c.deploy(&spec("web", Some("a"), 2)).await.expect("deploy");
    c.deploy(&spec("api", Some("b"), 2)).await.expect("deploy");
    wait_module(&c, "web", "web running", T, |m| m.state == "running").await;
    agents[0].crash("web");
    eventually("web restored", T, || async {
        let events = c.events(0).await.ok()?;
        events
            .iter()
            .any(|e| {
                e.event_kind() == Some(EventKind::Restored) && e.module.as_deref() == Some("web")
            })
            .then_some(())
    })
    .await;
    let before = c.modules().await.expect("modules");
    let events_before = c.events(0).await.expect("events").len();

    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(T).await;
    let after = eventually("modules readable after restart", T, || async {
        c.modules().await.ok()
    })
    .await;
    assert_eq!(
        after
            .iter()
            .map(|m| (&m.name, &m.node, m.epoch, m.failovers))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|m| (&m.name, &m.node, m.epoch, m.failovers))
            .collect::<Vec<_>>()
    );
    let events_after = c.events(0).await.expect("events");
    assert!(events_after.len() >= events_before);
    assert!(
        events_after
            .iter()
            .any(|e| e.event_kind() == Some(EventKind::Restored)
                && e.module.as_deref() == Some("web"))
    );
    // Nothing was re-decided: no new placement after the restart.
    assert!(
        !events_after[events_before..]
            .iter()
            .any(|e| e.event_kind() == Some(EventKind::Placed)
                || e.event_kind() == Some(EventKind::FailoverStarted))
    );
}

/// Pre-staging through the real leader: the node a module would fail over
/// to next is sent a `Prefetch` for it, and when a later change moves that
/// prediction the leader's targets follow (they are computed off the
/// heartbeat path, so they must be computed again after the state moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_failover_node_is_told_to_prestage_and_follows_changes() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start(3, &depmgr.url).await;
    let agents: Vec<FakeAgent> = ["a", "b"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    nodes_ready(&cluster, 2).await;
    let c = cluster.client();
    c.deploy(&spec("web", Some("a"), 3))
        .await
        .expect("deploy web");
    wait_module(&c, "web", "web running on a", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("a")
    })
    .await;
    eventually("b told to pre-stage web", T, || async {
        agents[1].prefetched().contains("web").then_some(())
    })
    .await;
    assert!(
        !agents[0].prefetched().contains("web"),
        "a runs web: it is not its next node"
    );
    // A module placed on b afterwards: its next node is a.
    c.deploy(&spec("api", Some("b"), 3))
        .await
        .expect("deploy api");
    eventually("a told to pre-stage api", T, || async {
        agents[0].prefetched().contains("api").then_some(())
    })
    .await;
    assert!(!agents[1].prefetched().contains("api"));
}
