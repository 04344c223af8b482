//! Storage compatibility and unchanged behaviour, against a fixture.
//!
//! [`tour`] drives one cluster through every transition and every event
//! kind. Its Raft log and final snapshot, as main wrote them before the
//! state module was split and event kinds and statuses were typed, are kept
//! in `fixtures/`; the test decodes them with today's types, re-encodes them
//! byte for byte, replays the log with today's `apply`, and runs the tour
//! again with today's planner. A data dir written by that main therefore
//! opens and decodes identically, and decides identically.

use std::collections::{BTreeSet, HashSet};

use proto::heartbeat::{ModuleStatus, Report, ReportKind};
use proto::spec::Fencing;

use super::*;

/// Drives one cluster through every decision the replicated state records
/// (each event kind at least once): restore, failover with the previous
/// copy released, a failed install and a failed start ending in failure, a
/// drain, a node lost and back with a module waiting for it, a removal.
/// Deterministic, so the log and the state it produces are byte-for-byte
/// the same on every run and every version that keeps the behaviour.
fn tour() -> Sim {
    use ModuleStatus::{Failed, InstallFailed, Running, Stopped};
    let all = ["a", "b", "c", "d"];
    let mut sim = Sim::new(&all);
    // d announces a label only it has (node_updated).
    sim.agents
        .get_mut("d")
        .expect("agent d")
        .labels
        .insert("disk".into(), "ssd".into());
    sim.heartbeat_all();
    sim.step();

    // web on a: installed, crashes, restored in place, then crashes until
    // its restores are spent and fails over.
    let mut web = spec("web");
    web.placement.node = Some("a".into());
    sim.running(web);
    sim.set_status("a", "web", Failed);
    sim.step();
    sim.execute("a", Running);
    sim.run_for(1200, &all);
    for _ in 0..2 {
        sim.set_status("a", "web", Failed);
        sim.step();
        sim.execute("a", Failed);
        sim.step();
    }
    sim.execute("a", Stopped);
    sim.settle();
    let target = sim.node_of("web");
    sim.execute(&target, Running);
    sim.run_for(1200, &all);

    // api: one restore, then the failover node's install fails, and the
    // next failover node's start fails too: failover.max_nodes is spent.
    let mut api = spec("api");
    api.placement.node = Some("b".into());
    api.restart.attempts = 1;
    sim.running(api);
    sim.set_status("b", "api", Failed);
    sim.step();
    sim.execute("b", Failed);
    sim.step();
    let first = sim.node_of("api");
    sim.execute("b", Stopped);
    sim.settle();
    let epoch = sim
        .module("api")
        .placement
        .as_ref()
        .expect("api placed")
        .epoch;
    sim.agents
        .get_mut(&first)
        .expect("agent")
        .reports
        .push(Report {
            module: "api".into(),
            epoch,
            kind: ReportKind::InstallFailed,
            message: "sha256 mismatch".into(),
        });
    sim.execute(&first, InstallFailed);
    sim.step();
    let second = sim.node_of("api");
    sim.execute(&first, Stopped);
    sim.settle();
    sim.execute(&second, Running);
    sim.set_status(&second, "api", Failed);
    sim.step();

    // cache on c, then c is drained: cache moves.
    let mut cache = spec("cache");
    cache.placement.node = Some("c".into());
    cache.fencing = Fencing::AtLeastOne;
    sim.running(cache);
    sim.commit(vec![Transition::Drain(Drain { node: "c".into() })]);
    sim.settle();
    let to = sim.node_of("cache");
    sim.execute("c", Stopped);
    sim.settle();
    sim.execute(&to, Running);
    sim.run_for(1200, &all);

    // db needs d's label; d goes silent (suspect, down): db waits for it,
    // and moves back once d is ready again.
    let mut db = spec("db");
    db.placement.labels.insert("disk".into(), "ssd".into());
    sim.running(db);
    sim.run_for(4000, &["a", "b", "c"]);
    sim.run_for(600, &all);
    sim.settle();
    sim.execute("d", Running);
    sim.run_for(1200, &all);

    // api is removed.
    sim.commit(vec![Transition::Remove(Remove {
        module: "api".into(),
    })]);
    sim.settle();
    sim.heartbeat_all();
    sim.settle();

    // Added since the fixture, at the end so the fixture's part of the log
    // is unchanged: web's next failover node pre-stages its package.
    let next = crate::plan::next_node(&sim.state, sim.module("web"))
        .cloned()
        .expect("web has a next node");
    sim.prestage(&next);
    sim
}

