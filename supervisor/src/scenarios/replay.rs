//! What replays and partial passes may change: stale and replayed
//! transitions are rejected without effect, replicas applying one log hold
//! byte-identical snapshots, and a pass scoped to changed nodes plans what
//! a full pass plans for them.

use proto::heartbeat::ModuleStatus;

use super::*;

#[test]
fn stale_and_replayed_transitions_are_rejected_without_effect() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.running(spec("web"));
    let before = sim.state.clone();
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    let resp = sim.commit(vec![
        Transition::Healthy(Healthy {
            module: "web".into(),
            epoch,
        }),
        Transition::RestoreOrdered(RestoreOrdered {
            module: "web".into(),
            epoch,
            seq: 1,
        }),
        Transition::Place(Place {
            module: "web".into(),
            node: "b".into(),
            expect_epoch: Some(epoch - 1),
            cause: PlaceCause::Initial,
        }),
        Transition::Deploy(Deploy { spec: spec("web") }),
    ]);
    assert!(
        resp.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Rejected(_))),
        "{resp:?}"
    );
    assert_eq!(sim.state.modules, before.modules);
    assert_eq!(sim.state.events, before.events);
}

#[test]
fn same_commands_give_byte_identical_snapshots() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let node = sim.running(spec("web"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    sim.step();
    sim.running(spec("api"));
    sim.commit(vec![Transition::Drain(Drain { node: "c".into() })]);
    sim.settle();
    // Two more replicas apply the same log, each through its own encode /
    // decode of every entry as Raft would ship it.
    let replicas: Vec<ClusterState> = (0..2)
        .map(|_| {
            let mut r = ClusterState::default();
            for (index, batch) in &sim.log {
                let shipped: Batch =
                    proto::decode(&proto::encode(batch).expect("encode")).expect("decode");
                r.apply(*index, &shipped);
            }
            r
        })
        .collect();
    let leader = proto::encode(&sim.state).expect("encode");
    assert!(sim.log.len() > 10);
    for r in &replicas {
        assert_eq!(proto::encode(r).expect("encode"), leader);
    }
}

/// A scoped pass over `sim` with `dirty` nodes, the previous pass at
/// `since`.
fn scoped(sim: &Sim, dirty: &std::collections::BTreeSet<String>, since: u64) -> crate::plan::Plan {
    crate::plan::plan_scoped(
        &sim.state,
        &sim.observed,
        sim.now,
        TIMING,
        crate::plan::Scope::Changed {
            dirty,
            since,
            sweep: None,
        },
    )
}

#[test]
fn scoped_pass_sees_dirty_nodes_and_unsettled_modules_only() {
    use std::collections::BTreeSet;
    let mut sim = Sim::new(&["a", "b"]);
    let node = sim.running(spec("web"));
    let since = sim.state.last_index;
    sim.deploy(spec("api"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    let none = BTreeSet::new();
    let p = scoped(&sim, &none, since);
    assert!(
        p.transitions
            .iter()
            .all(|t| !matches!(t, Transition::FailureDetected(_))),
        "a running module, unchanged since, on a clean node is left alone"
    );
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(pl) if pl.module == "api")),
        "a module deployed since is planned"
    );
    let dirty = BTreeSet::from([node.clone()]);
    let p = scoped(&sim, &dirty, since);
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::FailureDetected(f) if f.module == "web"))
    );
    assert_eq!(
        p,
        plan(&sim.state, &sim.observed, sim.now, TIMING),
        "here the scoped pass equals the full one"
    );
    // Looking back before web's last change, it is planned too.
    let p = scoped(&sim, &none, 0);
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::FailureDetected(f) if f.module == "web"))
    );
}

