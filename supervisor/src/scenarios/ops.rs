//! The operator's ways back: undrain a node, reset a failed module, forget
//! a down node, and remove a module through `stopped`. Each is refused
//! (with the reason, and no effect) when it does not apply.

use proto::heartbeat::{Directive, ModuleStatus};

use super::*;

/// Commits one transition; its outcome.
fn one(sim: &mut Sim, t: Transition) -> Outcome {
    sim.commit(vec![t]).outcomes.remove(0)
}

/// Commits `t`, which must be rejected with a message containing `why`,
/// and checks it changed nothing but the applied index.
fn refused(sim: &mut Sim, t: Transition, why: &str) -> Rejection {
    let before = sim.state.clone();
    match one(sim, t.clone()) {
        Outcome::Rejected(r) => {
            assert!(r.message().contains(why), "{t:?}: {r:?}, not {why:?}");
            let mut after = sim.state.clone();
            after.last_index = before.last_index;
            assert_eq!(after, before, "{t:?} was rejected but changed the state");
            r
        }
        o => panic!("{t:?}: {o:?}, expected a rejection ({why})"),
    }
}

/// The state's kept size equals the size measured afresh (a decoded
/// snapshot measures every entry again).
fn assert_size_kept(sim: &Sim) {
    let decoded: ClusterState =
        proto::decode(&proto::encode(&sim.state).expect("encode")).expect("decode");
    assert_eq!(sim.state.size(), decoded.size());
}

/// The events about `node` (no module), oldest first.
fn node_kinds(sim: &Sim, node: &str) -> Vec<EventKind> {
    sim.state
        .events
        .iter()
        .filter(|e| e.node.as_deref() == Some(node) && e.module.is_none())
        .map(|e| e.kind)
        .collect()
}

#[test]
fn undrain_lets_a_drained_node_take_modules_again() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    refused(
        &mut sim,
        Transition::Undrain(Undrain { node: "a".into() }),
        "node \"a\" is not draining",
    );
    refused(
        &mut sim,
        Transition::Undrain(Undrain { node: "zz".into() }),
        "unknown node \"zz\"",
    );
    sim.commit(vec![Transition::Drain(Drain { node: "a".into() })]);
    sim.step();
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    sim.execute("b", ModuleStatus::Running);
    sim.run_for(1200, &["a", "b"]);
    assert_eq!(sim.node_of("web"), "b");
    // Drained: a new module goes to b although a is empty.
    sim.running(spec("api"));
    assert_eq!(sim.node_of("api"), "b", "a drained node takes nothing");

    assert!(matches!(
        one(&mut sim, Transition::Undrain(Undrain { node: "a".into() })),
        Outcome::Applied { .. }
    ));
    assert!(!sim.state.nodes["a"].draining);
    assert_eq!(
        node_kinds(&sim, "a").last(),
        Some(&EventKind::NodeUndrained)
    );
    // a takes modules again: the next one goes there (fewest modules).
    let node = sim.running(spec("db"));
    assert_eq!(node, "a");
    assert_eq!(sim.module("db").state, ModuleState::Running);
    // ... and so does a failover from b.
    let mut cache = spec("cache");
    cache.placement.node = Some("b".into());
    cache.restart.attempts = 0;
    sim.running(cache);
    assert_eq!(sim.node_of("cache"), "b");
    sim.set_status("b", "cache", ModuleStatus::Failed);
    sim.step();
    assert_eq!(sim.node_of("cache"), "a", "{:?}", sim.kinds("cache"));
    // Undrained twice: refused, nothing recorded.
    refused(
        &mut sim,
        Transition::Undrain(Undrain { node: "a".into() }),
        "not draining",
    );
}

/// Brings `web` (one restore, one failover node) to `failed`: it crashes on
/// a until its restore is spent, fails over to b, and b's install fails.
fn failed_web(sim: &mut Sim) {
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    web.restart.attempts = 1;
    web.failover.max_nodes = 1;
    sim.running(web);
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    assert_eq!(sim.node_of("web"), "b", "{:?}", sim.kinds("web"));
    sim.execute("a", ModuleStatus::Stopped);
    sim.settle();
    sim.execute("b", ModuleStatus::InstallFailed);
    sim.step();
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Failed, "{:?}", sim.kinds("web"));
    assert_eq!((m.failovers, m.restore_attempts), (1, 1));
    assert_eq!(m.tried_nodes, vec!["a".to_string()]);
}

