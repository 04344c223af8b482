//! Scenario tests of the reconciler: the whole recovery flow of claims 1
//! and 2 driven through the pure `plan`, `apply` and `directives_for`, with
//! simulated heartbeats and a simulated clock.

use std::collections::BTreeMap;

use proto::heartbeat::{
    Directive, Heartbeat, ModuleStatus, ModuleTable, PackedStatuses, Report, ReportKind, TableEntry,
};
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest};
use proto::spec::{Fencing, ModuleSpec};

use crate::plan::{Fetch, Observed, Plan, Timing, directives_for, plan};
use crate::state::*;

const TIMING: Timing = Timing {
    heartbeat_ttl_ms: 2000,
    lease_ms: 3000,
    drift_ms: 500,
};

/// One simulated agent's view of its modules.
#[derive(Default, Clone)]
struct Agent {
    incarnation: u64,
    seq: u64,
    table_version: u64,
    modules: Vec<(TableEntry, ModuleStatus)>,
    labels: BTreeMap<String, String>,
    reports: Vec<Report>,
}

struct Sim {
    state: ClusterState,
    observed: Observed,
    now: u64,
    index: u64,
    agents: BTreeMap<String, Agent>,
    /// Every batch committed, as the Raft log would hold it.
    log: Vec<(u64, Batch)>,
}

fn spec(name: &str) -> ModuleSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "package": {"name": "web", "version": "1.0.0"},
        "restart": {"attempts": 2, "backoff_ms": 100, "min_healthy_ms": 1000},
        "failover": {"max_nodes": 2},
    }))
    .expect("spec")
}

