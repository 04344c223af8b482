//! Failover (claim 1, second half, and claim 2): restores exhausted move
//! the module to the least loaded matching node; a failover node that fails
//! too hands it to the next, up to `failover.max_nodes`, then the module is
//! failed with a reason; a new leader carries a failover on from where the
//! replicated state says it is.

use proto::heartbeat::{Directive, ModuleStatus, Report, ReportKind};

use super::*;

#[test]
fn restores_exhausted_fail_over_to_least_loaded_matching_node() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.agents
        .get_mut("c")
        .unwrap()
        .labels
        .insert("zone".into(), "east".into());
    sim.agents
        .get_mut("b")
        .unwrap()
        .labels
        .insert("zone".into(), "east".into());
    sim.heartbeat_all();
    sim.step();
    let mut other = spec("other");
    other.placement.node = Some("b".into());
    sim.running(other);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.placement.labels.clear();
    sim.running(s);
    // web may run anywhere, but we want the failover to prefer c (east, empty) over b (loaded).
    std::sync::Arc::make_mut(&mut sim.state.modules.get_mut("web").unwrap().spec)
        .placement
        .labels
        .insert("zone".into(), "east".into());
    for attempt in 1..=2 {
        sim.set_status("a", "web", ModuleStatus::Failed);
        sim.step();
        assert_eq!(sim.module("web").restore_attempts, attempt);
        sim.execute("a", ModuleStatus::Failed);
        sim.step();
    }
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::FailingOver, "{:?}", sim.kinds("web"));
    assert_eq!(sim.node_of("web"), "c");
    assert_eq!(m.failovers, 1);
    assert_eq!(m.tried_nodes, ["a"]);
    // The old node is told to stop; the new one installs once the old copy is known down.
    assert!(matches!(&sim.directives("a")[..], [Directive::Stop(s)] if s.module == "web"));
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    assert!(matches!(&sim.directives("c")[..], [Directive::Install(i)] if i.epoch == epoch));
    sim.execute("c", ModuleStatus::Running);
    sim.run_for(1200, &["a", "b", "c"]);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    let kinds = sim.kinds("web");
    for k in [
        EventKind::FailoverStarted,
        EventKind::PackageRetrieved,
        EventKind::Installed,
        EventKind::FailoverCompleted,
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

#[test]
fn failover_node_failing_too_moves_to_next_node_then_gives_up() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.restart.attempts = 1;
    sim.running(s);
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    let first = sim.node_of("web");
    assert_ne!(first, "a");
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    // The install on the failover node fails (claim 2): next node.
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    sim.agents.get_mut(&first).unwrap().reports.push(Report {
        module: "web".into(),
        epoch,
        kind: ReportKind::InstallFailed,
        message: "sha256 mismatch".into(),
    });
    sim.execute(&first, ModuleStatus::InstallFailed);
    sim.step();
    let second = sim.node_of("web");
    assert!(second != "a" && second != first, "moved to {second}");
    assert_eq!(
        sim.module("web").tried_nodes,
        vec!["a".to_string(), first.clone()]
    );
    assert!(sim.kinds("web").contains(&EventKind::FailoverFailed));
    sim.execute(&first, ModuleStatus::Stopped);
    sim.settle();
    // The second failover node starts it, but it dies before it is healthy.
    sim.execute(&second, ModuleStatus::Running);
    sim.set_status(&second, "web", ModuleStatus::Failed);
    sim.step();
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Failed, "{:?}", sim.kinds("web"));
    let reason = m.reason.clone().unwrap();
    assert!(reason.contains("failover.max_nodes = 2"), "{reason}");
    assert!(sim.kinds("web").ends_with(&[
        EventKind::StartFailed,
        EventKind::FailoverFailed,
        EventKind::ModuleFailed
    ]));
}

#[test]
fn no_eligible_node_fails_with_reason() {
    let mut sim = Sim::new(&["a"]);
    let mut s = spec("web");
    s.restart.attempts = 1;
    sim.running(s);
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Failed);
    assert!(
        m.reason.as_deref().unwrap().contains("no eligible node"),
        "{:?}",
        m.reason
    );
}

#[test]
fn new_leader_gives_a_grace_window_and_continues_a_failover() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.restart.attempts = 1;
    sim.running(s);
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    let target = sim.node_of("web");
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    // Leader change: observations are lost, the clock is new.
    sim.new_term(50_000);
    sim.now = 50_000;
    let p = sim.step();
    assert!(
        p.transitions.is_empty(),
        "no node declared down, nothing re-decided: {p:?}"
    );
    sim.run_for(3000, &["a", "b", "c"]);
    assert_eq!(
        sim.module("web").placement.as_ref().unwrap().epoch,
        epoch,
        "no second failover"
    );
    sim.execute(&target, ModuleStatus::Running);
    sim.run_for(1200, &["a", "b", "c"]);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(sim.module("web").failovers, 1);
}