/// The sweep, the leader's safety net, looks at `count` modules after its
/// cursor, in name order, and says where it stopped; it finds a failed
/// module whose node's heartbeat the pass was not told about.
#[test]
fn sweep_looks_at_a_bounded_slice_in_name_order_and_goes_round() {
    use crate::plan::{Scope, Sweep, plan_scoped};
    use std::collections::BTreeSet;
    let mut sim = Sim::new(&["a", "b"]);
    let mut nodes = BTreeMap::new();
    for name in ["m1", "m2", "m3", "m4", "m5"] {
        nodes.insert(name, sim.running(spec(name)));
    }
    sim.set_status(&nodes["m4"], "m4", ModuleStatus::Failed);
    let none = BTreeSet::new();
    let since = sim.state.last_index;
    let swept = |after: Option<&str>| {
        let scope = Scope::Changed {
            dirty: &none,
            since,
            sweep: Some(Sweep { after, count: 2 }),
        };
        let p = plan_scoped(&sim.state, &sim.observed, sim.now, TIMING, scope);
        let detected = p
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::FailureDetected(f) if f.module == "m4"));
        (detected, p.swept_to)
    };
    assert_eq!(swept(None), (false, Some("m2".to_string())));
    assert_eq!(swept(Some("m2")), (true, Some("m4".to_string())));
    // The last slice is short: the next one starts from the first again.
    assert_eq!(swept(Some("m4")), (false, None));
    // Without a sweep, nothing changed since: nothing planned.
    assert!(scoped(&sim, &none, since).transitions.is_empty());
}

/// A quarantine may concern any module, and a window of changes that no
/// longer reaches back to the previous pass cannot say what changed: in
/// both cases the pass looks at every module.
#[test]
fn a_pass_looks_at_every_module_after_a_quarantine_or_past_the_window() {
    use crate::state::{QuarantinePackage, TOUCHES_KEPT};
    let mut sim = Sim::new(&["a"]);
    sim.running(spec("web"));
    let since = sim.state.last_index;
    assert!(sim.state.changes_since(since).is_some());
    sim.commit(vec![Transition::QuarantinePackage(QuarantinePackage {
        package: PackageRef {
            name: "other".into(),
            version: "1.0.0".into(),
        },
        nodes: vec![],
        reason: "operator".into(),
    })]);
    assert!(sim.state.changes_since(since).is_none());
    let since = sim.state.last_index;
    assert!(sim.state.changes_since(since).is_some());
    let mut state = sim.state.clone();
    let deploy = |state: &mut crate::state::ClusterState, name: &str| {
        let index = state.last_index + 1;
        let transitions = vec![Transition::Deploy(Deploy { spec: spec(name) })];
        state.apply(
            index,
            &Batch {
                at_ms: 1,
                transitions,
            },
        );
    };
    for i in 0..TOUCHES_KEPT {
        deploy(&mut state, &format!("w{i}"));
    }
    let changes = state.changes_since(since).expect("still within the window");
    assert_eq!(changes.modules.len(), TOUCHES_KEPT);
    deploy(&mut state, "one-more");
    assert!(state.changes_since(since).is_none());
    assert_eq!(
        state.changes_since(since + 1).map(|c| c.modules.len()),
        Some(TOUCHES_KEPT)
    );
}

#[test]
fn scoped_pass_looks_at_a_waiting_module_when_new_or_when_the_nodes_change() {
    use crate::state::{Drain, Undrain};
    use std::collections::BTreeSet;
    let mut sim = Sim::new(&["a"]);
    let none = BTreeSet::new();
    let placed = |p: &crate::plan::Plan| {
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(pl) if pl.module == "api"))
    };
    // a drains: api, deployed then, has nowhere to go.
    sim.commit(vec![Transition::Drain(Drain { node: "a".into() })]);
    let deployed = sim.deploy(spec("api"));
    // Deployed after the previous pass: looked at (and it waits).
    assert!(!placed(&scoped(&sim, &none, deployed - 1)));
    // a is back: the pass after that change places api, though api itself
    // is older than the previous pass.
    sim.commit(vec![Transition::Undrain(Undrain { node: "a".into() })]);
    let undrained = sim.state.last_index;
    assert_eq!(sim.state.placeable_changed_at(), undrained);
    assert!(placed(&scoped(&sim, &none, undrained - 1)));
    // A pass after a pass that saw that change leaves api to the full pass
    // (nothing changed for it since), which places it.
    assert!(!placed(&scoped(&sim, &none, undrained)));
    assert!(placed(&crate::plan::plan(
        &sim.state,
        &sim.observed,
        sim.now,
        TIMING
    )));
    // A decoded snapshot counts everything as changed at its index.
    let decoded: crate::state::ClusterState =
        proto::decode(&proto::encode(&sim.state).expect("encode")).expect("decode");
    assert_eq!(decoded.placeable_changed_at(), sim.state.last_index);
    assert_eq!(decoded, sim.state);
}