#[test]
fn reset_places_a_failed_module_again_with_counters_cleared() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.running(spec("api"));
    refused(
        &mut sim,
        Transition::Reset(Reset {
            module: "api".into(),
        }),
        "module \"api\" is running, not failed: only a failed module can be reset",
    );
    refused(
        &mut sim,
        Transition::Reset(Reset {
            module: "nope".into(),
        }),
        "unknown module \"nope\"",
    );
    failed_web(&mut sim);
    // Failed is final until an operator resets it: nothing is planned.
    sim.run_for(3000, &["a", "b"]);
    assert_eq!(sim.module("web").state, ModuleState::Failed);
    let old_epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    // Its package version quarantined (it failed on a and b): a reset
    // would only make it wait, so it is refused until the quarantine ends.
    let package = proto::manifest::PackageRef::new("web", "1.0.0");
    sim.commit(vec![Transition::QuarantinePackage(QuarantinePackage {
        package: package.clone(),
        nodes: vec!["a".into(), "b".into()],
        reason: "failed on a and b".into(),
    })]);
    refused(
        &mut sim,
        Transition::Reset(Reset {
            module: "web".into(),
        }),
        "uses package web@1.0.0, which is quarantined (it failed on several nodes): lift the quarantine first",
    );
    sim.commit(vec![Transition::LiftQuarantine(LiftQuarantine { package })]);
    assert_eq!(sim.module("web").state, ModuleState::Failed);

    assert!(matches!(
        one(
            &mut sim,
            Transition::Reset(Reset {
                module: "web".into()
            })
        ),
        Outcome::Applied { .. }
    ));
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Pending);
    assert_eq!(
        (m.failovers, m.restore_attempts, m.episode_failovers),
        (0, 0, 0)
    );
    assert!(m.tried_nodes.is_empty() && m.reason.is_none());
    let reset = sim.state.events.back().expect("event");
    assert_eq!(reset.kind, EventKind::ModuleReset);
    assert!(
        reset
            .detail
            .get("reason")
            .is_some_and(|r| r.contains("failover.max_nodes")),
        "{reset:?}"
    );
    // Nothing is installed for the old placement while it waits.
    assert!(
        sim.directives("b")
            .iter()
            .all(|d| !matches!(d, Directive::Install(_)))
    );
    // Placed again (on a, its preferred node), and it runs.
    sim.settle();
    let p = sim.module("web").placement.clone().expect("placed");
    assert_eq!(p.node, "a");
    assert!(p.epoch > old_epoch);
    assert!(
        sim.directives("b")
            .iter()
            .any(|d| matches!(d, Directive::Stop(s) if s.module == "web")),
        "b's failed copy is told to stop"
    );
    sim.execute("b", ModuleStatus::Stopped);
    sim.execute("a", ModuleStatus::Running);
    sim.run_for(1200, &["a", "b"]);
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Running, "{:?}", sim.kinds("web"));
    assert_eq!((m.failovers, m.restore_attempts), (0, 0));
    // Counters start afresh: a crash is restored in place again.
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    assert_eq!(sim.module("web").state, ModuleState::Restoring);
    assert_eq!(sim.kinds("web").last(), Some(&EventKind::RestoreOrdered));
    assert_size_kept(&sim);
}

#[test]
fn reset_on_the_same_node_replaces_the_failed_copy() {
    // Only a is eligible (labels): the reset module goes back to a, where
    // the agent replaces its failed copy with the new epoch.
    let mut sim = Sim::new(&["a", "b"]);
    sim.agents
        .get_mut("a")
        .unwrap()
        .labels
        .insert("disk".into(), "ssd".into());
    sim.heartbeat_all();
    sim.settle();
    let mut db = spec("db");
    db.placement.labels.insert("disk".into(), "ssd".into());
    db.restart.attempts = 0;
    sim.running(db);
    sim.set_status("a", "db", ModuleStatus::Failed);
    sim.step();
    assert_eq!(
        sim.module("db").state,
        ModuleState::Failed,
        "{:?}",
        sim.kinds("db")
    );
    sim.commit(vec![Transition::Reset(Reset {
        module: "db".into(),
    })]);
    sim.settle();
    let p = sim.module("db").placement.clone().expect("placed");
    assert_eq!((p.node.as_str(), p.previous.as_deref()), ("a", None));
    sim.execute("a", ModuleStatus::Running);
    sim.run_for(1200, &["a", "b"]);
    assert_eq!(sim.module("db").state, ModuleState::Running);
}