fn package() -> ConfigPackage {
    ConfigPackage {
        manifest: Manifest::from_toml("name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"")
            .expect("manifest"),
        artifacts: vec![ArtifactRef {
            name: "web".into(),
            version: "1.0.0".into(),
            digest: "a".repeat(64),
        }],
    }
}

impl Sim {
    /// A cluster with the given nodes, all heartbeating.
    fn new(nodes: &[&str]) -> Sim {
        let mut sim = Sim {
            state: ClusterState::default(),
            observed: Observed::default(),
            now: 1,
            index: 0,
            agents: BTreeMap::new(),
            log: vec![],
        };
        for n in nodes {
            sim.agents.insert(
                n.to_string(),
                Agent {
                    incarnation: 1,
                    ..Default::default()
                },
            );
            sim.heartbeat(n);
        }
        sim.step();
        sim
    }

    fn commit(&mut self, transitions: Vec<Transition>) -> BatchResponse {
        self.index += 1;
        let batch = Batch {
            at_ms: self.now,
            transitions,
        };
        self.log.push((self.index, batch.clone()));
        self.state.apply(self.index, &batch)
    }

    fn deploy(&mut self, spec: ModuleSpec) -> u64 {
        match &self
            .commit(vec![Transition::Deploy(Deploy { spec })])
            .outcomes[0]
        {
            Outcome::Applied { epoch } => *epoch,
            Outcome::Rejected(r) => panic!("deploy rejected: {r:?}"),
        }
    }

    /// Plans and commits once; answers package retrievals at once.
    fn step(&mut self) -> Plan {
        let p = plan(&self.state, &self.observed, self.now, TIMING);
        if !p.transitions.is_empty() {
            let resp = self.commit(p.transitions.clone());
            for (t, o) in p.transitions.iter().zip(&resp.outcomes) {
                assert!(
                    matches!(o, Outcome::Applied { .. }),
                    "planned {t:?} was rejected: {o:?}"
                );
            }
        }
        for Fetch { module, epoch, .. } in p.fetches.clone() {
            self.commit(vec![Transition::PackageRetrieved(PackageRetrieved {
                module,
                epoch,
                package: package(),
            })]);
        }
        p
    }

    /// Steps until the plan is empty (at most 10 times).
    fn settle(&mut self) {
        for _ in 0..10 {
            let p = self.step();
            if p.transitions.is_empty() && p.fetches.is_empty() {
                return;
            }
        }
        panic!("plan did not settle");
    }

    fn heartbeat(&mut self, node: &str) {
        let a = self.agents.get_mut(node).expect("agent");
        a.seq += 1;
        a.table_version += 1;
        let hb = Heartbeat {
            node: node.into(),
            incarnation: a.incarnation,
            seq: a.seq,
            table_version: a.table_version,
            table: Some(ModuleTable {
                addr: format!("{node}:7100"),
                labels: a.labels.clone(),
                modules: a.modules.iter().map(|(e, _)| e.clone()).collect(),
            }),
            statuses: PackedStatuses::pack(&a.modules.iter().map(|(_, s)| *s).collect::<Vec<_>>()),
            reports: std::mem::take(&mut a.reports),
        };
        self.observed
            .nodes
            .entry(node.into())
            .or_default()
            .ingest(&hb, self.now);
    }

    fn heartbeat_all(&mut self) {
        let nodes: Vec<String> = self.agents.keys().cloned().collect();
        for n in nodes {
            self.heartbeat(&n);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Time passes with every live agent heartbeating.
    fn run_for(&mut self, ms: u64, live: &[&str]) {
        let mut left = ms;
        while left > 0 {
            let d = left.min(300);
            self.advance(d);
            left -= d;
            for n in live {
                self.heartbeat(n);
            }
            self.step();
        }
    }

    fn directives(&self, node: &str) -> Vec<Directive> {
        let table = self.observed.nodes[node].table.clone().expect("table");
        directives_for(&self.state, node, &table, "http://depmgr")
    }

    /// The agent on `node` executes its directives (installs succeed, the
    /// module status is what `status` says).
    fn execute(&mut self, node: &str, status: ModuleStatus) {
        for d in self.directives(node) {
            let a = self.agents.get_mut(node).expect("agent");
            match d {
                Directive::Install(i) => {
                    a.modules.retain(|(e, _)| e.module != i.module);
                    a.modules.push((
                        TableEntry {
                            module: i.module,
                            epoch: i.epoch,
                            restore_seq: 0,
                        },
                        status,
                    ));
                }
                Directive::Restore(r) => {
                    for (e, s) in &mut a.modules {
                        if e.module == r.module {
                            e.restore_seq = r.seq;
                            *s = status;
                        }
                    }
                }
                Directive::Stop(s) => a.modules.retain(|(e, _)| e.module != s.module),
            }
        }
        self.heartbeat(node);
    }

    fn set_status(&mut self, node: &str, module: &str, status: ModuleStatus) {
        let a = self.agents.get_mut(node).expect("agent");
        for (e, s) in &mut a.modules {
            if e.module == module {
                *s = status;
            }
        }
        self.heartbeat(node);
    }

    fn module(&self, name: &str) -> &ModuleRecord {
        &self.state.modules[name]
    }

    fn node_of(&self, name: &str) -> String {
        self.module(name)
            .placement
            .as_ref()
            .expect("placed")
            .node
            .clone()
    }

    fn kinds(&self, module: &str) -> Vec<String> {
        self.state
            .events
            .iter()
            .filter(|e| e.module.as_deref() == Some(module))
            .map(|e| e.kind.clone())
            .collect()
    }

    /// Deploys `name` and brings it to running on its node.
    fn running(&mut self, spec: ModuleSpec) -> String {
        let name = spec.name.clone();
        self.deploy(spec);
        self.settle();
        let node = self.node_of(&name);
        self.execute(&node, ModuleStatus::Running);
        let all: Vec<String> = self.agents.keys().cloned().collect();
        let live: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run_for(1200, &live);
        assert_eq!(
            self.module(&name).state,
            ModuleState::Running,
            "{:?}",
            self.kinds(&name)
        );
        node
    }
}

#[test]
fn deploy_places_on_preferred_node_and_installs() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut s = spec("web");
    s.placement.node = Some("b".into());
    sim.deploy(s);
    sim.settle();
    assert_eq!(sim.node_of("web"), "b");
    let d = sim.directives("b");
    assert!(
        matches!(&d[..], [Directive::Install(i)] if i.module == "web" && i.epoch == sim.module("web").placement.as_ref().unwrap().epoch)
    );
    assert!(sim.directives("a").is_empty());
    sim.execute("b", ModuleStatus::Running);
    sim.run_for(600, &["a", "b", "c"]);
    assert_eq!(
        sim.module("web").state,
        ModuleState::Installing,
        "not healthy long enough yet"
    );
    sim.run_for(600, &["a", "b", "c"]);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(
        sim.kinds("web"),
        [
            "module_deployed",
            "placed",
            "package_retrieved",
            "installed"
        ]
    );
}

#[test]
fn crash_is_restored_in_place() {
    let mut sim = Sim::new(&["a", "b"]);
    let node = sim.running(spec("web"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    sim.step();
    let m = sim.module("web");
    assert_eq!(
        (m.state, m.restore_attempts, m.restore_seq),
        (ModuleState::Restoring, 1, 1)
    );
    // The restore directive goes out in the same round trip.
    assert!(
        matches!(&sim.directives(&node)[..], [Directive::Restore(r)] if r.seq == 1 && r.backoff_ms == 100)
    );
    sim.execute(&node, ModuleStatus::Running);
    assert!(
        sim.directives(&node).is_empty(),
        "restore not repeated once executed"
    );
    sim.run_for(1200, &["a", "b"]);
    let m = sim.module("web");
    assert_eq!((m.state, m.restore_attempts), (ModuleState::Running, 0));
    assert_eq!(sim.node_of("web"), node);
    assert!(sim.kinds("web").ends_with(&[
        "failure_detected".into(),
        "restore_ordered".into(),
        "restored".into()
    ]));
}

#[test]
fn restore_not_yet_executed_is_repeated_not_counted() {
    let mut sim = Sim::new(&["a"]);
    sim.running(spec("web"));
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    // The agent never got the reply: still failed with restore_seq 0.
    sim.run_for(900, &["a"]);
    assert_eq!(sim.module("web").restore_attempts, 1);
    assert!(matches!(&sim.directives("a")[..], [Directive::Restore(r)] if r.seq == 1));
}

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
    sim.state
        .modules
        .get_mut("web")
        .unwrap()
        .spec
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
        "failover_started",
        "package_retrieved",
        "installed",
        "failover_completed",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
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
    assert!(sim.kinds("web").contains(&"failover_failed".to_string()));
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
        "start_failed".into(),
        "failover_failed".into(),
        "module_failed".into()
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
    assert!(sim.kinds("web").contains(&"failover_waiting".to_string()));
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
    assert!(!sim.kinds("web").contains(&"module_failed".to_string()));
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
    assert!(!sim.kinds("cache").contains(&"module_failed".to_string()));
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
    assert!(!kinds.contains(&"start_failed".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"module_failed".to_string()), "{kinds:?}");
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
    assert!(sim.kinds("web").contains(&"failover_started".to_string()));
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
    sim.observed = Observed {
        leader_since_ms: 50_000,
        nodes: BTreeMap::new(),
    };
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

#[test]
fn drain_moves_modules_one_by_one_without_counting_failures() {
    let mut sim = Sim::new(&["a", "b"]);
    for name in ["m1", "m2"] {
        let mut s = spec(name);
        s.placement.node = Some("a".into());
        sim.running(s);
    }
    sim.commit(vec![Transition::Drain(Drain { node: "a".into() })]);
    sim.step();
    let moving: Vec<_> = ["m1", "m2"]
        .iter()
        .filter(|m| sim.node_of(m) == "b")
        .collect();
    assert_eq!(moving.len(), 1, "one at a time");
    for _ in 0..2 {
        sim.execute("a", ModuleStatus::Stopped);
        sim.settle();
        sim.execute("b", ModuleStatus::Running);
        sim.run_for(1200, &["a", "b"]);
    }
    for m in ["m1", "m2"] {
        assert_eq!(sim.node_of(m), "b");
        let r = sim.module(m);
        assert_eq!(
            (r.state, r.failovers, r.restore_attempts),
            (ModuleState::Running, 0, 0)
        );
    }
}

#[test]
fn stale_and_replayed_transitions_are_rejected_without_effect() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.running(spec("web"));
    let before = sim.state.clone();
    let epoch = sim.module("web").placement.as_ref().unwrap().epoch;
    let resp = sim.commit(vec![
        Transition::Healthy(Healthy {
            module: "web".into(),
            epoch,
        }),
        Transition::RestoreOrdered(RestoreOrdered {
            module: "web".into(),
            epoch,
            seq: 1,
        }),
        Transition::Place(Place {
            module: "web".into(),
            node: "b".into(),
            expect_epoch: Some(epoch - 1),
            cause: PlaceCause::Initial,
        }),
        Transition::Deploy(Deploy { spec: spec("web") }),
    ]);
    assert!(
        resp.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Rejected(_))),
        "{resp:?}"
    );
    assert_eq!(sim.state.modules, before.modules);
    assert_eq!(sim.state.events, before.events);
}

#[test]
fn same_commands_give_byte_identical_snapshots() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let node = sim.running(spec("web"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    sim.step();
    sim.running(spec("api"));
    sim.commit(vec![Transition::Drain(Drain { node: "c".into() })]);
    sim.settle();
    // Two more replicas apply the same log, each through its own encode /
    // decode of every entry as Raft would ship it.
    let replicas: Vec<ClusterState> = (0..2)
        .map(|_| {
            let mut r = ClusterState::default();
            for (index, batch) in &sim.log {
                let shipped: Batch =
                    proto::decode(&proto::encode(batch).expect("encode")).expect("decode");
                r.apply(*index, &shipped);
            }
            r
        })
        .collect();
    let leader = proto::encode(&sim.state).expect("encode");
    assert!(sim.log.len() > 10);
    for r in &replicas {
        assert_eq!(proto::encode(r).expect("encode"), leader);
    }
}

#[test]
fn scoped_pass_sees_dirty_nodes_and_unsettled_modules_only() {
    use crate::plan::{Scope, plan_scoped};
    use std::collections::BTreeSet;
    let mut sim = Sim::new(&["a", "b"]);
    let node = sim.running(spec("web"));
    sim.deploy(spec("api"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    let none = BTreeSet::new();
    let p = plan_scoped(
        &sim.state,
        &sim.observed,
        sim.now,
        TIMING,
        Scope::Nodes(&none),
    );
    assert!(
        p.transitions
            .iter()
            .all(|t| !matches!(t, Transition::FailureDetected(_))),
        "a running module on a clean node is left to the full pass"
    );
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(pl) if pl.module == "api")),
        "pending modules are always planned"
    );
    let dirty = BTreeSet::from([node.clone()]);
    let p = plan_scoped(
        &sim.state,
        &sim.observed,
        sim.now,
        TIMING,
        Scope::Nodes(&dirty),
    );
    assert!(
        p.transitions
            .iter()
            .any(|t| matches!(t, Transition::FailureDetected(f) if f.module == "web"))
    );
    assert_eq!(
        p,
        plan(&sim.state, &sim.observed, sim.now, TIMING),
        "here the scoped pass equals the full one"
    );
}

#[test]
fn steady_heartbeats_without_table_update_statuses_in_place() {
    use crate::plan::{Ingest, NodeObservation};
    let entry = |m: &str| TableEntry {
        module: m.into(),
        epoch: 3,
        restore_seq: 0,
    };
    let table = ModuleTable {
        addr: "a:1".into(),
        labels: BTreeMap::new(),
        modules: vec![entry("x"), entry("y")],
    };
    let hb = |seq: u64, table: Option<ModuleTable>, s: [ModuleStatus; 2]| Heartbeat {
        node: "a".into(),
        incarnation: 7,
        seq,
        table_version: 4,
        table,
        statuses: PackedStatuses::pack(&s),
        reports: vec![],
    };
    let (run, fail) = (ModuleStatus::Running, ModuleStatus::Failed);
    let mut o = NodeObservation::default();
    assert_eq!(
        o.ingest(&hb(1, Some(table.clone()), [run, run]), 10),
        Ingest::Accepted {
            changed: true,
            need_table: false
        }
    );
    assert_eq!(
        o.ingest(&hb(2, None, [run, run]), 20),
        Ingest::Accepted {
            changed: false,
            need_table: false
        }
    );
    assert_eq!(o.module("y").map(|(_, s, t)| (s, t)), Some((run, 10)));
    assert_eq!(
        o.ingest(&hb(3, None, [run, fail]), 30),
        Ingest::Accepted {
            changed: true,
            need_table: false
        }
    );
    assert_eq!(o.module("y").map(|(_, s, t)| (s, t)), Some((fail, 30)));
    assert_eq!(o.module("x").map(|(_, s, t)| (s, t)), Some((run, 10)));
    assert_eq!(
        o.ingest(&hb(3, None, [run, run]), 40),
        Ingest::Stale,
        "replayed seq"
    );
    // The same table again keeps `since` of unchanged positions.
    assert_eq!(
        o.ingest(&hb(4, Some(table.clone()), [run, fail]), 50),
        Ingest::Accepted {
            changed: false,
            need_table: false
        }
    );
    assert_eq!(o.module("y").map(|(_, _, t)| t), Some(30));
    // Another table version without a table: the leader asks for it.
    let mut other = hb(5, None, [run, run]);
    other.table_version = 5;
    assert_eq!(
        o.ingest(&other, 60),
        Ingest::Accepted {
            changed: false,
            need_table: true
        }
    );
    assert!(o.module("x").is_none());
}

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
    sim
}

