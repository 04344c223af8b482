//! Versions: updates as health-gated rollouts, automatic reverts,
//! rollbacks, a leader change in the middle of a rollout, and quarantined
//! package versions (which stop the churn of a version that fails
//! everywhere).

use proto::heartbeat::ModuleStatus::{Failed, Running};
use proto::spec::Fencing;

use super::*;
use crate::plan::QuarantinePolicy;

const ALL: [&str; 3] = ["a", "b", "c"];

fn with_version(mut spec: ModuleSpec, version: &str) -> ModuleSpec {
    spec.package = PackageRef::new("web", version);
    spec
}

fn update(sim: &mut Sim, spec: ModuleSpec) -> Outcome {
    sim.commit(vec![Transition::Update(Update { spec })])
        .outcomes
        .remove(0)
}

fn versions(sim: &Sim, name: &str) -> Versions {
    sim.state.versions_of(name).expect("module").into_owned()
}

fn outcomes(sim: &Sim, name: &str) -> Vec<(u32, RevisionOutcome, bool)> {
    versions(sim, name)
        .history
        .iter()
        .map(|r| (r.revision, r.outcome, r.good))
        .collect()
}

fn rollout_state(sim: &Sim, name: &str) -> Option<RolloutState> {
    versions(sim, name).rollout.map(|r| r.state)
}

/// Nodes whose agent was told to install `module`, in the order told.
fn installs(sim: &Sim, node: &str, module: &str) -> usize {
    sim.directives(node)
        .iter()
        .filter(|d| matches!(d, Directive::Install(i) if i.module == module))
        .count()
}

/// The installed version and epoch the agent on `node` holds for `module`.
fn held(sim: &Sim, node: &str, module: &str) -> Option<u64> {
    sim.agents[node]
        .modules
        .iter()
        .find(|(e, _)| e.module == module)
        .map(|(e, _)| e.epoch)
}

#[test]
fn update_rolls_out_in_place_and_completes_once_healthy() {
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    let old_epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    assert_eq!(outcomes(&sim, "web"), [(1, RevisionOutcome::Active, true)]);

    let out = update(&mut sim, with_version(spec("web"), "1.0.1"));
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::InProgress));
    assert_eq!(sim.module("web").spec.package.version, "1.0.1");
    sim.settle();
    // Placed again on its own node under a new epoch: the agent replaces
    // the old copy there (stopping it first), so no other node is involved.
    let p = sim.module("web").placement.clone().unwrap();
    assert_eq!(p.node, node);
    assert!(p.epoch > old_epoch);
    assert_eq!(p.previous, None);
    assert_eq!(p.cause, PlaceCause::Rollout { revision: 2 });
    assert_eq!(
        sim.module("web").package.as_ref().unwrap().manifest.version,
        "1.0.1"
    );
    for other in ALL.iter().filter(|n| **n != node) {
        assert_eq!(installs(&sim, other, "web"), 0);
    }
    sim.execute(&node, Running);
    assert_eq!(held(&sim, &node, "web"), Some(p.epoch));
    // Health-gated: not completed before min_healthy_ms.
    sim.run_for(600, &ALL);
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::InProgress));
    sim.run_for(600, &ALL);
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Completed));
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(
        outcomes(&sim, "web"),
        [
            (1, RevisionOutcome::Superseded, true),
            (2, RevisionOutcome::Active, true)
        ]
    );
    let kinds = sim.kinds("web");
    assert!(kinds.contains(&EventKind::RolloutStarted));
    assert_eq!(kinds.last(), Some(&EventKind::RolloutCompleted));
    // The same spec again changes nothing.
    let before = sim.state.clone();
    let out = update(&mut sim, with_version(spec("web"), "1.0.1"));
    assert!(matches!(out, Outcome::Applied { .. }));
    assert_eq!(sim.state.versions, before.versions);
    assert_eq!(sim.state.events, before.events);
}

