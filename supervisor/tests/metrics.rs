//! `/metrics` of real supervisor replicas (with simulated node managers),
//! parsed: the histograms of heartbeat handling, crash-to-restore-order,
//! failover and Raft commit latency are there with their buckets, sum and
//! count, and they and the counters move when the cluster works; and
//! `--log-format json` writes one JSON object per log line.

mod common;

use std::time::Duration;

use common::spec;
use testkit::eventually;
use testkit::fake_agent::FakeAgent;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::prom::{Metrics, scrape};
use testkit::supervisors::{Supervisors, wait_module};

const T: Duration = Duration::from_secs(30);

const HISTOGRAMS: [&str; 5] = [
    "supervisor_heartbeat_seconds",
    "supervisor_restore_order_seconds",
    "supervisor_failover_seconds",
    "supervisor_raft_commit_seconds",
    "supervisor_wal_sync_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_and_logs_are_json() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start_with(3, &depmgr.url, &["--log-format", "json"]).await;
    let agents: Vec<FakeAgent> = ["a", "b"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    let leader = cluster.wait_leader(T).await;
    let addr = cluster.addrs[leader].clone();

    let before = scrape(&addr).await.expect("scrape");
    for h in HISTOGRAMS {
        before.check_histogram(h).unwrap_or_else(|e| panic!("{e}"));
    }
    for (name, kind) in [
        ("supervisor_heartbeats_total", "counter"),
        ("supervisor_auth_refused_total", "counter"),
        ("supervisor_transitions_total", "counter"),
        ("supervisor_term", "gauge"),
        ("supervisor_is_leader", "gauge"),
        ("supervisor_last_applied", "gauge"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert_eq!(before.value("supervisor_is_leader", &[]), Some(1.0));
    assert_eq!(
        before.value("supervisor_auth_refused_total", &[("surface", "admin")]),
        Some(0.0)
    );

    // Heartbeats arrive: the counter and the histogram move.
    let hb = before
        .value("supervisor_heartbeats_total", &[])
        .unwrap_or(0.0);
    eventually("heartbeats counted and timed", T, || async {
        let m = scrape(&addr).await?;
        (m.value("supervisor_heartbeats_total", &[])? > hb
            && m.count("supervisor_heartbeat_seconds")
                > before.count("supervisor_heartbeat_seconds"))
        .then_some(())
    })
    .await;

    // A deploy is a commit; the module runs.
    let scraped = scrape(&addr).await.expect("scrape");
    let commits = scraped.count("supervisor_raft_commit_seconds");
    let syncs = scraped.count("supervisor_wal_sync_seconds");
    let appends = |m: &Metrics| {
        m.value("supervisor_raft_rpc_seconds_count", &[("rpc", "append")])
            .unwrap_or(0.0)
    };
    let sent = appends(&scraped);
    let c = cluster.client();
    c.deploy(&spec("web", Some("a"), 1)).await.expect("deploy");
    wait_module(&c, "web", "web running on a", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("a")
    })
    .await;
    let m = scrape(&addr).await.expect("scrape");
    assert!(m.count("supervisor_raft_commit_seconds") > commits);
    // The commit was synced to the leader's WAL and sent to the followers,
    // and both were timed.
    assert!(m.count("supervisor_wal_sync_seconds") > syncs);
    assert!(appends(&m) > sent, "append RPCs timed");
    assert!(
        m.value("supervisor_raft_rpc_seconds_sum", &[("rpc", "append")])
            .is_some_and(|s| s > 0.0)
    );
    assert_eq!(
        m.value("supervisor_modules", &[("state", "running")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("supervisor_nodes", &[("status", "ready")]),
        Some(2.0)
    );

    // It fails on a for good: one restore order (crash to order timed),
    // then a failover to b (decision to running timed).
    agents[0].set_failing("web", true);
    wait_module(&c, "web", "web failed over to b", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("b")
    })
    .await;
    let leader = cluster.wait_leader(T).await;
    let after = eventually("restore order and failover timed", T, || async {
        let m = scrape(&cluster.addrs[leader]).await?;
        (m.count("supervisor_restore_order_seconds") >= 1.0
            && m.count("supervisor_failover_seconds") >= 1.0)
            .then_some(m)
    })
    .await;
    for h in HISTOGRAMS {
        after.check_histogram(h).unwrap_or_else(|e| panic!("{e}"));
    }
    let failover = after
        .value("supervisor_failover_seconds_sum", &[])
        .expect("sum");
    assert!(
        failover > 0.0 && failover < 30.0,
        "failover took {failover} s"
    );

    // Followers serve /metrics too (no leader-only series missing).
    let follower = (0..3).find(|i| *i != leader).expect("follower");
    let f = scrape(&cluster.addrs[follower])
        .await
        .expect("follower scrape");
    assert_eq!(f.value("supervisor_is_leader", &[]), Some(0.0));
    assert!(
        f.count("supervisor_wal_sync_seconds") >= 1.0,
        "a follower syncs its WAL too"
    );
    for h in HISTOGRAMS {
        f.check_histogram(h).unwrap_or_else(|e| panic!("{e}"));
    }

    // --log-format json: every line of the log is a JSON object with a
    // level and fields.
    let log = cluster.log(leader);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("became leader")),
        "{}",
        cluster.log_tail(leader, 20)
    );
}
