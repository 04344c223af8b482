//! Nodes lost and back: the failure detector's suspect and down verdicts,
//! at-most-one fencing (wait for the lease plus the drift margin), waiting
//! for a node when none is ready, and a lost node is never counted as the
//! module failing.

use proto::heartbeat::{Directive, ModuleStatus};
use proto::spec::Fencing;

use super::*;

#[test]
fn every_node_lost_waits_for_a_node_instead_of_failing() {
    // A partition cuts every agent off: nothing is eligible, but nothing
    // failed the module either; it must run again once a node is back.
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s);
    sim.run_for(4000, &[]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
    assert_eq!(sim.state.nodes["b"].health, NodeHealth::Down);
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::FailingOver, "{:?}", m.reason);
    let reason = m.reason.clone().unwrap();
    assert!(reason.contains("waiting for an eligible node"), "{reason}");
    assert!(sim.kinds("web").contains(&EventKind::FailoverWaiting));
    // Waiting is decided once, not re-committed by every pass.
    let committed = sim.state.events.len();
    sim.run_for(3000, &[]);
    assert_eq!(
        sim.state.events.len(),
        committed,
        "no new decisions while waiting"
    );
    // b comes back: the module fails over there.
    sim.run_for(600, &["b"]);
    assert_eq!(sim.state.nodes["b"].health, NodeHealth::Ready);
    assert_eq!(sim.node_of("web"), "b");
    sim.step();
    sim.execute("b", ModuleStatus::Running);
    sim.run_for(1200, &["b"]);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert!(!sim.kinds("web").contains(&EventKind::ModuleFailed));
}

#[test]
fn nodes_lost_one_after_another_never_fail_a_module() {
    // Regression (jepsen seed 2): an at-least-one module hopped off nodes
    // that went suspect one after the other, ran out of untried nodes and
    // was failed for good, though it never failed anywhere.
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut s = spec("cache");
    s.placement.node = Some("a".into());
    s.fencing = Fencing::AtLeastOne;
    s.failover.max_nodes = 2;
    sim.running(s);
    sim.run_for(2400, &["b", "c"]);
    let first = sim.node_of("cache");
    assert_ne!(first, "a");
    let other = if first == "b" { "c" } else { "b" };
    sim.run_for(2400, &["a", other]);
    sim.run_for(2400, &[]);
    let m = sim.module("cache");
    assert_eq!(m.state, ModuleState::FailingOver, "{:?}", m.reason);
    assert!(!sim.kinds("cache").contains(&EventKind::ModuleFailed));
    // Everything is back: the module runs again.
    sim.run_for(600, &["a", "b", "c"]);
    let node = sim.node_of("cache");
    sim.step();
    sim.execute(&node, ModuleStatus::Running);
    sim.run_for(1200, &["a", "b", "c"]);
    assert_eq!(sim.module("cache").state, ModuleState::Running);
}

#[test]
fn lost_node_back_with_a_fenced_copy_is_not_a_failed_start() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s);
    sim.run_for(4000, &[]);
    assert_eq!(sim.module("web").state, ModuleState::FailingOver);
    // a comes back first; its agent fenced the module while cut off.
    sim.set_status("a", "web", ModuleStatus::Fenced);
    sim.run_for(600, &["a"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Ready);
    let kinds = sim.kinds("web");
    assert!(!kinds.contains(&EventKind::StartFailed), "{kinds:?}");
    assert!(!kinds.contains(&EventKind::ModuleFailed), "{kinds:?}");
    // b is back too: the module moves there.
    sim.run_for(600, &["a", "b"]);
    assert_eq!(sim.node_of("web"), "b");
}

#[test]
fn node_down_moves_at_most_one_only_after_lease_and_drift() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s);
    let mut s2 = spec("cache");
    s2.placement.node = Some("a".into());
    s2.fencing = Fencing::AtLeastOne;
    sim.running(s2);
    // a goes silent.
    sim.run_for(2100, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Suspect);
    assert_eq!(
        sim.node_of("web"),
        "a",
        "at-most-one waits for lease + drift"
    );
    assert_eq!(sim.node_of("cache"), "b", "at-least-one moves once suspect");
    sim.run_for(1500, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
    assert_eq!(sim.node_of("web"), "b");
    sim.step();
    let placement = sim.module("web").placement.clone().unwrap();
    assert_eq!(
        placement.previous, None,
        "a down node's copy is released at once"
    );
    assert!(sim.kinds("web").contains(&EventKind::FailoverStarted));
    // a comes back: it is told to stop its stale copies.
    sim.heartbeat("a");
    sim.step();
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Ready);
    let d = sim.directives("a");
    assert_eq!(
        d.iter().filter(|d| matches!(d, Directive::Stop(_))).count(),
        2,
        "{d:?}"
    );
}