#[test]
fn node_rm_forgets_a_down_node_and_what_waited_for_it() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.agents
        .get_mut("a")
        .unwrap()
        .labels
        .insert("disk".into(), "ssd".into());
    sim.heartbeat_all();
    sim.settle();
    let mut db = spec("db");
    db.placement.labels.insert("disk".into(), "ssd".into());
    sim.running(db);
    assert_eq!(sim.node_of("db"), "a");
    let mut web = spec("web");
    web.placement.node = Some("c".into());
    sim.running(web);

    // Not down: refused, naming the status.
    refused(
        &mut sim,
        Transition::RemoveNode(RemoveNode { node: "a".into() }),
        "node \"a\" is ready, not down: only a down node can be removed",
    );
    refused(
        &mut sim,
        Transition::RemoveNode(RemoveNode { node: "zz".into() }),
        "unknown node \"zz\"",
    );
    sim.commit(vec![Transition::Drain(Drain { node: "b".into() })]);
    refused(
        &mut sim,
        Transition::RemoveNode(RemoveNode { node: "b".into() }),
        "node \"b\" is draining, not down",
    );
    // a and c go silent: suspect first (still refused), then down.
    sim.run_for(2100, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Suspect);
    refused(
        &mut sim,
        Transition::RemoveNode(RemoveNode { node: "a".into() }),
        "node \"a\" is suspect, not down",
    );
    sim.commit(vec![Transition::Undrain(Undrain { node: "b".into() })]);
    sim.run_for(1500, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
    // db needs a's label: it waits for a.
    let m = sim.module("db");
    assert_eq!(m.state, ModuleState::FailingOver);
    assert!(
        m.reason.as_deref().unwrap().contains("not ready: a"),
        "{:?}",
        m.reason
    );
    // web moved off c to b.
    assert_eq!(sim.node_of("web"), "b");

    for n in ["a", "c"] {
        assert!(matches!(
            one(
                &mut sim,
                Transition::RemoveNode(RemoveNode { node: n.into() })
            ),
            Outcome::Applied { .. }
        ));
    }
    assert!(!sim.state.nodes.contains_key("a") && !sim.state.nodes.contains_key("c"));
    let removed = sim
        .state
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::NodeRemoved && e.node.as_deref() == Some("a"))
        .expect("node_removed");
    assert_eq!(
        removed.detail.get("modules").map(String::as_str),
        Some("db")
    );
    // Nothing points at a removed node any more.
    for (name, m) in &sim.state.modules {
        let p = m.placement.as_ref();
        for gone in ["a", "c"] {
            assert!(
                p.is_none_or(|p| p.node != gone && p.previous.as_deref() != Some(gone))
                    && !m.tried_nodes.iter().any(|t| t == gone),
                "{name} still names {gone}: {m:?}"
            );
        }
    }
    assert!(
        sim.state.placed.keys().all(|n| n == "b"),
        "{:?}",
        sim.state.placed
    );
    let db = sim.module("db");
    assert_eq!(
        (db.state, db.placement.as_ref()),
        (ModuleState::Pending, None)
    );
    assert!(db.reason.as_deref().unwrap().contains("node a was removed"));
    assert_size_kept(&sim);
    // The leader heard a before: that is no reason to register it again.
    sim.run_for(3000, &["b"]);
    assert!(!sim.state.nodes.contains_key("a"));
    assert_eq!(sim.module("db").state, ModuleState::Pending);
    // a's agent comes back (its disk kept the label): a new node, and db
    // runs there.
    sim.heartbeat("a");
    sim.settle();
    assert_eq!(
        node_kinds(&sim, "a").last(),
        Some(&EventKind::NodeRegistered)
    );
    assert_eq!(sim.node_of("db"), "a");
    sim.execute("a", ModuleStatus::Running);
    sim.run_for(1200, &["a", "b"]);
    assert_eq!(sim.module("db").state, ModuleState::Running);
}

