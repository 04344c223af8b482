//! Scenario tests of the reconciler: the whole recovery flow of claims 1
//! and 2 driven through the pure `plan`, `apply` and `directives_for`, with
//! simulated heartbeats and a simulated clock.
//!
//! This file is the harness: [`Sim`] holds a replicated state, the leader's
//! observations and a simulated agent per node, and steps them the way the
//! leader does (plan, commit one batch, answer package retrievals at once),
//! keeping every committed batch as the Raft log would. The scenarios are
//! grouped by concern:
//! - `restore`: deploy, install, crash and restore in place;
//! - `failover`: restores exhausted, failover nodes failing too, giving up,
//!   a leader change in the middle;
//! - `node_loss`: suspect and down nodes, fencing, waiting for a node;
//! - `lease`: replicated lease terms across leaders with other flags;
//! - `drain`: an operator emptying a node;
//! - `identity`: the cluster id, recorded once; nodes from another cluster;
//! - `replay`: rejected replays, identical replicas, scoped passes;
//! - `versions`: updates, rollbacks, reverts, quarantined packages;
//! - `prestage`: packages pre-staged on the next failover node, which the
//!   failover then picks;
//! - `ops`: the operator's ways back (undrain, reset, forgetting a down
//!   node) and a removed module shown `stopped` until its copy is;
//! - `compat`: a tour of every transition against a stored fixture.

mod compat;
mod drain;
mod failover;
mod fleet;
mod identity;
mod lease;
mod node_loss;
mod ops;
mod prestage;
mod replay;
mod restore;
mod versions;
mod whatif;
mod why;

use std::collections::{BTreeMap, BTreeSet};

use proto::heartbeat::{
    Directive, Heartbeat, ModuleStatus, ModuleTable, PackedStatuses, Report, TableEntry,
};
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest, PackageRef};
use proto::spec::ModuleSpec;

use crate::directives::directives_for;
use crate::observe::{Ingest, Observed};
use crate::plan::{Fetch, Plan, QuarantinePolicy, Timing, plan};
use crate::state::*;

pub(crate) const TIMING: Timing = Timing {
    heartbeat_ttl_ms: 2000,
    lease_ms: 3000,
    drift_ms: 500,
    quarantine: QuarantinePolicy::OFF,
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
    /// The cluster its table names (0: none).
    cluster: u64,
}

