//! Fleet rollouts: a package version rolled out to every module using the
//! package, `max_parallel` at a time, paused past `max_failures`, carried on
//! by a new leader from the log.

use proto::heartbeat::ModuleStatus::{self, Failed, Running};

use super::*;

const ALL: [&str; 3] = ["a", "b", "c"];

fn on(name: &str, version: &str) -> ModuleSpec {
    let mut s = spec(name);
    s.package = PackageRef::new("web", version);
    s
}

fn start(sim: &mut Sim, version: &str, max_parallel: u32, max_failures: u32) -> Outcome {
    sim.commit(vec![Transition::StartFleetRollout(StartFleetRollout {
        package: PackageRef::new("web", version),
        max_parallel,
        max_failures,
    })])
    .outcomes
    .remove(0)
}

fn set(sim: &mut Sim, id: u64, action: FleetAction) -> Outcome {
    sim.commit(vec![Transition::SetFleetRollout(SetFleetRollout {
        id,
        action,
    })])
    .outcomes
    .remove(0)
}

fn fleet(sim: &Sim, id: u64) -> FleetRollout {
    sim.state.fleet.rollouts[&id].clone()
}

/// Modules whose own rollout is in progress now.
fn in_progress(sim: &Sim) -> Vec<String> {
    sim.state
        .modules
        .keys()
        .filter(|m| {
            sim.state
                .versions_of(m)
                .is_some_and(|v| v.in_progress().is_some())
        })
        .cloned()
        .collect()
}

/// Every agent runs what it is told with `status`, time passes; returns
/// the most modules seen in progress at once.
fn drive(sim: &mut Sim, rounds: usize, status: ModuleStatus) -> usize {
    let mut most = in_progress(sim).len();
    for _ in 0..rounds {
        for n in ALL {
            sim.execute(n, status);
        }
        sim.run_for(300, &ALL);
        most = most.max(in_progress(sim).len());
    }
    most
}

/// Four modules on web@1.0.0 running, one on another package.
fn fleet_of_four() -> Sim {
    let mut sim = Sim::new(&ALL);
    for i in 0..4 {
        sim.running(on(&format!("m{i}"), "1.0.0"));
    }
    let mut db = spec("db");
    db.package = PackageRef::new("db", "2.0.0");
    sim.running(db);
    sim
}

#[test]
fn a_fleet_rollout_updates_every_module_max_parallel_at_a_time() {
    let mut sim = fleet_of_four();
    let out = start(&mut sim, "1.0.1", 2, 0);
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Running);
    assert_eq!(f.pending, ["m0", "m1", "m2", "m3"]);
    sim.step();
    let f = fleet(&sim, 1);
    assert_eq!(f.active.keys().collect::<Vec<_>>(), ["m0", "m1"]);
    assert_eq!(f.pending, ["m2", "m3"]);
    assert_eq!(sim.module("m0").spec.package.version, "1.0.1");
    assert_eq!(sim.module("m2").spec.package.version, "1.0.0");

    let most = drive(&mut sim, 20, Running);
    assert_eq!(most, 2, "never more than max_parallel rollouts at once");
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Completed, "{f:?}");
    assert_eq!(f.completed, ["m0", "m1", "m2", "m3"]);
    assert!(f.failed.is_empty() && f.skipped.is_empty() && f.pending.is_empty());
    for i in 0..4 {
        let m = sim.module(&format!("m{i}"));
        assert_eq!(m.spec.package.version, "1.0.1");
        assert_eq!(m.state, ModuleState::Running);
    }
    assert_eq!(sim.module("db").spec.package.version, "2.0.0");
    let kinds: Vec<EventKind> = sim
        .state
        .events
        .iter()
        .filter(|e| e.detail.contains_key("rollout"))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::FleetRolloutStarted,
            EventKind::FleetRolloutCompleted
        ]
    );
    // Nothing more is planned for it.
    assert!(
        !sim.step()
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::AdvanceFleetRollout(_)))
    );
}

#[test]
fn a_fleet_rollout_pauses_past_max_failures_and_resumes_or_cancels() {
    let mut sim = fleet_of_four();
    sim.timing.quarantine = QuarantinePolicy::OFF;
    start(&mut sim, "1.0.2", 1, 0);
    sim.step();
    assert_eq!(fleet(&sim, 1).active.keys().collect::<Vec<_>>(), ["m0"]);
    // 1.0.2 exits at start: m0 goes back to 1.0.0, and the rollout pauses
    // with m1..m3 not started.
    drive(&mut sim, 6, Failed);
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Paused, "{f:?}");
    assert_eq!(f.failed.len(), 1);
    assert_eq!(f.failed[0].0, "m0");
    assert!(f.failed[0].1.contains("reverted"), "{:?}", f.failed);
    assert!(f.reason.as_deref().unwrap().contains("m0"), "{f:?}");
    assert_eq!(f.pending, ["m1", "m2", "m3"]);
    assert_eq!(sim.module("m0").spec.package.version, "1.0.0");
    for m in ["m1", "m2", "m3"] {
        assert_eq!(sim.module(m).spec.package.version, "1.0.0");
    }
    // Paused: nothing more starts, however long.
    drive(&mut sim, 6, Running);
    assert_eq!(fleet(&sim, 1).pending, ["m1", "m2", "m3"]);

    // Resumed: the failure so far is forgiven; the next one fails too and
    // pauses it again.
    assert!(matches!(
        set(&mut sim, 1, FleetAction::Resume),
        Outcome::Applied { .. }
    ));
    sim.step();
    assert_eq!(fleet(&sim, 1).active.keys().collect::<Vec<_>>(), ["m1"]);
    drive(&mut sim, 6, Failed);
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Paused, "{f:?}");
    assert_eq!(f.pending, ["m2", "m3"]);

    // Cancelled: nothing more ever starts; it cannot be resumed.
    assert!(matches!(
        set(&mut sim, 1, FleetAction::Cancel),
        Outcome::Applied { .. }
    ));
    assert!(matches!(
        set(&mut sim, 1, FleetAction::Resume),
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    drive(&mut sim, 6, Running);
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Cancelled);
    for m in ["m2", "m3"] {
        assert_eq!(sim.module(m).spec.package.version, "1.0.0");
    }
}