/// Written by this tour on main at affffdf (before the state module was
/// split and event kinds were typed): the log as `Vec<(index, Batch)>` and
/// the final state, each `proto::encode`d as Raft stores them.
const TOUR_LOG: &[u8] = include_bytes!("scenarios/fixtures/tour.log.bin");
const TOUR_STATE: &[u8] = include_bytes!("scenarios/fixtures/tour.state.bin");

#[test]
fn tour_replays_the_fixture_from_main() {
    // Stored bytes decode, and encode again to the same bytes.
    let log: Vec<(u64, Batch)> = proto::decode(TOUR_LOG).expect("the stored log decodes");
    assert_eq!(proto::encode(&log).expect("encode"), TOUR_LOG);
    let stored: ClusterState = proto::decode(TOUR_STATE).expect("the stored snapshot decodes");
    assert_eq!(proto::encode(&stored).expect("encode"), TOUR_STATE);
    // Replaying the stored log gives the stored snapshot, byte for byte.
    let mut replayed = ClusterState::default();
    for (index, batch) in &log {
        replayed.apply(*index, batch);
    }
    assert_eq!(proto::encode(&replayed).expect("encode"), TOUR_STATE);
    // The planner, driven through the same tour, writes the same log.
    let sim = tour();
    assert_eq!(sim.log, log);
    assert_eq!(proto::encode(&sim.log).expect("encode"), TOUR_LOG);
    // The tour covers every transition and every event kind.
    let variants: std::collections::HashSet<_> = log
        .iter()
        .flat_map(|(_, b)| b.transitions.iter().map(std::mem::discriminant))
        .collect();
    assert_eq!(variants.len(), 14, "every Transition variant");
    let kinds: std::collections::BTreeSet<&str> =
        stored.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 23, "every event kind: {kinds:?}");
}