struct Sim {
    state: ClusterState,
    observed: Observed,
    now: u64,
    index: u64,
    agents: BTreeMap<String, Agent>,
    /// The leader's flags (a leader change may bring others).
    timing: Timing,
    /// Every batch committed, as the Raft log would hold it.
    log: Vec<(u64, Batch)>,
    /// Nodes whose heartbeats changed since the last step, as the leader
    /// keeps them.
    dirty: BTreeSet<String>,
    /// The state's index at the last step (`None`: none yet this term).
    since: Option<u64>,
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

/// The configuration package depmgr would answer for `r`.
pub(crate) fn package_of(r: &PackageRef) -> ConfigPackage {
    ConfigPackage {
        manifest: Manifest::from_toml(&format!(
            "name = \"{}\"\nversion = \"{}\"\ncommand = \"bin/web\"",
            r.name, r.version
        ))
        .expect("manifest"),
        artifacts: vec![ArtifactRef {
            name: r.name.clone(),
            version: r.version.clone(),
            digest: "a".repeat(64),
        }],
    }
}

/// The report of an agent that pre-staged `p`'s package.
fn prestaged_report(p: &proto::heartbeat::Prefetch) -> Report {
    Report {
        module: p.module.clone(),
        epoch: p.epoch,
        kind: proto::heartbeat::ReportKind::Prestaged,
        message: format!("{} archives cached", p.package.artifacts.len()),
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
            timing: TIMING,
            log: vec![],
            dirty: BTreeSet::new(),
            since: None,
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

    /// A leader change at leader clock `leader_since_ms`: observations
    /// are lost, and the first pass looks at every module.
    fn new_term(&mut self, leader_since_ms: u64) {
        self.observed = Observed {
            leader_since_ms,
            nodes: BTreeMap::new(),
        };
        self.dirty.clear();
        self.since = None;
    }

    /// Plans and commits once; answers package retrievals at once.
    ///
    /// Every step also plans as the leader's passes do, over what changed
    /// since the previous step only (`plan::Scope::Changed`, without the
    /// sweep), and checks that it plans exactly what a pass over every
    /// module plans: so every scenario shows that nothing waits for the
    /// leader's safety net.
    fn step(&mut self) -> Plan {
        let p = plan(&self.state, &self.observed, self.now, self.timing);
        let dirty = std::mem::take(&mut self.dirty);
        if let Some(since) = self.since {
            let scope = crate::plan::Scope::Changed {
                dirty: &dirty,
                since,
                sweep: None,
            };
            let scoped =
                crate::plan::plan_scoped(&self.state, &self.observed, self.now, self.timing, scope);
            assert_eq!(
                scoped, p,
                "a pass over what changed since index {since} (dirty nodes {dirty:?}) plans what a pass over every module plans"
            );
        }
        self.since = Some(self.state.last_index);
        if !p.transitions.is_empty() {
            let resp = self.commit(p.transitions.clone());
            for (t, o) in p.transitions.iter().zip(&resp.outcomes) {
                assert!(
                    matches!(o, Outcome::Applied { .. }),
                    "planned {t:?} was rejected: {o:?}"
                );
            }
        }
        for Fetch {
            module,
            epoch,
            package,
        } in p.fetches.clone()
        {
            self.commit(vec![Transition::PackageRetrieved(PackageRetrieved {
                module,
                epoch,
                package: package_of(&package),
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
                cluster: a.cluster,
            }),
            statuses: PackedStatuses::pack(&a.modules.iter().map(|(_, s)| *s).collect::<Vec<_>>()),
            reports: std::mem::take(&mut a.reports),
        };
        let outcome = self
            .observed
            .nodes
            .entry(node.into())
            .or_default()
            .ingest(&hb, self.now);
        // As `Leader::ingest` marks a node for the next pass.
        if matches!(
            outcome,
            Ingest::Accepted { changed: true, .. }
                | Ingest::Accepted {
                    need_table: true,
                    ..
                }
        ) {
            self.dirty.insert(node.to_string());
        }
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
                Directive::Prefetch(p) => a.reports.push(prestaged_report(&p)),
            }
        }
        self.heartbeat(node);
    }

    /// The `Prefetch` directives the leader sends `node` now.
    fn prefetches(&self, node: &str) -> Vec<proto::heartbeat::Prefetch> {
        let obs = &self.observed.nodes[node];
        let table = obs.table.clone().expect("table");
        let targets = crate::plan::next_nodes(&self.state)
            .remove(node)
            .unwrap_or_default();
        crate::prestage::prefetches_for(
            &self.state,
            &table,
            &targets,
            &obs.prestaged,
            "http://depmgr",
        )
        .into_iter()
        .map(|d| match d {
            Directive::Prefetch(p) => p,
            other => panic!("not a prefetch: {other:?}"),
        })
        .collect()
    }

    /// The agent on `node` pre-stages what it is told to (and reports it in
    /// its next heartbeat); the leader records what is new, as
    /// `Leader::ingest` does. The outcomes of those records.
    fn prestage(&mut self, node: &str) -> Vec<Outcome> {
        for p in self.prefetches(node) {
            let a = self.agents.get_mut(node).expect("agent");
            a.reports.push(prestaged_report(&p));
        }
        self.heartbeat(node);
        let news = std::mem::take(
            &mut self
                .observed
                .nodes
                .get_mut(node)
                .expect("observed")
                .newly_prestaged,
        );
        if news.is_empty() {
            return vec![];
        }
        let transitions = news
            .into_iter()
            .map(|(module, epoch)| {
                Transition::RecordPrestaged(RecordPrestaged {
                    module,
                    node: node.to_string(),
                    epoch,
                })
            })
            .collect();
        self.commit(transitions).outcomes
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

    /// The kinds of the events recorded about `module`, oldest first.
    fn kinds(&self, module: &str) -> Vec<EventKind> {
        self.state
            .events
            .iter()
            .filter(|e| e.module.as_deref() == Some(module))
            .map(|e| e.kind)
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