#[test]
fn a_failing_update_reverts_to_the_last_good_revision() {
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    update(&mut sim, with_version(spec("web"), "1.0.2"));
    sim.settle();
    let bad_epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    // The new revision exits at start: no restore in place, no failover to
    // another node, but back to revision 1.
    sim.execute(&node, Failed);
    sim.step();
    let v = versions(&sim, "web");
    assert_eq!(v.revision, 1);
    let r = v.rollout.clone().unwrap();
    assert_eq!((r.from, r.to, r.state), (2, 1, RolloutState::Reverted));
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("before it was healthy"),
        "{r:?}"
    );
    assert_eq!(sim.module("web").spec.package.version, "1.0.0");
    assert!(
        sim.module("web")
            .reason
            .as_deref()
            .unwrap()
            .contains("revision 2 failed")
    );
    sim.settle();
    let p = sim.module("web").placement.clone().unwrap();
    assert!(p.epoch > bad_epoch);
    assert_eq!(p.node, node, "back on its node");
    assert_eq!(p.cause, PlaceCause::Rollout { revision: 1 });
    sim.execute(&node, Running);
    sim.run_for(1200, &ALL);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(sim.module("web").failovers, 0);
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Reverted));
    assert_eq!(
        outcomes(&sim, "web"),
        [
            (1, RevisionOutcome::Active, true),
            (2, RevisionOutcome::Failed, false)
        ]
    );
    let kinds = sim.kinds("web");
    assert!(kinds.contains(&EventKind::StartFailed));
    assert!(kinds.contains(&EventKind::RolloutReverted));
    assert!(!kinds.contains(&EventKind::FailoverStarted));
}

#[test]
fn a_failed_install_reverts_and_so_does_a_crash_inside_the_health_gate() {
    // The install fails.
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    update(&mut sim, with_version(spec("web"), "1.0.2"));
    sim.settle();
    sim.execute(&node, ModuleStatus::InstallFailed);
    sim.step();
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Reverted));
    assert_eq!(versions(&sim, "web").revision, 1);
    assert!(sim.kinds("web").contains(&EventKind::InstallFailed));

    // It starts and runs, then crashes before min_healthy_ms: no restore
    // in place (which a fresh deploy would get), a revert.
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    update(&mut sim, with_version(spec("web"), "1.0.3"));
    sim.settle();
    sim.execute(&node, Running);
    sim.run_for(600, &ALL);
    sim.set_status(&node, "web", Failed);
    sim.step();
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Reverted));
    assert!(!sim.kinds("web").contains(&EventKind::RestoreOrdered));
}

#[test]
fn rollback_returns_to_the_previous_revision_and_bad_input_changes_nothing() {
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    // Nothing to roll back to yet.
    let before = sim.state.clone();
    let out = sim
        .commit(vec![Transition::Rollback(Rollback {
            module: "web".into(),
            revision: None,
        })])
        .outcomes
        .remove(0);
    assert!(
        matches!(&out, Outcome::Rejected(Rejection::Conflict(m)) if m.contains("no earlier revision")),
        "{out:?}"
    );
    assert_eq!(sim.state.versions, before.versions);
    update(&mut sim, with_version(spec("web"), "1.0.1"));
    // An update while a rollout runs: 409, nothing changes.
    let before = sim.state.clone();
    let out = update(&mut sim, with_version(spec("web"), "1.0.5"));
    assert!(
        matches!(&out, Outcome::Rejected(Rejection::Conflict(m)) if m.contains("in progress")),
        "{out:?}"
    );
    assert_eq!(sim.state.versions, before.versions);
    assert_eq!(sim.state.modules, before.modules);
    sim.settle();
    sim.execute(&node, Running);
    sim.run_for(1200, &ALL);
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Completed));
    // Roll back to revision 1 (the previous good one).
    let out = sim
        .commit(vec![Transition::Rollback(Rollback {
            module: "web".into(),
            revision: None,
        })])
        .outcomes
        .remove(0);
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    assert_eq!(sim.module("web").spec.package.version, "1.0.0");
    sim.settle();
    sim.execute(&node, Running);
    sim.run_for(1200, &ALL);
    let v = versions(&sim, "web");
    assert_eq!(v.revision, 1);
    assert_eq!(
        v.rollout.as_ref().map(|r| (r.from, r.to, r.state)),
        Some((2, 1, RolloutState::Completed))
    );
    assert_eq!(
        outcomes(&sim, "web"),
        [
            (1, RevisionOutcome::Active, true),
            (2, RevisionOutcome::Reverted, true)
        ]
    );
    // A named revision that is not kept: 409 naming the kept ones.
    let out = sim
        .commit(vec![Transition::Rollback(Rollback {
            module: "web".into(),
            revision: Some(7),
        })])
        .outcomes
        .remove(0);
    assert!(
        matches!(&out, Outcome::Rejected(Rejection::Conflict(m)) if m.contains("kept: 1, 2")),
        "{out:?}"
    );
}