/// Written by [`tour`] on main at affffdf (before the state module was split
/// and event kinds were typed, commit 88ad845 on this branch): the log as
/// `Vec<(index, Batch)>` and the final state, each `proto::encode`d as Raft
/// stores them. Never regenerate them with newer code: they are the proof.
const TOUR_LOG: &[u8] = include_bytes!("fixtures/tour.log.bin");
const TOUR_STATE: &[u8] = include_bytes!("fixtures/tour.state.bin");

#[test]
fn tour_replays_the_fixture_from_main() {
    // Stored bytes decode, and encode again to the same bytes.
    let log: Vec<(u64, Batch)> = proto::decode(TOUR_LOG).expect("the stored log decodes");
    assert_eq!(proto::encode(&log).expect("encode"), TOUR_LOG);
    // The stored snapshot predates the `lease`, `cluster_id`, `versions`
    // and `packages` fields: it decodes with no terms, no id, no revisions
    // (every module at its implicit revision 1) and no package failures
    // recorded, and no fleet rollouts, no causes and no causal chains, and
    // encodes again to the same bytes plus those fields (eight zero
    // varints: two lease terms, the id, three empty maps, the last fleet
    // rollout id and its empty map; then one absent cause per event and
    // two empty maps).
    let stored: ClusterState = proto::decode(TOUR_STATE).expect("the stored snapshot decodes");
    assert_eq!(stored.lease, LeaseTerms::default());
    assert_eq!(stored.cluster_id, 0);
    assert!(stored.versions.is_empty() && stored.packages == Packages::default());
    for name in stored.modules.keys() {
        assert_eq!(stored.versions_of(name).map(|v| v.revision), Some(1));
    }
    // The events' causes (none, one per event) and the causal chains
    // (none) were added after the fleet rollouts.
    assert!(stored.events.iter().all(|e| e.cause.is_none()));
    assert_eq!(stored.why, Why::default());
    let no_causes =
        proto::encode(&(vec![None::<u64>; stored.events.len()], Why::default())).expect("encode");
    let with_lease = [TOUR_STATE, &[0, 0, 0, 0, 0, 0, 0, 0], &no_causes[1..]].concat();
    let no_why: ClusterState = proto::decode(&[TOUR_STATE, &[0, 0, 0, 0, 0, 0, 0, 0]].concat())
        .expect("decodes without causes");
    assert_eq!(no_why, stored);
    // A snapshot with the package versions but no fleet rollouts decodes
    // too.
    let no_fleet: ClusterState =
        proto::decode(&[TOUR_STATE, &[0, 0, 0, 0, 0, 0]].concat()).expect("decodes without fleet");
    assert_eq!(no_fleet, stored);
    // A snapshot with the id but without the revisions decodes too.
    let with_id: ClusterState =
        proto::decode(&[TOUR_STATE, &[0, 0, 0]].concat()).expect("decodes without revisions");
    assert_eq!(with_id, stored);
    // A snapshot with the lease terms but no cluster id decodes too.
    let lease_only: ClusterState =
        proto::decode(&[TOUR_STATE, &[0, 0]].concat()).expect("decodes without the id");
    assert_eq!(lease_only, stored);
    assert_eq!(proto::encode(&stored).expect("encode"), with_lease);
    let again: ClusterState = proto::decode(&with_lease).expect("decodes with the field");
    assert_eq!(again, stored);
    // Replaying the stored log gives the stored snapshot, byte for byte,
    // but for what today's `apply` records besides: each deployed module's
    // revision 1, and the nodes where web@1.0.0 failed to install or start.
    let mut replayed = ClusterState::default();
    for (index, batch) in &log {
        replayed.apply(*index, batch);
    }
    // Today's state, causes and causal chains included, survives a
    // snapshot (what a follower's catch-up and `--restore-from` decode).
    let snapshot = proto::encode(&replayed).expect("encode");
    let back: ClusterState = proto::decode(&snapshot).expect("today's snapshot decodes");
    assert_eq!(back, replayed);
    let live: BTreeSet<&String> = replayed.modules.keys().collect();
    assert_eq!(replayed.versions.keys().collect::<BTreeSet<_>>(), live);
    let failed: Vec<&String> = replayed.packages.failures
        [&proto::manifest::PackageRef::new("web", "1.0.0")]
        .keys()
        .collect();
    assert!(failed.len() >= 2, "{failed:?}");
    let mut older = replayed.clone();
    older.versions.clear();
    older.packages = Packages::default();
    assert!(older.events.iter().any(|e| e.cause.is_some()));
    for e in &mut older.events {
        e.cause = None;
    }
    older.why = Why::default();
    assert_eq!(proto::encode(&older).expect("encode"), with_lease);
    // The planner, driven through the same tour, writes the same log, but
    // for the lease terms and the cluster id it records in the first batch
    // (added since).
    // The pre-staging records it adds at the end (added since too) are
    // left out with it.
    let sim = tour();
    let (mut records, mut without) = (0, sim.log.clone());
    for (_, batch) in &mut without {
        let before = batch.transitions.len();
        batch.transitions.retain(|t| {
            !matches!(
                t,
                Transition::RecordLease(_) | Transition::RecordClusterId(_)
            )
        });
        records += before - batch.transitions.len();
    }
    assert_eq!(records, 2, "the lease terms and the cluster id, once each");
    let (prestaged, last) = without.pop().expect("the tour ends with pre-staging");
    assert_eq!(prestaged, sim.index);
    assert!(
        !last.transitions.is_empty()
            && last
                .transitions
                .iter()
                .all(|t| matches!(t, Transition::RecordPrestaged(_))),
        "{last:?}"
    );
    assert!(matches!(
        sim.log[0].1.transitions[..2],
        [Transition::RecordLease(_), Transition::RecordClusterId(_)]
    ));
    assert_ne!(sim.state.cluster_id, 0);
    assert_eq!(without, log);
    assert_eq!(proto::encode(&without).expect("encode"), TOUR_LOG);
    // The tour covers every transition and every event kind (those added
    // since the fixture in the new tour only), but for a node from another
    // cluster: the tour's agents never served one (`scenarios::identity`
    // covers it), and the kinds of versions (rollouts, quarantine) not
    // and fleet rollouts, not written yet; `package_prestaged` is toured.
    let versions = [
        EventKind::RolloutStarted,
        EventKind::RolloutCompleted,
        EventKind::RolloutReverted,
        EventKind::PackageQuarantined,
        EventKind::PackagePrestaged,
        EventKind::QuarantineLifted,
        EventKind::FleetRolloutStarted,
        EventKind::FleetRolloutPaused,
        EventKind::FleetRolloutResumed,
        EventKind::FleetRolloutCompleted,
        EventKind::FleetRolloutCancelled,
    ];
    // The operator's ways back (`scenarios::ops` covers them).
    let lifecycle = [
        EventKind::NodeUndrained,
        EventKind::ModuleReset,
        EventKind::NodeRemoved,
        EventKind::ModuleStopping,
    ];
    let added_since: Vec<EventKind> = [EventKind::LeaseTerms, EventKind::NodeFromOtherCluster]
        .into_iter()
        .chain(versions)
        .chain(lifecycle)
        .collect();
    let not_toured: Vec<EventKind> = [EventKind::NodeFromOtherCluster]
        .into_iter()
        .chain(versions)
        .filter(|k| *k != EventKind::PackagePrestaged)
        .chain(lifecycle)
        .collect();
    let variants: HashSet<_> = sim
        .log
        .iter()
        .flat_map(|(_, b)| b.transitions.iter().map(std::mem::discriminant))
        .collect();
    assert_eq!(
        variants.len(),
        17,
        "every Transition variant but RegisterNodeFromOtherCluster (scenarios::identity), the versions transitions (scenarios::versions) and the operator's ways back (scenarios::ops)"
    );
    let kinds: BTreeSet<EventKind> = stored.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        EventKind::ALL
            .iter()
            .copied()
            .filter(|k| !added_since.contains(k))
            .collect(),
        "every event kind of the fixture"
    );
    let new_kinds: BTreeSet<EventKind> = sim.state.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        new_kinds,
        EventKind::ALL
            .iter()
            .copied()
            .filter(|k| !not_toured.contains(k))
            .collect(),
        "every event kind"
    );
}
