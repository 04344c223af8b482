//! What-if (`POST /v1/plan`): the prediction on a copy of the state agrees
//! with what then really happens, and changes nothing.

use std::collections::BTreeMap;

use proto::heartbeat::ModuleStatus;
use proto::spec::Fencing;

use super::*;
use crate::plan::what_if;
use crate::views::{PlanRequest, PlanView};

fn predict(sim: &Sim, request: PlanRequest) -> PlanView {
    let before = sim.state.clone();
    let view =
        what_if(&sim.state, &sim.observed, sim.now, sim.timing, &request).expect("a prediction");
    assert_eq!(sim.state, before, "a prediction commits nothing");
    view
}

/// Where each module is placed now.
fn placements(sim: &Sim) -> BTreeMap<String, Option<String>> {
    sim.state
        .modules
        .iter()
        .map(|(n, m)| (n.clone(), m.placement.as_ref().map(|p| p.node.clone())))
        .collect()
}

/// Predicted moves as module → new node.
fn moves(view: &PlanView) -> BTreeMap<String, String> {
    view.moves
        .iter()
        .map(|m| (m.module.clone(), m.to.clone()))
        .collect()
}

/// Modules whose node changed between two placement maps.
fn moved(
    before: &BTreeMap<String, Option<String>>,
    after: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    after
        .iter()
        .filter(|(n, to)| before.get(*n) != Some(to))
        .filter_map(|(n, to)| Some((n.clone(), to.clone()?)))
        .collect()
}

/// Four nodes; b carries two at-most-one and two at-least-one modules,
/// the others one each, so the moves spread by load.
fn cluster() -> Sim {
    let mut sim = Sim::new(&["a", "b", "c", "d"]);
    for (name, node, fencing) in [
        ("web", "b", Fencing::AtMostOne),
        ("db", "b", Fencing::AtMostOne),
        ("cache", "b", Fencing::AtLeastOne),
        ("proxy", "b", Fencing::AtLeastOne),
        ("api", "a", Fencing::AtMostOne),
        ("jobs", "c", Fencing::AtMostOne),
    ] {
        let mut s = spec(name);
        s.placement.node = Some(node.into());
        s.fencing = fencing;
        sim.running(s);
    }
    sim
}

#[test]
fn plan_lose_predicts_the_moves_a_lost_node_then_produces() {
    let mut sim = cluster();
    let view = predict(&sim, PlanRequest::Lose { node: "b".into() });
    let predicted = moves(&view);
    assert_eq!(
        predicted.keys().collect::<Vec<_>>(),
        ["cache", "db", "proxy", "web"],
        "{view:#?}"
    );
    for m in &view.moves {
        assert_eq!(
            (m.from.as_deref(), m.cause.as_str()),
            (Some("b"), "node_lost")
        );
        let want = if m.fencing == "at-most-one" {
            sim.timing.down_after_ms()
        } else {
            sim.timing.heartbeat_ttl_ms
        };
        assert_eq!(m.down_ms_at_least, want, "{m:?}");
    }
    assert!(
        view.waiting.is_empty() && view.failed.is_empty(),
        "{view:#?}"
    );
    assert!(
        view.transitions
            .iter()
            .any(|t| t.kind == "node_down" && t.node.as_deref() == Some("b")),
        "{view:#?}"
    );
    // Then b really goes silent.
    let before = placements(&sim);
    sim.run_for(4000, &["a", "c", "d"]);
    assert_eq!(sim.state.nodes["b"].health, NodeHealth::Down);
    assert_eq!(moved(&before, &placements(&sim)), predicted);
}

#[test]
fn plan_drain_predicts_every_move_of_the_drain() {
    let mut sim = cluster();
    let view = predict(&sim, PlanRequest::Drain { node: "b".into() });
    let predicted = moves(&view);
    assert_eq!(predicted.len(), 4, "{view:#?}");
    assert!(view.moves.iter().all(|m| m.cause == "drain"));
    let before = placements(&sim);
    sim.commit(vec![Transition::Drain(Drain { node: "b".into() })]);
    for _ in 0..4 {
        sim.settle();
        sim.execute("b", ModuleStatus::Stopped);
        sim.settle();
        for n in ["a", "c", "d"] {
            sim.execute(n, ModuleStatus::Running);
        }
        sim.run_for(1200, &["a", "b", "c", "d"]);
    }
    assert!(sim.state.modules_on("b").next().is_none(), "b is empty");
    assert_eq!(moved(&before, &placements(&sim)), predicted);
}

#[test]
fn plan_names_modules_that_would_wait_and_refuses_what_would_be_refused() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.placement.labels = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
    sim.agents
        .get_mut("a")
        .expect("a")
        .labels
        .insert("disk".into(), "ssd".into());
    sim.heartbeat_all();
    sim.step();
    sim.running(s);
    // Only a has the label: losing it leaves web waiting.
    let view = predict(&sim, PlanRequest::Lose { node: "a".into() });
    assert!(view.moves.is_empty(), "{view:#?}");
    assert_eq!(view.waiting.len(), 1, "{view:#?}");
    assert_eq!(view.waiting[0].module, "web");
    // Deploying a module no node can take: it would wait.
    let mut pending = spec("gpu");
    pending.placement.labels = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
    let view = predict(&sim, PlanRequest::Deploy { spec: pending });
    assert_eq!((view.moves.len(), view.waiting.len()), (0, 1), "{view:#?}");
    // Deploying one any node can take: placed on the least loaded.
    let view = predict(&sim, PlanRequest::Deploy { spec: spec("free") });
    assert_eq!(
        moves(&view),
        BTreeMap::from([("free".to_string(), "b".to_string())])
    );
    // What the real request would refuse, the prediction refuses.
    let err = |sim: &Sim, r| {
        what_if(&sim.state, &sim.observed, sim.now, sim.timing, &r).expect_err("refused")
    };
    assert!(matches!(
        err(&sim, PlanRequest::Lose { node: "zz".into() }),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        err(&sim, PlanRequest::Drain { node: "zz".into() }),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        err(&sim, PlanRequest::Deploy { spec: spec("web") }),
        Rejection::Conflict(_)
    ));
    sim.commit(vec![Transition::Drain(Drain { node: "b".into() })]);
    assert!(matches!(
        err(&sim, PlanRequest::Drain { node: "b".into() }),
        Rejection::Conflict(_)
    ));
}