#[test]
fn removed_module_is_stopped_until_its_copy_is_stopped() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    assert!(matches!(
        one(
            &mut sim,
            Transition::StopModule(StopModule {
                module: "web".into()
            })
        ),
        Outcome::Applied { .. }
    ));
    let m = sim.module("web");
    assert_eq!(m.state, ModuleState::Stopped);
    assert!(
        m.reason
            .as_deref()
            .unwrap()
            .contains("waiting for its copy on a"),
        "{:?}",
        m.reason
    );
    assert_eq!(sim.kinds("web").last(), Some(&EventKind::ModuleStopping));
    refused(
        &mut sim,
        Transition::StopModule(StopModule {
            module: "web".into(),
        }),
        "module \"web\" is already being removed",
    );
    // A plan made before the removal cannot bring it back.
    refused(
        &mut sim,
        Transition::Place(Place {
            module: "web".into(),
            node: "b".into(),
            expect_epoch: Some(epoch),
            cause: PlaceCause::Failover { reason: "x".into() },
        }),
        "being removed",
    );
    refused(
        &mut sim,
        Transition::GiveUp(GiveUp {
            module: "web".into(),
            epoch: Some(epoch),
            reason: "x".into(),
        }),
        "being removed",
    );
    // The copy still runs on a: the module stays, stopped, and a is told
    // to stop it.
    sim.run_for(3000, &["a", "b"]);
    assert_eq!(sim.module("web").state, ModuleState::Stopped);
    assert!(
        sim.directives("a")
            .iter()
            .any(|d| matches!(d, Directive::Stop(s) if s.module == "web")),
        "{:?}",
        sim.directives("a")
    );
    // A new leader carries it on from the log: it waits for a's table.
    sim.new_term(50_000);
    sim.now = 50_000;
    sim.settle();
    assert_eq!(sim.module("web").state, ModuleState::Stopped);
    sim.run_for(600, &["a", "b"]);
    assert_eq!(
        sim.module("web").state,
        ModuleState::Stopped,
        "a still runs it"
    );
    // a stops it: the module disappears.
    sim.execute("a", ModuleStatus::Stopped);
    sim.step();
    assert!(!sim.state.modules.contains_key("web"));
    assert!(!sim.state.versions.contains_key("web"));
    assert_eq!(sim.kinds("web").last(), Some(&EventKind::ModuleRemoved));
    assert!(sim.state.placed.values().all(|s| !s.contains("web")));
    assert_size_kept(&sim);
    refused(
        &mut sim,
        Transition::StopModule(StopModule {
            module: "web".into(),
        }),
        "unknown module \"web\"",
    );
}

#[test]
fn removed_module_goes_at_once_when_no_copy_can_run() {
    let mut sim = Sim::new(&["a", "b"]);
    // Never placed (no node has its label): gone at once.
    let mut pending = spec("pending");
    pending
        .placement
        .labels
        .insert("zone".into(), "nowhere".into());
    sim.deploy(pending);
    sim.settle();
    sim.commit(vec![Transition::StopModule(StopModule {
        module: "pending".into(),
    })]);
    assert!(!sim.state.modules.contains_key("pending"));
    assert_eq!(sim.kinds("pending").last(), Some(&EventKind::ModuleRemoved));
    assert!(!sim.kinds("pending").contains(&EventKind::ModuleStopping));
    // Stopped on a node that then goes down: the lease ran out there, so
    // the copy is known stopped and the module goes.
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    sim.commit(vec![Transition::StopModule(StopModule {
        module: "web".into(),
    })]);
    assert_eq!(sim.module("web").state, ModuleState::Stopped);
    sim.run_for(2100, &["b"]);
    assert!(sim.state.modules.contains_key("web"), "suspect is not down");
    sim.run_for(1500, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
    assert!(
        !sim.state.modules.contains_key("web"),
        "{:?}",
        sim.kinds("web")
    );
    // Replicas applying the same log agree.
    let mut replica = ClusterState::default();
    for (index, batch) in &sim.log {
        replica.apply(*index, batch);
    }
    assert_eq!(replica, sim.state);
}