#[test]
fn at_least_one_keeps_the_old_copy_until_the_new_one_is_healthy() {
    let mut sim = Sim::new(&ALL);
    let mut s = spec("web");
    s.fencing = Fencing::AtLeastOne;
    s.placement.node = Some("a".into());
    sim.running(s.clone());
    update(&mut sim, with_version(s, "1.0.1"));
    sim.settle();
    let p = sim.module("web").placement.clone().unwrap();
    assert_ne!(p.node, "a", "the new copy starts on another node first");
    assert_eq!(p.previous.as_deref(), Some("a"));
    // The new copy is installed at once, the old one is not stopped.
    assert_eq!(installs(&sim, &p.node, "web"), 1);
    assert!(sim.directives("a").is_empty(), "{:?}", sim.directives("a"));
    sim.execute(&p.node, Running);
    sim.run_for(600, &ALL);
    assert!(sim.directives("a").is_empty(), "still running the old copy");
    assert!(held(&sim, "a", "web").is_some());
    sim.run_for(900, &ALL);
    // Healthy: the rollout completes and the old copy is stopped.
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Completed));
    assert_eq!(sim.module("web").placement.as_ref().unwrap().previous, None);
    assert!(matches!(sim.directives("a")[..], [Directive::Stop(_)]));
}

#[test]
fn at_most_one_moving_node_stops_the_old_copy_first() {
    // The new spec wants a label only c has: the rollout moves to c and the
    // new copy is installed only once a's copy is known stopped.
    let mut sim = Sim::new(&ALL);
    sim.agents
        .get_mut("c")
        .unwrap()
        .labels
        .insert("disk".into(), "ssd".into());
    sim.heartbeat_all();
    sim.step();
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s.clone());
    let mut new = with_version(s, "1.0.1");
    new.placement.node = None;
    new.placement.labels.insert("disk".into(), "ssd".into());
    update(&mut sim, new);
    sim.settle();
    let p = sim.module("web").placement.clone().unwrap();
    assert_eq!((p.node.as_str(), p.previous.as_deref()), ("c", Some("a")));
    assert_eq!(installs(&sim, "c", "web"), 0, "not before a's copy stopped");
    sim.execute("a", Running); // a executes its stop
    assert_eq!(held(&sim, "a", "web"), None);
    sim.settle();
    assert_eq!(installs(&sim, "c", "web"), 1);
}

#[test]
fn a_new_leader_finishes_a_rollout_from_the_log() {
    let mut sim = Sim::new(&ALL);
    let node = sim.running(spec("web"));
    update(&mut sim, with_version(spec("web"), "1.0.2"));
    sim.settle();
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    sim.execute(&node, Running);
    // Leader change: observations are lost, the clock is new.
    sim.new_term(50_000);
    sim.now = 50_000;
    let p = sim.step();
    assert!(p.transitions.is_empty(), "nothing re-decided: {p:?}");
    sim.run_for(1500, &ALL);
    assert_eq!(sim.module("web").placement.as_ref().unwrap().epoch, epoch);
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Completed));

    // And a new leader reverts a rollout whose new copy fails after it.
    update(&mut sim, with_version(spec("web"), "1.0.3"));
    sim.settle();
    sim.new_term(90_000);
    sim.now = 90_000;
    sim.heartbeat_all();
    sim.execute(&node, Failed);
    sim.step();
    assert_eq!(rollout_state(&sim, "web"), Some(RolloutState::Reverted));
    assert_eq!(versions(&sim, "web").revision, 2);
}

/// Deploys `n` modules of the bad version `web@6.6.6` (each with its own
/// preferred node), lets each crash at every start for `rounds` rounds,
/// and returns the failovers counted over all of them.
fn churn(policy: QuarantinePolicy, rounds: usize) -> (Sim, u32) {
    let nodes = ["a", "b", "c", "d", "e"];
    let mut sim = Sim::new(&nodes);
    sim.timing.quarantine = policy;
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let mut s = with_version(spec(&format!("m{i}")), "6.6.6");
        s.placement.node = Some(n.to_string());
        s.restart.attempts = 1;
        s.failover.max_nodes = 4;
        sim.deploy(s);
    }
    for _ in 0..rounds {
        sim.settle();
        for n in nodes {
            sim.execute(n, Failed);
        }
        sim.step();
    }
    sim.settle();
    let failovers = sim.state.modules.values().map(|m| m.failovers).sum();
    (sim, failovers)
}

