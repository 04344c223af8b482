//! Backup and restore: `supctl snapshot save`, every replica stopped and
//! its data dir wiped, `supervisor --restore-from` on empty data dirs: the
//! same modules with the same specs, placements and counters, the agents'
//! copies neither restarted nor moved, `supctl why` still answered, and
//! the restored cluster takes new writes at epochs above the backup's.

use std::collections::BTreeMap;
use std::time::Duration;

use admin_api::ModuleView;
use cluster_tests::{Options, TestCluster, spec};
use testkit::eventually;

const T: Duration = Duration::from_secs(60);

/// What must survive a restore of each module, as the admin API shows it.
fn kept(m: &ModuleView) -> serde_json::Value {
    serde_json::json!({
        "node": m.node, "epoch": m.epoch, "state": m.state,
        "restore_attempts": m.restore_attempts, "failovers": m.failovers,
        "package": m.package.to_string(), "fencing": m.fencing,
        "tried_nodes": m.tried_nodes, "revision": m.revision,
    })
}

async fn pids(c: &TestCluster, names: &[&str]) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out = BTreeMap::new();
    for n in names {
        out.insert(n.to_string(), c.running_copies(n).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_a_backup_keeps_every_module_where_it_runs() {
    // A lease long enough for the agents to keep their at-most-one
    // modules while no supervisor runs.
    let mut c = TestCluster::start(Options {
        supervisor_flags: vec!["--lease-ms".into(), "20000".into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;
    c.push_test_package("api").await;
    c.push_test_package("late").await;
    // web runs on a; api fails on b and fails over (failovers = 1).
    c.set_failing("b", true);
    c.admin()
        .deploy(&spec("web", Some("a"), 2, 2))
        .await
        .expect("deploy web");
    c.admin()
        .deploy(&spec("api", Some("b"), 1, 2))
        .await
        .expect("deploy api");
    for name in ["web", "api"] {
        c.wait_module(name, "running", T, |m| m.state == "running")
            .await;
    }
    c.set_failing("b", false);
    let before: BTreeMap<String, ModuleView> = c
        .admin()
        .modules()
        .await
        .expect("modules")
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    assert_eq!(before["api"].failovers, 1, "{:?}", before["api"]);
    let copies = pids(&c, &["web", "api"]).await;
    assert!(copies.values().all(|c| c.len() == 1), "{copies:?}");

    let file = c.dir.path().join("cluster.snap");
    let out = c
        .supctl()
        .args(["snapshot", "save"])
        .arg(&file)
        .output()
        .expect("supctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("saved ") && stdout.contains("sha256"),
        "{stdout}"
    );
    let backup =
        proto::backup::Backup::from_bytes(&std::fs::read(&file).expect("read")).expect("a backup");
    let last_event = c
        .admin()
        .events_where(None, Some(1), &Default::default())
        .await
        .expect("events")
        .last()
        .map_or(0, |e| e.index);

    // Every supervisor's disk is lost; the cluster comes back from the file.
    c.supervisors.wipe_and_restore(&file);
    c.wait_leader(T).await;
    eventually("the new leader hears every agent", T, || async {
        let nodes = c.admin().nodes().await.ok()?;
        (nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n.status == "ready" && n.lease_left_ms.is_some()))
        .then_some(())
    })
    .await;
    // A new module runs: the restored cluster planned, placed and
    // installed with every agent heard, at an epoch above the backup's.
    c.admin()
        .deploy(&spec("late", Some("c"), 2, 2))
        .await
        .expect("deploy after the restore");
    let late = c
        .wait_module("late", "running", T, |m| m.state == "running")
        .await;
    assert!(
        late.epoch > Some(backup.index),
        "{late:?} vs {}",
        backup.index
    );

    let after: BTreeMap<String, ModuleView> = c
        .admin()
        .modules()
        .await
        .expect("modules")
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    for (name, m) in &before {
        assert_eq!(kept(&after[name]), kept(m), "{name}");
    }
    assert_eq!(
        pids(&c, &["web", "api"]).await,
        copies,
        "restarted or moved"
    );
    let events = c
        .admin()
        .events_where(Some(last_event), None, &Default::default())
        .await
        .expect("events");
    let moved: Vec<_> = events
        .iter()
        .filter(|e| e.module.as_deref() != Some("late"))
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "failure_detected"
                    | "restore_ordered"
                    | "failover_started"
                    | "placed"
                    | "drain_moved"
            )
        })
        .collect();
    assert!(moved.is_empty(), "{moved:#?}");

    // The causal chain came along: api's failover and its deploy.
    let out = c.supctl().args(["why", "api"]).output().expect("supctl");
    let why = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{why}");
    assert!(why.contains("failing over from b to"), "{why}");
    assert!(why.contains("restore 1 of "), "{why}");
    assert!(why.contains("a heartbeat showed api"), "{why}");
    assert!(why.contains("an operator deployed api"), "{why}");

    // A damaged backup is refused, naming the problem, and nothing starts.
    let mut bytes = std::fs::read(&file).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    let bad = c.dir.path().join("damaged.snap");
    std::fs::write(&bad, bytes).expect("write");
    let out = std::process::Command::new(c.bins.join("supervisor"))
        .args([
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(c.dir.path().join("fresh"))
        .arg("--restore-from")
        .arg(&bad)
        .output()
        .expect("run supervisor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
}
