//! The cluster's identity: recorded once by the first pass, and a node
//! whose agent served another cluster recorded when it first registers;
//! such a node gets no directive until its table names this cluster.

use super::*;

/// The events of `kind`, oldest first.
fn events_of(sim: &Sim, kind: EventKind) -> Vec<Event> {
    sim.state
        .events
        .iter()
        .filter(|e| e.kind == kind)
        .cloned()
        .collect()
}

#[test]
fn the_cluster_id_is_recorded_once_by_the_first_pass() {
    let mut sim = Sim::new(&["a"]);
    let id = sim.state.cluster_id;
    assert_ne!(id, 0, "the first pass records the id");
    let recorded: Vec<u64> = sim
        .log
        .iter()
        .filter(|(_, b)| {
            b.transitions
                .iter()
                .any(|t| matches!(t, Transition::RecordClusterId(_)))
        })
        .map(|(index, b)| cluster_id(*index, b.at_ms))
        .collect();
    assert_eq!(recorded, vec![id], "one batch records it, derived from it");
    // Later passes propose nothing more; a replayed proposal is rejected.
    sim.advance(1000);
    sim.heartbeat_all();
    sim.settle();
    assert!(
        !sim.log.iter().skip(1).any(|(_, b)| b
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::RecordClusterId(_)))),
        "proposed again"
    );
    let resp = sim.commit(vec![Transition::RecordClusterId(RecordClusterId {})]);
    assert!(
        matches!(&resp.outcomes[0], Outcome::Rejected(Rejection::Conflict(m)) if m.contains("already recorded")),
        "{resp:?}"
    );
    assert_eq!(sim.state.cluster_id, id);
    // Another cluster (another timestamp) gets another id.
    assert_ne!(cluster_id(1, 2), cluster_id(1, 1));
    assert_ne!(cluster_id(2, 1), cluster_id(1, 1));
}

#[test]
fn a_node_from_another_cluster_is_recorded_when_it_first_registers() {
    let mut sim = Sim::new(&["a"]);
    let id = sim.state.cluster_id;
    // b's agent served cluster 77 (these supervisors were re-created).
    sim.agents.insert(
        "b".into(),
        Agent {
            incarnation: 1,
            cluster: 77,
            ..Default::default()
        },
    );
    sim.heartbeat("b");
    sim.step();
    assert!(sim.state.nodes.contains_key("b"));
    let events = events_of(&sim, EventKind::NodeFromOtherCluster);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].node.as_deref(), Some("b"));
    assert_eq!(
        events[0].detail.get("from_cluster").map(String::as_str),
        Some("77")
    );
    assert_eq!(events[0].detail.get("cluster"), Some(&id.to_string()));
    // Its registration is there too, once.
    assert_eq!(
        events_of(&sim, EventKind::NodeRegistered)
            .iter()
            .filter(|e| e.node.as_deref() == Some("b"))
            .count(),
        1
    );

    // Until b's table names this cluster, b gets no directive, even for a
    // module placed there.
    let mut web = spec("web");
    web.placement.node = Some("b".into());
    sim.deploy(web);
    sim.settle();
    assert_eq!(sim.node_of("web"), "b");
    assert!(sim.directives("b").is_empty(), "{:?}", sim.directives("b"));
    // b adopted this cluster (as its reply told it): the install goes out.
    sim.agents.get_mut("b").expect("b").cluster = id;
    sim.heartbeat("b");
    sim.settle();
    assert!(
        matches!(sim.directives("b")[..], [Directive::Install(_)]),
        "{:?}",
        sim.directives("b")
    );
    assert_eq!(events_of(&sim, EventKind::NodeFromOtherCluster).len(), 1);

    // A node whose agent serves this cluster, or none, is not from another.
    for (node, cluster) in [("c", id), ("d", 0)] {
        sim.agents.insert(
            node.into(),
            Agent {
                incarnation: 1,
                cluster,
                ..Default::default()
            },
        );
        sim.heartbeat(node);
    }
    sim.settle();
    assert!(sim.state.nodes.contains_key("c") && sim.state.nodes.contains_key("d"));
    assert_eq!(events_of(&sim, EventKind::NodeFromOtherCluster).len(), 1);
}

#[test]
fn a_replayed_registration_from_another_cluster_records_nothing_twice() {
    let mut sim = Sim::new(&["a"]);
    let t = Transition::RegisterNodeFromOtherCluster(RegisterNodeFromOtherCluster {
        register: RegisterNode {
            node: "b".into(),
            addr: "b:7100".into(),
            labels: BTreeMap::new(),
        },
        from_cluster: 77,
    });
    let first = sim.commit(vec![t.clone()]);
    assert!(matches!(first.outcomes[0], Outcome::Applied { .. }));
    let again = sim.commit(vec![t]);
    assert!(
        matches!(again.outcomes[0], Outcome::Rejected(_)),
        "{again:?}"
    );
    assert_eq!(events_of(&sim, EventKind::NodeFromOtherCluster).len(), 1);
}