#[test]
fn a_version_failing_on_two_nodes_is_quarantined_and_stops_the_churn() {
    let (sim, with) = churn(QuarantinePolicy::DEFAULT, 12);
    let (_, without) = churn(QuarantinePolicy::OFF, 12);
    let bad = PackageRef::new("web", "6.6.6");
    let q = &sim.state.packages.quarantined[&bad];
    assert!(q.nodes.len() >= 2, "{q:?}");
    assert!(q.reason.contains("failed to install or start on"), "{q:?}");
    let quarantined: Vec<_> = sim
        .state
        .events
        .iter()
        .filter(|e| e.kind == EventKind::PackageQuarantined)
        .collect();
    assert_eq!(quarantined.len(), 1);
    // No good revision: each module waits, failing over no more.
    for m in sim.state.modules.values() {
        assert_eq!(m.state, ModuleState::FailingOver, "{m:?}");
        assert!(
            m.reason.as_deref().unwrap().contains("quarantined"),
            "{m:?}"
        );
    }
    assert!(
        with < without,
        "failovers with quarantine {with}, without {without}"
    );
    assert_eq!(
        with, 0,
        "both failures were first starts, restored in place"
    );
    assert!(
        without >= 6,
        "without quarantine every module wanders: {without}"
    );
    // Nothing is installed for a held module.
    for n in ["a", "b", "c", "d", "e"] {
        assert!(
            sim.directives(n)
                .iter()
                .all(|d| !matches!(d, Directive::Install(_))),
            "{n}: {:?}",
            sim.directives(n)
        );
    }
}

#[test]
fn quarantine_refuses_the_version_reverts_modules_with_a_good_revision_and_is_lifted() {
    let mut sim = Sim::new(&["a", "b", "c", "d"]);
    sim.timing.quarantine = QuarantinePolicy::DEFAULT;
    let all = ["a", "b", "c", "d"];
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s.clone());
    // Two fresh modules fail at start with 6.6.6 on b and c.
    for (name, node) in [("x", "b"), ("y", "c")] {
        let mut bad = with_version(spec(name), "6.6.6");
        bad.placement.node = Some(node.into());
        sim.deploy(bad);
        sim.settle();
        sim.execute(node, Failed);
        sim.step();
    }
    sim.step();
    let bad = PackageRef::new("web", "6.6.6");
    assert!(sim.state.packages.is_quarantined(&bad));
    // An update or a deploy to it: 409 naming the quarantine.
    let before = sim.state.clone();
    for t in [
        Transition::Update(Update {
            spec: with_version(s.clone(), "6.6.6"),
        }),
        Transition::Deploy(Deploy {
            spec: with_version(spec("z"), "6.6.6"),
        }),
    ] {
        let out = sim.commit(vec![t]).outcomes.remove(0);
        assert!(
            matches!(&out, Outcome::Rejected(Rejection::Conflict(m)) if m.contains("web@6.6.6 is quarantined")),
            "{out:?}"
        );
    }
    assert_eq!(sim.state.modules, before.modules);
    assert_eq!(sim.state.versions, before.versions);
    // web, running 1.0.0, is not touched.
    sim.run_for(900, &all);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(sim.module("x").state, ModuleState::FailingOver);
    // Lifted: the waiting modules are placed again.
    let out = sim
        .commit(vec![Transition::LiftQuarantine(LiftQuarantine {
            package: bad.clone(),
        })])
        .outcomes
        .remove(0);
    assert!(matches!(out, Outcome::Applied { .. }));
    assert!(!sim.state.packages.failures.contains_key(&bad));
    let before = sim.module("x").placement.as_ref().unwrap().epoch;
    sim.settle();
    let p = sim.module("x").placement.clone().unwrap();
    assert!(p.epoch > before);
    assert_eq!(sim.module("x").state, ModuleState::Installing);
    assert_eq!(installs(&sim, &p.node, "x"), 1);
}

#[test]
fn a_quarantined_update_goes_back_to_the_good_revision() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.timing.quarantine = QuarantinePolicy::DEFAULT;
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s.clone());
    // web's rollout to 1.0.9 is still in its health gate (running, not yet
    // healthy) when 1.0.9 fails on two other nodes for other modules.
    update(&mut sim, with_version(s, "1.0.9"));
    sim.settle();
    sim.execute("a", Running);
    for (name, node) in [("x", "b"), ("y", "c")] {
        let mut bad = with_version(spec(name), "1.0.9");
        bad.placement.node = Some(node.into());
        sim.deploy(bad);
        sim.settle();
        sim.execute(node, Failed);
        sim.step();
    }
    sim.step();
    sim.step();
    assert!(
        sim.state
            .packages
            .is_quarantined(&PackageRef::new("web", "1.0.9"))
    );
    let v = versions(&sim, "web");
    assert_eq!(v.revision, 1);
    assert_eq!(v.rollout.as_ref().unwrap().state, RolloutState::Reverted);
    assert!(
        v.rollout
            .as_ref()
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("quarantined")
    );
}