#[test]
fn a_quarantined_version_pauses_the_fleet_rollout() {
    let mut sim = fleet_of_four();
    sim.timing.quarantine = QuarantinePolicy::DEFAULT;
    start(&mut sim, "6.6.6", 2, 10);
    sim.step();
    sim.settle();
    // 6.6.6 exits at start on the nodes of m0 and m1 (two nodes).
    for m in ["m0", "m1"] {
        let node = sim.node_of(m);
        sim.execute(&node, Failed);
    }
    sim.run_for(600, &ALL);
    drive(&mut sim, 10, Running);
    assert!(
        sim.state
            .packages
            .is_quarantined(&PackageRef::new("web", "6.6.6"))
    );
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Paused, "{f:?}");
    assert!(
        f.reason.as_deref().unwrap().contains("quarantined"),
        "{f:?}"
    );
    // Not resumed while it lasts (409 naming the quarantine).
    match set(&mut sim, 1, FleetAction::Resume) {
        Outcome::Rejected(Rejection::Conflict(m)) => assert!(m.contains("quarantined"), "{m}"),
        other => panic!("{other:?}"),
    }
    // And no new rollout to it.
    assert!(matches!(
        start(&mut sim, "6.6.6", 1, 0),
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    for m in ["m2", "m3"] {
        assert_eq!(sim.module(m).spec.package.version, "1.0.0");
    }
}

#[test]
fn a_new_leader_carries_a_fleet_rollout_on_from_the_log() {
    let mut sim = fleet_of_four();
    start(&mut sim, "1.0.1", 1, 0);
    sim.step();
    drive(&mut sim, 2, Running);
    let before = fleet(&sim, 1);
    assert_eq!(before.state, FleetState::Running);
    assert!(!before.pending.is_empty());
    // Leader change: observations are lost, the clock is new; the log is
    // replayed into a fresh state.
    let mut replayed = ClusterState::default();
    for (index, batch) in &sim.log {
        replayed.apply(*index, batch);
    }
    assert_eq!(replayed, sim.state);
    sim.state = replayed;
    sim.new_term(60_000);
    sim.now = 60_000;
    sim.heartbeat_all();
    let most = drive(&mut sim, 40, Running);
    assert_eq!(most, 1);
    let f = fleet(&sim, 1);
    assert_eq!(f.state, FleetState::Completed, "{f:?}");
    assert_eq!(f.completed, ["m0", "m1", "m2", "m3"]);
}

#[test]
fn fleet_rollout_bad_input_and_busy_modules() {
    let mut sim = fleet_of_four();
    // Nothing uses web at another version than 1.0.0: completed at once.
    assert!(matches!(
        start(&mut sim, "1.0.0", 1, 0),
        Outcome::Applied { .. }
    ));
    assert_eq!(fleet(&sim, 1).state, FleetState::Completed);
    // An operator's own rollout of m0 is in progress: m0 waits, m1 goes.
    sim.commit(vec![Transition::Update(Update {
        spec: on("m0", "1.0.5"),
    })]);
    assert!(matches!(
        start(&mut sim, "1.0.1", 1, 0),
        Outcome::Applied { .. }
    ));
    // One open rollout per package.
    match start(&mut sim, "1.0.2", 1, 0) {
        Outcome::Rejected(Rejection::Conflict(m)) => assert!(m.contains("cancel it first"), "{m}"),
        other => panic!("{other:?}"),
    }
    sim.step();
    let f = fleet(&sim, 2);
    assert_eq!(f.active.keys().collect::<Vec<_>>(), ["m1"]);
    assert_eq!(f.pending, ["m0", "m2", "m3"]);
    // A module removed before its turn is skipped.
    sim.commit(vec![Transition::Remove(Remove {
        module: "m3".into(),
    })]);
    drive(&mut sim, 40, Running);
    let f = fleet(&sim, 2);
    assert_eq!(f.state, FleetState::Completed, "{f:?}");
    assert_eq!(f.completed, ["m1", "m0", "m2"]);
    let skipped: Vec<&str> = f.skipped.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(skipped, ["m3"], "{:?}", f.skipped);
    assert_eq!(sim.module("m0").spec.package.version, "1.0.1");
    // Unknown rollouts.
    assert!(matches!(
        set(&mut sim, 9, FleetAction::Pause),
        Outcome::Rejected(Rejection::NotFound(_))
    ));
}
