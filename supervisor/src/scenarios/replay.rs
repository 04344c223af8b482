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
        crate::plan::Scope::Nodes { dirty, since },
    )
}

#[test]
fn scoped_pass_sees_dirty_nodes_and_unsettled_modules_only() {
    use std::collections::BTreeSet;
    let mut sim = Sim::new(&["a", "b"]);
    let node = sim.running(spec("web"));
    sim.deploy(spec("api"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    let none = BTreeSet::new();
    let p = scoped(&sim, &none, 0);
    assert!(
        p.transitions
            .iter()
            .all(|t| !matches!(t, Transition::FailureDetected(_))),
        "a running module on a clean node is left to the full pass"
    );
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(pl) if pl.module == "api")),
        "pending modules are always planned"
    );
    let dirty = BTreeSet::from([node.clone()]);
    let p = scoped(&sim, &dirty, 0);
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
