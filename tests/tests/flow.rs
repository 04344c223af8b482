//! The whole recovery flow with real processes: supervisors, depmgr and node
//! managers on loopback, a shell test module, and faults injected by killing
//! processes. Every assertion goes through the admin API (module views and
//! events) or the agents' status API, never through log text.

use std::time::Duration;

use cluster_tests::{Options, TestCluster, spec};
use proto::record::EventKind;
use testkit::eventually;
use testkit::process::pid_alive;
use tokio::sync::Mutex;

/// One cluster at a time: the machine is small.
static SERIAL: Mutex<()> = Mutex::const_new(());
const T: Duration = Duration::from_secs(40);

fn kinds(events: &[admin_api::EventView]) -> Vec<EventKind> {
    events
        .iter()
        .map(|e| {
            e.event_kind()
                .expect("every kind the supervisor records is known here")
        })
        .collect()
}

/// The pid of the module's process, from its agent.
async fn module_pid(c: &TestCluster, node: &str, module: &str) -> u32 {
    eventually("the module's pid", T, || async {
        let s = c.agent_status(node).await?;
        let m = s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == module && m["state"] == "running")?
            .clone();
        m["pid"].as_u64().map(|p| p as u32)
    })
    .await
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

async fn running_on(c: &TestCluster, module: &str, node: &str) -> admin_api::ModuleView {
    c.wait_module(module, &format!("{module} running on {node}"), T, |m| {
        m.state == "running" && m.node.as_deref() == Some(node)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_module_is_restored_in_place() {
    let _serial = SERIAL.lock().await;
    let c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    let deployed = c
        .admin()
        .deploy(&spec("web", Some("a"), 2, 2))
        .await
        .expect("deploy");
    let before = running_on(&c, "web", "a").await;
    assert!(
        before.epoch > Some(deployed.epoch),
        "the placement decision comes after the deploy"
    );
    let pid = module_pid(&c, "a", "web").await;
    kill9(pid);
    let events = eventually("restored", T, || async {
        let e = c.events_of("web").await;
        e.iter()
            .any(|e| e.event_kind() == Some(EventKind::Restored))
            .then_some(e)
    })
    .await;
    let k = kinds(&events);
    let at = k
        .iter()
        .position(|k| *k == EventKind::FailureDetected)
        .expect("failure detected");
    assert_eq!(
        &k[at..at + 3],
        [
            EventKind::FailureDetected,
            EventKind::RestoreOrdered,
            EventKind::Restored
        ],
        "{k:?}"
    );
    assert_eq!(events[at + 1].detail["attempt"], "1");
    let after = running_on(&c, "web", "a").await;
    assert_eq!(
        after.epoch, before.epoch,
        "restored in place, same placement"
    );
    assert_eq!(
        after.restore_attempts, 0,
        "the counter resets once the module is healthy again"
    );
    let new_pid = module_pid(&c, "a", "web").await;
    assert_ne!(new_pid, pid);
    let starts = c.starts("web");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        starts
            .iter()
            .all(|(n, e, _)| n == "a" && Some(*e) == after.epoch)
    );

    // supctl reads the same views.
    let out = c
        .supctl()
        .args(["--json", "modules"])
        .output()
        .expect("supctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let modules: serde_json::Value = serde_json::from_slice(&out.stdout).expect("supctl --json");
    assert_eq!(modules[0]["name"], "web");
    assert_eq!(modules[0]["node"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_failing_on_its_node_fails_over_with_its_package() {
    let _serial = SERIAL.lock().await;
    let c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    c.admin()
        .deploy(&spec("web", Some("a"), 2, 2))
        .await
        .expect("deploy");
    let first = running_on(&c, "web", "a").await;
    c.set_failing("a", true);
    kill9(module_pid(&c, "a", "web").await);
    let moved = c
        .wait_module("web", "web failed over", T, |m| {
            m.state == "running" && m.node.as_deref() != Some("a")
        })
        .await;
    assert!(moved.epoch > first.epoch, "new placement, new epoch");
    assert_eq!(moved.failovers, 1);
    let events = c.events_of("web").await;
    // Pre-staging on the next failover node is recorded whenever its
    // agent reports it, interleaved with the flow: left out here.
    let k: Vec<EventKind> = kinds(&events)
        .into_iter()
        .filter(|k| *k != EventKind::PackagePrestaged)
        .collect();
    let tail: Vec<EventKind> = k[k
        .iter()
        .position(|k| *k == EventKind::FailureDetected)
        .expect("detected")..]
        .to_vec();
    assert_eq!(
        tail,
        [
            EventKind::FailureDetected,
            EventKind::RestoreOrdered,
            EventKind::RestoreOrdered,
            EventKind::FailoverStarted,
            EventKind::PreviousReleased,
            EventKind::PackageRetrieved,
            EventKind::Installed,
            EventKind::FailoverCompleted
        ],
        "{k:?}"
    );
    let started = events
        .iter()
        .find(|e| e.event_kind() == Some(EventKind::FailoverStarted))
        .expect("failover");
    assert_eq!(started.detail["from"], "a");
    assert_eq!(started.node, moved.node);
    let copies = c.running_copies("web").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(Some(copies[0].0.as_str()), moved.node.as_deref());
    let (node, epoch, _) = c.starts("web").last().cloned().expect("starts");
    assert_eq!(
        (Some(node.as_str()), Some(epoch)),
        (moved.node.as_deref(), moved.epoch)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_node_failing_too_moves_on_then_gives_up() {
    let _serial = SERIAL.lock().await;
    // The failures here are the nodes' (markers), not the package's: with
    // quarantine on (the default, 2 nodes), the second failed start would
    // quarantine the version and the module would wait for an operator
    // instead of spending failover.max_nodes, which this test is about
    // (quarantine: tests/tests/rollout.rs).
    let c = TestCluster::start(Options {
        supervisor_flags: vec!["--quarantine-nodes".into(), "0".into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;
    c.admin()
        .deploy(&spec("web", Some("a"), 1, 2))
        .await
        .expect("deploy");
    running_on(&c, "web", "a").await;
    c.set_failing("a", true);
    c.set_failing("b", true);
    kill9(module_pid(&c, "a", "web").await);
    // a fails; b (first by load and name) fails too; c takes it (claim 2).
    let v = running_on(&c, "web", "c").await;
    assert_eq!(v.failovers, 2);
    let events = c.events_of("web").await;
    let failed_over: Vec<_> = events
        .iter()
        .filter(|e| e.event_kind() == Some(EventKind::FailoverStarted))
        .map(|e| e.node.clone().unwrap_or_default())
        .collect();
    assert_eq!(failed_over, ["b", "c"]);
    assert!(events.iter().any(
        |e| e.event_kind() == Some(EventKind::FailoverFailed) && e.node.as_deref() == Some("b")
    ));

    // Now it fails everywhere: after max_nodes failover nodes, it is failed.
    c.set_failing("c", true);
    kill9(module_pid(&c, "c", "web").await);
    let failed = c
        .wait_module("web", "web failed", T, |m| m.state == "failed")
        .await;
    let reason = failed.reason.expect("a reason");
    assert!(reason.contains("failover.max_nodes = 2"), "{reason}");
    assert!(
        c.events_of("web")
            .await
            .iter()
            .any(|e| e.event_kind() == Some(EventKind::ModuleFailed))
    );
    assert!(c.running_copies("web").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_failover_new_leader_completes_it() {
    let _serial = SERIAL.lock().await;
    let mut c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    let mut s = spec("web", Some("a"), 3, 2);
    s["restart"]["backoff_ms"] = serde_json::json!(400);
    c.admin().deploy(&s).await.expect("deploy");
    running_on(&c, "web", "a").await;
    c.set_failing("a", true);
    kill9(module_pid(&c, "a", "web").await);
    c.wait_module("web", "restores under way", T, |m| m.restore_attempts >= 2)
        .await;
    let leader = c.wait_leader(T).await;
    c.kill_supervisor(leader);
    let new_leader = c.wait_leader(T).await;
    assert_ne!(leader, new_leader);
    let done = c
        .wait_module("web", "failover completed", T, |m| {
            m.state == "running" && m.node.as_deref() != Some("a")
        })
        .await;
    assert_eq!(done.failovers, 1);
    let events = c.events_of("web").await;
    let attempts: Vec<&str> = events
        .iter()
        .filter(|e| e.event_kind() == Some(EventKind::RestoreOrdered))
        .map(|e| e.detail["attempt"].as_str())
        .collect();
    assert_eq!(
        attempts,
        ["1", "2", "3"],
        "counters continue across the leader change: {:?}",
        kinds(&events)
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_kind() == Some(EventKind::FailoverStarted))
            .count(),
        1
    );
    let copies = c.running_copies("web").await;
    assert_eq!(copies.len(), 1, "no duplicate running copy: {copies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_node_goes_down_and_its_modules_run_elsewhere_once() {
    let _serial = SERIAL.lock().await;
    let mut c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    c.admin()
        .deploy(&spec("web", Some("a"), 2, 2))
        .await
        .expect("deploy");
    let first = running_on(&c, "web", "a").await;
    let pid = module_pid(&c, "a", "web").await;
    c.kill_agent("a");
    eventually(
        "the module dies with its agent",
        Duration::from_secs(5),
        || async { (!pid_alive(pid)).then_some(()) },
    )
    .await;
    eventually("node a down", T, || async {
        let nodes = c.admin().nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.id == "a" && n.status == "down")
            .then_some(())
    })
    .await;
    let moved = c
        .wait_module("web", "web elsewhere", T, |m| {
            m.state == "running" && m.node.as_deref() != Some("a")
        })
        .await;
    assert!(moved.epoch > first.epoch);
    let starts_before = c.starts("web").len();

    c.start_agent("a");
    eventually("node a ready again", T, || async {
        let nodes = c.admin().nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.id == "a" && n.status == "ready")
            .then_some(())
    })
    .await;
    // a forgets its stale copy (stop directive) and never starts it.
    eventually("a no longer lists web", T, || async {
        let s = c.agent_status("a").await?;
        (!s["modules"].as_array()?.iter().any(|m| m["name"] == "web")).then_some(())
    })
    .await;
    let starts = c.starts("web");
    assert_eq!(
        starts.len(),
        starts_before,
        "nothing started again: {starts:?}"
    );
    assert!(
        !starts.iter().skip(1).any(|(n, _, _)| n == "a"),
        "{starts:?}"
    );
    let copies = c.running_copies("web").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        c.admin().module("web").await.expect("view").epoch,
        moved.epoch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_stop_and_start_keeps_modules_counters_and_placements() {
    let _serial = SERIAL.lock().await;
    let mut c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    c.push_test_package("api").await;
    c.admin()
        .deploy(&spec("web", Some("a"), 1, 2))
        .await
        .expect("deploy");
    c.admin()
        .deploy(&spec("api", Some("b"), 2, 2))
        .await
        .expect("deploy");
    running_on(&c, "web", "a").await;
    running_on(&c, "api", "b").await;
    c.set_failing("a", true);
    kill9(module_pid(&c, "a", "web").await);
    c.wait_module("web", "web failed over", T, |m| {
        m.state == "running" && m.failovers == 1
    })
    .await;
    c.set_failing("a", false);
    let before = c.admin().modules().await.expect("modules");
    let events_before = c.events_of("web").await;

    let exits = c.stop_all().await;
    for (name, status) in &exits {
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not stop cleanly: {status:?}"
        );
    }
    c.start_all();
    c.wait_leader(T).await;
    let after = eventually("modules running again", T, || async {
        let m = c.admin().modules().await.ok()?;
        m.iter().all(|m| m.state == "running").then_some(m)
    })
    .await;
    let key = |m: &admin_api::ModuleView| (m.name.clone(), m.node.clone(), m.epoch, m.failovers);
    assert_eq!(
        after.iter().map(key).collect::<Vec<_>>(),
        before.iter().map(key).collect::<Vec<_>>()
    );
    let events_after = c.events_of("web").await;
    assert_eq!(
        &events_after[..events_before.len()],
        &events_before[..],
        "the record survives"
    );
    assert!(
        !events_after[events_before.len()..]
            .iter()
            .any(|e| e.event_kind() == Some(EventKind::FailoverStarted)
                || e.event_kind() == Some(EventKind::Placed))
    );
    for m in ["web", "api"] {
        let copies = eventually("one running copy", T, || async {
            let c = c.running_copies(m).await;
            (c.len() == 1).then_some(c)
        })
        .await;
        assert_eq!(
            Some(copies[0].0.as_str()),
            after
                .iter()
                .find(|v| v.name == m)
                .and_then(|v| v.node.as_deref())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_membership_add_a_fourth_remove_one_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let mut c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    let i4 = c.spawn_extra_supervisor(4);
    let admin = c.admin();
    let added: serde_json::Value = admin
        .request(
            reqwest::Method::POST,
            "/v1/cluster/members",
            Some(&serde_json::json!({"id": 4, "addr": c.supervisors.addrs[i4]})),
        )
        .await
        .expect("add member");
    assert_eq!(added["voter"], true);
    eventually("the fourth supervisor sees four voters", T, || async {
        let view = c.cluster_view(i4).await?;
        (view.members.iter().filter(|m| m.voter).count() == 4).then_some(())
    })
    .await;
    // Remove supervisor 1 and stop it.
    let _: serde_json::Value = admin
        .request::<(), _>(reqwest::Method::DELETE, "/v1/cluster/members/1", None)
        .await
        .expect("remove member");
    c.kill_supervisor(0);
    let leader = c.wait_leader(T).await;
    assert_ne!(leader, 0);
    let d = eventually("deploy with the new membership", T, || async {
        c.admin().deploy(&spec("web", None, 2, 2)).await.ok()
    })
    .await;
    assert_eq!(d.name, "web");
    c.wait_module("web", "web running", T, |m| m.state == "running")
        .await;
    eventually("members 2, 3, 4", T, || async {
        let view = c.cluster_view(i4).await?;
        let ids: Vec<u64> = view.members.iter().map(|m| m.id).collect();
        (ids == [2, 3, 4]).then_some(())
    })
    .await;
}
