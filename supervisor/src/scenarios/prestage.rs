//! Pre-staging: the node a module would fail over to next gets a `Prefetch`
//! directive with the placement's package, its agent reports the package
//! cached, the leader records `package_prestaged` once and stops repeating
//! the directive, and the failover then picks that very node (the planner
//! and the prediction share one rule, `plan::next_node`).

use proto::heartbeat::ModuleStatus;

use super::*;
use crate::plan::next_node;

/// The modules `node` is told to pre-stage now.
fn prefetched(sim: &Sim, node: &str) -> Vec<String> {
    sim.prefetches(node).into_iter().map(|p| p.module).collect()
}

fn epoch_of(sim: &Sim, module: &str) -> u64 {
    sim.module(module).placement.as_ref().expect("placed").epoch
}

#[test]
fn prestaged_node_chosen_for_the_failover() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut other = spec("other");
    other.placement.node = Some("b".into());
    sim.running(other);
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    // a runs web, b runs other, c nothing: web's next node is c.
    let predicted = next_node(&sim.state, sim.module("web")).cloned();
    assert_eq!(predicted.as_deref(), Some("c"));
    assert!(!prefetched(&sim, "a").contains(&"web".to_string()));
    assert!(!prefetched(&sim, "b").contains(&"web".to_string()));
    let to_c = sim.prefetches("c");
    let p = to_c
        .iter()
        .find(|p| p.module == "web")
        .expect("c is told to pre-stage web");
    assert_eq!(p.epoch, epoch_of(&sim, "web"));
    assert_eq!(Some(&p.package), sim.module("web").package.as_deref());
    assert_eq!(p.depmgr, "http://depmgr");

    // c's agent reports it cached: recorded once, and no longer repeated.
    let outcomes = sim.prestage("c");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Applied { .. })),
        "{outcomes:?}"
    );
    let recorded: Vec<&Event> = sim
        .state
        .events
        .iter()
        .filter(|e| e.kind == EventKind::PackagePrestaged && e.module.as_deref() == Some("web"))
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].node.as_deref(), Some("c"));
    assert_eq!(
        recorded[0].detail.get("epoch"),
        Some(&epoch_of(&sim, "web").to_string())
    );
    assert_eq!(
        recorded[0].detail.get("package").map(String::as_str),
        Some("web@1.0.0")
    );
    assert!(prefetched(&sim, "c").is_empty(), "repeated once reported");
    // A repeat of the record (a new leader learning it again) is refused.
    let again = sim.commit(vec![Transition::RecordPrestaged(RecordPrestaged {
        module: "web".into(),
        node: "c".into(),
        epoch: epoch_of(&sim, "web"),
    })]);
    assert!(
        matches!(
            &again.outcomes[0],
            Outcome::Rejected(Rejection::Conflict(_))
        ),
        "{again:?}"
    );

    // web fails until its restores are spent: the failover goes to c.
    for _ in 0..2 {
        sim.set_status("a", "web", ModuleStatus::Failed);
        sim.step();
        sim.execute("a", ModuleStatus::Failed);
        sim.step();
    }
    assert_eq!(sim.module("web").state, ModuleState::FailingOver);
    assert_eq!(sim.node_of("web"), "c", "{:?}", sim.kinds("web"));
}

/// A new leader knows nothing pre-staged: it repeats the directive, the
/// agent answers from its cache, and the record is not made twice.
#[test]
fn new_leader_repeats_the_prefetch_once_and_records_nothing_twice() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    assert_eq!(prefetched(&sim, "b"), ["web"]);
    sim.prestage("b");
    assert!(prefetched(&sim, "b").is_empty());
    let events = sim.state.events.len();
    // Leader change: observations start empty.
    sim.new_term(0);
    sim.heartbeat_all();
    assert_eq!(prefetched(&sim, "b"), ["web"]);
    let outcomes = sim.prestage("b");
    assert!(
        matches!(&outcomes[..], [Outcome::Rejected(Rejection::Conflict(_))]),
        "{outcomes:?}"
    );
    assert_eq!(sim.state.events.len(), events);
    assert!(prefetched(&sim, "b").is_empty());
}

/// The prediction follows the failover episode: while web fails over to c
/// (a tried), its next node is b, and when c's install fails the failover
/// goes to b, which was told to pre-stage it meanwhile.
#[test]
fn next_failover_node_is_prestaged_during_a_failover() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    web.restart.attempts = 1;
    sim.running(web);
    let mut other = spec("other");
    other.placement.node = Some("b".into());
    sim.running(other);
    assert_eq!(
        next_node(&sim.state, sim.module("web")).map(String::as_str),
        Some("c")
    );
    // One restore in place, which fails too: failover.
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    assert_eq!(sim.node_of("web"), "c");
    assert_eq!(sim.module("web").tried_nodes, ["a"]);
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    // On c now; a failed it, so the next node is b, loaded or not.
    assert_eq!(
        next_node(&sim.state, sim.module("web")).map(String::as_str),
        Some("b")
    );
    assert!(prefetched(&sim, "b").contains(&"web".to_string()));
    assert!(!prefetched(&sim, "a").contains(&"web".to_string()));
    sim.prestage("b");
    sim.execute("c", ModuleStatus::InstallFailed);
    sim.step();
    assert_eq!(sim.node_of("web"), "b", "{:?}", sim.kinds("web"));
}

/// Nothing is pre-staged on a node the rule would not pick: one that is
/// draining, or whose labels do not match; nor for a module with no
/// package yet, nor for a failed one.
#[test]
fn no_prefetch_where_no_failover_would_go() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.agents
        .get_mut("c")
        .expect("agent")
        .labels
        .insert("zone".into(), "east".into());
    sim.agents
        .get_mut("a")
        .expect("agent")
        .labels
        .insert("zone".into(), "east".into());
    sim.heartbeat_all();
    sim.step();
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    web.placement.labels.insert("zone".into(), "east".into());
    sim.running(web);
    assert!(prefetched(&sim, "b").is_empty(), "labels do not match");
    assert_eq!(prefetched(&sim, "c"), ["web"]);
    sim.commit(vec![Transition::Drain(Drain { node: "c".into() })]);
    assert!(prefetched(&sim, "c").is_empty(), "draining");
    assert_eq!(next_node(&sim.state, sim.module("web")), None);
}
