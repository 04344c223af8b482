//! The operator's loop through supctl against real processes: a module that
//! failed everywhere is reset once its cause is fixed and runs again;
//! `supctl module` describes it with its agent's pid; a drained node is
//! undrained; a down node is removed; every refusal exits 1 naming why.

use std::process::Output;
use std::time::Duration;

use cluster_tests::{Options, TestCluster, spec};
use testkit::eventually;

const T: Duration = Duration::from_secs(60);

/// Runs `supctl <args>`.
fn supctl(c: &TestCluster, args: &[&str]) -> Output {
    c.supctl().args(args).output().expect("run supctl")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `supctl <args>` succeeds; its stdout.
fn ok(c: &TestCluster, args: &[&str]) -> String {
    let out = supctl(c, args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "supctl {args:?}:\n{stdout}\n{stderr}");
    stdout
}

/// `supctl <args>` exits 1 with `why` on stderr.
fn refused(c: &TestCluster, args: &[&str], why: &str) {
    let out = supctl(c, args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "supctl {args:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(why),
        "supctl {args:?}: {stderr:?} lacks {why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supctl_reset_describe_undrain_and_node_rm() {
    let mut c = TestCluster::start(Options {
        supervisors: 1,
        agents: vec!["a".into(), "b".into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;
    // web fails on every node: restored on a, then b fails it too.
    c.set_failing("a", true);
    c.set_failing("b", true);
    c.admin()
        .deploy(&spec("web", Some("a"), 1, 2))
        .await
        .expect("deploy");
    let failed = c
        .wait_module("web", "web failed everywhere", T, |m| m.state == "failed")
        .await;
    assert!(failed.failovers >= 1, "{failed:?}");

    // Failing on two nodes quarantined its package version: a reset is
    // refused until the quarantine is lifted.
    eventually("web@1.0.0 quarantined", T, || async {
        let q = c.admin().quarantined().await.ok()?;
        q.iter()
            .any(|q| q.package.to_string() == "web@1.0.0")
            .then_some(())
    })
    .await;
    refused(
        &c,
        &["reset", "web"],
        "uses package web@1.0.0, which is quarantined",
    );
    // The cause is fixed: lift, reset, and it runs again with clean
    // counters.
    c.set_failing("a", false);
    c.set_failing("b", false);
    ok(&c, &["quarantine", "lift", "web@1.0.0"]);
    let out = ok(&c, &["reset", "web"]);
    assert!(out.contains("web: reset (pending)"), "{out}");
    let running = c
        .wait_module("web", "web running after the reset", T, |m| {
            m.state == "running"
        })
        .await;
    assert_eq!((running.failovers, running.restore_attempts), (0, 0));
    assert!(running.tried_nodes.is_empty() && running.epoch > failed.epoch);
    refused(
        &c,
        &["reset", "web"],
        "module \"web\" is running, not failed",
    );

    // Describe: the agent's pid of the copy that runs, and the reset.
    let node = running.node.clone().expect("placed");
    let pid = eventually("the module's pid", T, || async {
        let s = c.agent_status(&node).await?;
        s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "web" && m["state"] == "running")?["pid"]
            .as_u64()
    })
    .await;
    let out = ok(&c, &["module", "web"]);
    for want in [
        "State:              running".to_string(),
        format!("Pid:                {pid}"),
        format!("Node:               {node} (node ready), epoch "),
        "module_reset".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in\n{out}");
    }
    let view: serde_json::Value =
        serde_json::from_str(&ok(&c, &["--json", "module", "web"])).expect("--json");
    assert_eq!(
        (view["name"].as_str(), view["state"].as_str()),
        (Some("web"), Some("running"))
    );
    let out = ok(&c, &["node", &node]);
    assert!(
        out.contains("Status:             ready") && out.contains("web"),
        "{out}"
    );
    refused(&c, &["module", "nope"], "unknown module \"nope\"");

    // Undrain.
    ok(&c, &["drain", "b"]);
    let out = ok(&c, &["undrain", "b"]);
    assert!(out.contains("b: ready; it takes modules again"), "{out}");
    refused(&c, &["undrain", "b"], "node \"b\" is not draining");

    // Node removal: refused while ready, accepted once down.
    refused(&c, &["node", "rm", "a"], "node \"a\" is ready, not down");
    let other = if node == "a" { "b" } else { "a" };
    c.kill_agent(other);
    eventually("the killed agent's node down", T, || async {
        let nodes = c.nodes().await;
        nodes
            .iter()
            .any(|n| n.id == other && n.status == "down")
            .then_some(())
    })
    .await;
    let out = ok(&c, &["node", "rm", other]);
    assert!(out.contains(&format!("{other}: removed")), "{out}");
    assert!(c.nodes().await.iter().all(|n| n.id != other));
    refused(
        &c,
        &["node", "rm", other],
        &format!("unknown node \"{other}\""),
    );

    // Remove the module: gone once its agent stopped it.
    let out = ok(&c, &["remove", "web"]);
    assert!(
        out.contains(&format!(
            "web: stopped; it disappears once its copy on {node} is known stopped"
        )),
        "{out}"
    );
    eventually("web gone", T, || async {
        c.admin()
            .module("web")
            .await
            .err()
            .filter(|e| e.status() == Some(admin_api::StatusCode::NOT_FOUND))
    })
    .await;
}
