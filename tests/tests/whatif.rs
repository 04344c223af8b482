//! What-if against real processes: `supctl plan lose b` predicts exactly
//! the moves that a `kill -9` of agent b then produces, and `supctl plan
//! drain a` those of the drain that follows; nothing is committed by a
//! prediction.

use std::collections::BTreeMap;
use std::time::Duration;

use admin_api::PlanView;
use cluster_tests::{Options, TestCluster};
use testkit::eventually;
use testkit::spec::ModuleSpec;

const T: Duration = Duration::from_secs(60);

/// Where each module is placed now, by name.
async fn placements(c: &TestCluster) -> BTreeMap<String, Option<String>> {
    c.admin()
        .modules()
        .await
        .expect("modules")
        .into_iter()
        .map(|m| (m.name, m.node))
        .collect()
}

/// The moves of a prediction, as module → (from, to).
fn moves(plan: &PlanView) -> BTreeMap<String, (Option<String>, String)> {
    plan.moves
        .iter()
        .map(|m| (m.module.clone(), (m.from.clone(), m.to.clone())))
        .collect()
}

/// Placements once every module runs on a node `on` accepts.
async fn settled(
    c: &TestCluster,
    what: &str,
    on: impl Fn(Option<&str>) -> bool,
) -> BTreeMap<String, Option<String>> {
    eventually(what, T, || async {
        let modules = c.admin().modules().await.ok()?;
        modules
            .iter()
            .all(|m| m.state == "running" && on(m.node.as_deref()))
            .then(|| modules.into_iter().map(|m| (m.name, m.node)).collect())
    })
    .await
}

/// The modules whose node changed from `before` to `after`, as module →
/// (from, to): the shape of a prediction's moves.
fn changed(
    before: &BTreeMap<String, Option<String>>,
    after: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, (Option<String>, String)> {
    after
        .iter()
        .filter(|(name, node)| before[*name] != **node)
        .map(|(name, node)| {
            let to = node.clone().expect("placed");
            (name.clone(), (before[name].clone(), to))
        })
        .collect()
}

fn supctl_ok(c: &TestCluster, args: &[&str]) -> String {
    let out = c.supctl().args(args).output().expect("run supctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "supctl {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lose_and_drain_predict_what_really_happens() {
    let mut c = TestCluster::start(Options::default()).await;
    c.push_test_package("web").await;
    // Five modules on b, of both fencings, and one on a and c each, so the
    // planner has to spread b's modules by load.
    let mut specs = vec![];
    for (name, node, fencing) in [
        ("b1", "b", "at-most-one"),
        ("b2", "b", "at-least-one"),
        ("b3", "b", "at-most-one"),
        ("b4", "b", "at-least-one"),
        ("b5", "b", "at-most-one"),
        ("a1", "a", "at-least-one"),
        ("c1", "c", "at-least-one"),
    ] {
        specs.push(
            ModuleSpec::new(name)
                .package("web", "1.0.0")
                .restart(2, 100, 500)
                .max_nodes(3)
                .node(Some(node))
                .fencing(fencing)
                .json(),
        );
    }
    for s in &specs {
        c.admin().deploy(s).await.expect("deploy");
    }
    for s in &specs {
        let name = s["name"].as_str().expect("name");
        c.wait_module(name, "running", T, |m| m.state == "running")
            .await;
    }
    let before = placements(&c).await;
    assert!(
        before
            .values()
            .filter(|n| n.as_deref() == Some("b"))
            .count()
            == 5,
        "{before:?}"
    );

    // The prediction, through supctl as an operator reads it and as JSON.
    let text = supctl_ok(&c, &["plan", "lose", "b"]);
    assert!(text.contains("5 module(s) would move"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    let lose = c
        .admin()
        .plan(&serde_json::json!({"action": "lose", "node": "b"}))
        .await
        .expect("plan lose b");
    let predicted = moves(&lose);
    assert_eq!(predicted.len(), 5, "{lose:#?}");
    assert!(
        predicted
            .values()
            .all(|(from, to)| from.as_deref() == Some("b") && to != "b"),
        "{lose:#?}"
    );
    assert_eq!(
        placements(&c).await,
        before,
        "a prediction changed something"
    );

    // The real thing: agent b dies.
    c.kill_agent("b");
    let after = settled(&c, "b's modules run elsewhere", |node| node != Some("b")).await;
    let happened = changed(&before, &after);
    assert_eq!(happened, predicted, "prediction {lose:#?}");
    // `why` names the node loss behind each move: the down verdict for an
    // at-most-one module, the suspect one for an at-least-one module.
    let why = supctl_ok(&c, &["why", "b1"]);
    assert!(why.contains("node b down"), "{why}");
    assert!(why.contains("an operator deployed b1"), "{why}");
    let why = supctl_ok(&c, &["why", "b2"]);
    assert!(why.contains("node b suspect"), "{why}");

    // Drain a: the prediction again equals what the drain does.
    let drain = c
        .admin()
        .plan(&serde_json::json!({"action": "drain", "node": "a"}))
        .await
        .expect("plan drain a");
    let predicted = moves(&drain);
    assert!(!predicted.is_empty(), "{drain:#?}");
    let before = after;
    c.admin().drain("a").await.expect("drain a");
    let after = settled(&c, "a is drained", |node| node == Some("c")).await;
    let happened = changed(&before, &after);
    assert_eq!(happened, predicted, "prediction {drain:#?}");
}
