//! A supervisor cluster re-created from scratch (every replica's data dir
//! wiped, so its Raft log starts at index 1 again) while the node managers
//! keep their data dirs, and with them the epochs of the old cluster. Epochs
//! are log indexes of one cluster: without a cluster identity, an agent that
//! remembers a high epoch for a module refuses every directive of the new
//! cluster for it as stale, forever. The agents adopt the new cluster (the
//! heartbeat reply names it), and the new leader records that each node came
//! from another cluster.

use std::time::Duration;

use cluster_tests::{Options, TestCluster, spec};
use proto::record::EventKind;
use testkit::eventually;
use testkit::spec::ModuleSpec;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_cluster_places_modules_on_agents_of_the_old_one() {
    let mut c = TestCluster::start(Options {
        supervisors: 1,
        agents: vec!["a".into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;
    let admin = c.admin();
    // Push the old cluster's log well past where the new one will place
    // `web`: modules that need a label no node has, then removed.
    for i in 0..15 {
        let pad = format!("pad{i}");
        let mut pad_spec = ModuleSpec::new(&pad).package("web", "1.0.0").json();
        pad_spec["placement"] = serde_json::json!({"labels": {"zone": "nowhere"}});
        admin.deploy(&pad_spec).await.expect("deploy pad");
        admin.remove(&pad).await.expect("remove pad");
    }
    admin
        .deploy(&spec("web", Some("a"), 2, 1))
        .await
        .expect("deploy web");
    let old = c
        .wait_module("web", "web running on a", T, |m| {
            m.state == "running" && m.node.as_deref() == Some("a")
        })
        .await;
    let old_epoch = old.epoch.expect("placed");
    let old_cluster = eventually("the agent serves the old cluster", T, || async {
        let s = c.agent_status("a").await?;
        s["cluster"].as_u64().filter(|&id| id != 0)
    })
    .await;

    // Every supervisor's disk lost: a new cluster on the same addresses.
    c.supervisors.wipe();
    c.wait_leader(T).await;
    let admin = c.admin();
    eventually("web deployed again", T, || async {
        admin.deploy(&spec("web", Some("a"), 2, 1)).await.ok()
    })
    .await;
    let new = c
        .wait_module(
            "web",
            "web running on a, placed by the new cluster",
            T,
            |m| m.state == "running" && m.node.as_deref() == Some("a"),
        )
        .await;
    let new_epoch = new.epoch.expect("placed");
    assert!(
        new_epoch < old_epoch,
        "the test needs the new cluster's epoch ({new_epoch}) below the old one's ({old_epoch})"
    );
    let status = eventually("the agent runs the new placement", T, || async {
        let s = c.agent_status("a").await?;
        let web = s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "web")?
            .clone();
        (web["epoch"] == new_epoch && web["state"] == "running").then_some(s)
    })
    .await;
    let new_cluster = status["cluster"].as_u64().expect("cluster id");
    assert!(
        new_cluster != 0 && new_cluster != old_cluster,
        "the agent serves the new cluster: {status}"
    );
    let events = eventually("events", T, || async { admin.events(0).await.ok() }).await;
    let from_other: Vec<_> = events
        .iter()
        .filter(|e| e.event_kind() == Some(EventKind::NodeFromOtherCluster))
        .collect();
    assert_eq!(from_other.len(), 1, "{events:#?}");
    assert_eq!(from_other[0].node.as_deref(), Some("a"));
    assert_eq!(
        from_other[0].detail.get("from_cluster"),
        Some(&old_cluster.to_string()),
        "{:?}",
        from_other[0]
    );
    c.stop_all().await;
}
