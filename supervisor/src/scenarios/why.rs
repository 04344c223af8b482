//! Why: every event's cause, and each live module's causal chain (see
//! `state::why`): a restore order points at the failure it answers, a
//! failover at the last restore that failed or at the node that went
//! down, a node down at its suspect verdict; the chain outlives the event
//! ring and goes with the module.

use proto::heartbeat::ModuleStatus;

use super::*;

/// The event of `module`'s chain with `kind`, newest first.
fn newest(sim: &Sim, module: &str, kind: EventKind) -> Event {
    sim.state
        .why
        .chain(module)
        .into_iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in the chain of {module}"))
}

/// The event with `index`, from the ring.
fn event(sim: &Sim, index: u64) -> Event {
    sim.state
        .events
        .iter()
        .find(|e| e.index == index)
        .cloned()
        .unwrap_or_else(|| panic!("no event {index}"))
}

#[test]
fn a_failover_after_spent_restores_points_at_the_last_restore_and_the_failure() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.restart.attempts = 2;
    sim.running(s);
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    sim.execute("a", ModuleStatus::Failed);
    sim.step();
    let chain = sim.state.why.chain("web");
    let kinds: Vec<EventKind> = chain.iter().map(|e| e.kind).collect();
    assert_eq!(kinds[0], EventKind::FailoverStarted, "{kinds:?}");
    // Newest first, every event caused by the one below it, back to the
    // deploy, which has no cause.
    for pair in chain.windows(2) {
        assert_eq!(pair[0].cause, Some(pair[1].index), "{chain:#?}");
    }
    let deploy = chain.last().expect("the chain ends");
    assert_eq!(
        (deploy.kind, deploy.cause),
        (EventKind::ModuleDeployed, None)
    );
    // The failover answers the second restore order, which answers the
    // first, which answers the failure the heartbeat showed.
    let failover = &chain[0];
    let second = event(&sim, failover.cause.expect("caused"));
    assert_eq!(
        (
            second.kind,
            second.detail.get("attempt").map_or("", String::as_str)
        ),
        (EventKind::RestoreOrdered, "2")
    );
    let first = event(&sim, second.cause.expect("caused"));
    assert_eq!(
        (
            first.kind,
            first.detail.get("attempt").map_or("", String::as_str)
        ),
        (EventKind::RestoreOrdered, "1")
    );
    let failure = event(&sim, first.cause.expect("caused"));
    assert_eq!(failure.kind, EventKind::FailureDetected);
    assert!(
        failover.explain().contains("failing over from a to b"),
        "{}",
        failover.explain()
    );
}

#[test]
fn a_move_off_a_lost_node_points_at_its_down_verdict() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s);
    // a falls silent: suspect, then down; web moves to b.
    sim.run_for(4000, &["b"]);
    assert_eq!(sim.node_of("web"), "b");
    let failover = newest(&sim, "web", EventKind::FailoverStarted);
    let verdict = event(&sim, failover.cause.expect("caused"));
    assert_eq!(verdict.node.as_deref(), Some("a"));
    assert!(
        matches!(verdict.kind, EventKind::NodeSuspect | EventKind::NodeDown),
        "{verdict:?}"
    );
    // The verdict is in the module's chain (copied), just below the move.
    let chain = sim.state.why.chain("web");
    let at = chain
        .iter()
        .position(|e| e.index == failover.index)
        .expect("in chain");
    assert_eq!(chain[at + 1], verdict);
    // The node's own events link too: down after suspect.
    let down = sim
        .state
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::NodeDown && e.node.as_deref() == Some("a"))
        .expect("a down");
    let suspect = event(&sim, down.cause.expect("caused"));
    assert_eq!(suspect.kind, EventKind::NodeSuspect);
    assert!(
        suspect.explain().contains("no heartbeat for"),
        "{}",
        suspect.explain()
    );
}

#[test]
fn a_drain_move_points_at_the_drain() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.labels.clear();
    sim.running(s);
    let from = sim.node_of("web");
    sim.commit(vec![Transition::Drain(Drain { node: from.clone() })]);
    sim.settle();
    let moved = newest(&sim, "web", EventKind::DrainMoved);
    let drain = event(&sim, moved.cause.expect("caused"));
    assert_eq!(
        (drain.kind, drain.node.as_deref()),
        (EventKind::NodeDraining, Some(from.as_str()))
    );
}

#[test]
fn the_chain_outlives_the_ring_is_bounded_and_goes_with_the_module() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    s.restart.attempts = 1_000_000;
    sim.running(s);
    let deployed = newest(&sim, "web", EventKind::ModuleDeployed);
    // Many failures and restores: the chain keeps the deploy and the
    // newest events, within its bound.
    for _ in 0..40 {
        sim.set_status("a", "web", ModuleStatus::Failed);
        sim.step();
        sim.execute("a", ModuleStatus::Running);
        sim.run_for(1200, &["a", "b"]);
    }
    let chain = sim.state.why.chain("web");
    assert_eq!(chain.len(), CHAIN_KEPT);
    assert_eq!(chain.last(), Some(&deployed));
    assert_eq!(chain[0].kind, EventKind::Restored);
    // Other modules' events push web's out of the ring: its chain stays.
    for i in 0..EVENTS_KEPT / 2 {
        let other = spec(&format!("m{i}"));
        sim.commit(vec![
            Transition::Deploy(Deploy {
                spec: other.clone(),
            }),
            Transition::Remove(Remove { module: other.name }),
        ]);
    }
    assert!(
        !sim.state
            .events
            .iter()
            .any(|e| e.module.as_deref() == Some("web")),
        "web's events left the ring"
    );
    assert_eq!(sim.state.why.chain("web"), chain);
    // Removed modules leave no chain behind.
    assert_eq!(sim.state.why.modules.len(), 1, "only web has a chain");
    let decoded: ClusterState =
        proto::decode(&proto::encode(&sim.state).expect("encode")).expect("decode");
    assert_eq!(decoded, sim.state, "chains and causes survive a snapshot");
    assert_eq!(decoded.size(), sim.state.size());
}
