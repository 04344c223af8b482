//! Lease terms that cannot disagree: leaders started with other
//! `--lease-ms` / `--lease-drift-ms` never declare a node down while it may
//! still hold a lease an earlier leader granted, and never grant a lease
//! the replicated terms do not cover.

use super::*;
use crate::plan::grantable_lease_ms;

const SHORT: Timing = Timing {
    heartbeat_ttl_ms: 800,
    lease_ms: 1000,
    drift_ms: 200,
    quarantine: QuarantinePolicy::OFF,
};

const LONG: Timing = Timing {
    heartbeat_ttl_ms: 2000,
    lease_ms: 10_000,
    drift_ms: 500,
    quarantine: QuarantinePolicy::OFF,
};

/// A leader change at `now` to a leader with `timing`: observations lost.
fn new_leader(sim: &mut Sim, timing: Timing) {
    sim.timing = timing;
    sim.new_term(sim.now);
}

#[test]
fn the_first_leader_records_its_terms_and_grants_nothing_before() {
    let empty = ClusterState::default();
    assert_eq!(grantable_lease_ms(TIMING, empty.lease), 0);
    let sim = Sim::new(&["a"]);
    assert_eq!(
        sim.state.lease,
        LeaseTerms {
            lease_ms: 3000,
            drift_ms: 500
        }
    );
    assert_eq!(grantable_lease_ms(TIMING, sim.state.lease), 3000);
    let events: Vec<_> = sim
        .state
        .events
        .iter()
        .filter(|e| e.kind == EventKind::LeaseTerms)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn a_new_leader_with_a_shorter_lease_waits_for_the_recorded_one() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = spec("web");
    s.placement.node = Some("a".into());
    sim.running(s);
    // The leader of the 3000 ms lease is replaced by one with 1000 ms; a
    // goes silent at once (it may hold a lease of 3000 ms from now).
    new_leader(&mut sim, SHORT);
    sim.run_for(1300, &["b"]);
    assert_ne!(
        sim.state.nodes["a"].health,
        NodeHealth::Down,
        "own terms would say down after 1200 ms"
    );
    assert_eq!(
        sim.node_of("web"),
        "a",
        "not moved under a lease a may hold"
    );
    assert_eq!(sim.state.lease.lease_ms, 3000, "not lowered yet");
    // The new leader grants its own, shorter lease meanwhile.
    assert_eq!(grantable_lease_ms(SHORT, sim.state.lease), 1000);
    sim.run_for(2300, &["b"]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
    assert_eq!(sim.node_of("web"), "b");
    // Every lease of the old leader has ended: the terms are lowered.
    assert_eq!(
        sim.state.lease,
        LeaseTerms {
            lease_ms: 1000,
            drift_ms: 200
        }
    );
}

#[test]
fn a_longer_lease_is_recorded_before_it_is_granted() {
    let mut sim = Sim::new(&["a"]);
    new_leader(&mut sim, LONG);
    // Before its first pass commits, the new leader grants at most the
    // recorded lease.
    assert_eq!(grantable_lease_ms(LONG, sim.state.lease), 3000);
    let p = plan(&sim.state, &sim.observed, sim.now, LONG);
    assert!(
        p.transitions.iter().any(|t| matches!(
            t,
            Transition::RecordLease(RecordLease {
                terms: LeaseTerms {
                    lease_ms: 10_000,
                    drift_ms: 500
                },
                ..
            })
        )),
        "raised at once, without waiting: {p:?}"
    );
    sim.step();
    assert_eq!(grantable_lease_ms(LONG, sim.state.lease), 10_000);
    // A later leader with the short flags waits for the long lease.
    new_leader(&mut sim, SHORT);
    sim.run_for(5000, &[]);
    assert_ne!(sim.state.nodes["a"].health, NodeHealth::Down);
    sim.run_for(5600, &[]);
    assert_eq!(sim.state.nodes["a"].health, NodeHealth::Down);
}

#[test]
fn a_repeated_or_outdated_record_is_rejected() {
    let mut sim = Sim::new(&["a"]);
    let recorded = sim.state.lease;
    let stale = Transition::RecordLease(RecordLease {
        terms: LeaseTerms {
            lease_ms: 50,
            drift_ms: 0,
        },
        expect: LeaseTerms::default(),
    });
    let r = sim.commit(vec![stale]);
    assert!(matches!(
        r.outcomes[0],
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    assert_eq!(sim.state.lease, recorded);
}
