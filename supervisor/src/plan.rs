//! The leader's reconciler: a pure `plan(state, observed, now) -> Plan`.
//!
//! Level-triggered and idempotent (the Kubernetes controller pattern): the
//! plan looks at the replicated [`ClusterState`] and at what the leader has
//! observed from heartbeats ([`Observed`]), and says which transitions to
//! commit and which configuration packages to retrieve. Running it twice on
//! the same inputs gives the same plan; a transition that was already
//! committed is rejected by `apply`'s preconditions, so a repeated plan is
//! harmless. Directives for a node's agent are derived the same way, by
//! [`directives_for`], from the committed state only, so what an agent is
//! told has always been decided durably first.
//!
//! The recovery flow of claims 1 and 2, as the plan drives it for a module
//! placed on node N at epoch E:
//! 1. heartbeat shows it down → `FailureDetected` + `RestoreOrdered(1)`;
//!    the restore directive goes out with the next reply to N;
//! 2. N's table shows restore `seq` executed: running for `min_healthy_ms` →
//!    `Healthy` (restored); down again → next `RestoreOrdered`, or after
//!    `restart.attempts`, failover;
//! 3. failover: a node that is ready, matches the labels, has the fewest
//!    modules and has not failed this module yet → `Place` (new epoch) →
//!    package retrieved from depmgr (`PackageRetrieved`) → install directive
//!    → healthy → `Healthy` (failover completed); install or first start
//!    fails → `InstallFailed` and the next failover node (claim 2), up to
//!    `failover.max_nodes`, then `GiveUp`;
//! 4. a node silent for the TTL is suspect; silent for the lease plus the
//!    drift margin it is down, and its modules move (`Place{NodeLost}`;
//!    at-least-one modules already when it is suspect). Losing a node is
//!    not the module failing: it spends no tried node and no
//!    `failover.max_nodes`, and with no ready node the module waits
//!    (`AwaitNode`) instead of failing.

use std::collections::{BTreeMap, BTreeSet};

use proto::heartbeat::{
    Directive, Heartbeat, Install, ModuleStatus, ModuleTable, ReportKind, Restore, Stop, TableEntry,
};
use proto::manifest::PackageRef;
use proto::spec::Fencing;
use proto::{Epoch, ModuleName, NodeId};

use crate::state::{
    AwaitNode, ClusterState, FailStage, FailureDetected, GiveUp, Healthy, InstallFailed,
    ModuleRecord, ModuleState, NodeHealth, Place, PlaceCause, RegisterNode, ReleasePrevious,
    RestoreOrdered, SetNodeHealth, Transition,
};

/// Timing of the failure detector (all in ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silent this long: suspect.
    pub heartbeat_ttl_ms: u64,
    /// Lease granted to agents.
    pub lease_ms: u64,
    /// Clock-drift margin added to the lease before a node is declared down.
    pub drift_ms: u64,
}

impl Timing {
    /// Silent this long: down (never before the lease plus the drift margin).
    pub fn down_after_ms(&self) -> u64 {
        self.heartbeat_ttl_ms.max(self.lease_ms + self.drift_ms)
    }
}

/// What the leader knows of one node from its heartbeats (memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeObservation {
    /// A heartbeat was taken.
    pub heard: bool,
    /// Leader clock (ms) of the last accepted heartbeat.
    pub last_seen_ms: u64,
    /// Agent incarnation and heartbeat number last accepted.
    pub incarnation: u64,
    pub seq: u64,
    /// Version of `table`.
    pub table_version: u64,
    /// The agent's module table, once received.
    pub table: Option<ModuleTable>,
    /// Status of each table position.
    pub statuses: Vec<ModuleStatus>,
    /// Leader clock (ms) since which each position has had its current
    /// entry and status.
    pub since_ms: Vec<u64>,
    /// Latest failure message per module (install failures and the like).
    pub messages: BTreeMap<ModuleName, (Epoch, ReportKind, String)>,
    /// Position of each module in `table`.
    positions: BTreeMap<ModuleName, usize>,
    /// Grows whenever the table or a status changes.
    pub version: u64,
    /// The directives last computed for this node: (state index,
    /// observation version) they were computed at, and the directives.
    pub directives: Option<(u64, u64, Vec<Directive>)>,
}

/// What became of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Older than one already taken (incarnation, seq): ignored.
    Stale,
    /// Taken. `changed`: a module's entry or status changed (the reconciler
    /// should look at once). `need_table`: statuses could not be read
    /// without the agent's table; ask for it.
    Accepted { changed: bool, need_table: bool },
}

impl NodeObservation {
    /// Takes a heartbeat received at leader clock `now`. Pure.
    ///
    /// Steady state (no table in the heartbeat, same table version) costs a
    /// positional comparison of the status codes; a new table re-indexes
    /// and keeps `since` for every (entry, status) that did not change.
    pub fn ingest(&mut self, hb: &Heartbeat, now: u64) -> Ingest {
        if self.heard
            && (hb.incarnation < self.incarnation
                || (hb.incarnation == self.incarnation && hb.seq <= self.seq))
        {
            return Ingest::Stale;
        }
        let new_incarnation = !self.heard || hb.incarnation != self.incarnation;
        if new_incarnation {
            self.messages.clear();
        }
        self.heard = true;
        self.last_seen_ms = now;
        self.seq = hb.seq;
        self.incarnation = hb.incarnation;
        for r in &hb.reports {
            self.messages
                .insert(r.module.clone(), (r.epoch, r.kind, r.message.clone()));
        }
        let Some(statuses) = hb.statuses.unpack() else {
            return self.forget_table();
        };
        match &hb.table {
            Some(table) => {
                if table.modules.len() != statuses.len() {
                    return self.forget_table();
                }
                let old_table = if new_incarnation {
                    None
                } else {
                    self.table.take()
                };
                let mut changed = old_table.is_none();
                let since = table
                    .modules
                    .iter()
                    .zip(&statuses)
                    .map(|(entry, status)| {
                        let old = old_table.as_ref().and_then(|t| {
                            let pos = *self.positions.get(&entry.module)?;
                            (t.modules.get(pos)? == entry).then_some(pos)
                        });
                        match old {
                            Some(pos) if self.statuses.get(pos) == Some(status) => {
                                self.since_ms[pos]
                            }
                            _ => {
                                changed = true;
                                now
                            }
                        }
                    })
                    .collect();
                changed |= old_table.is_some_and(|t| t.modules.len() != table.modules.len());
                self.positions = table
                    .modules
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.module.clone(), i))
                    .collect();
                self.table = Some(table.clone());
                self.table_version = hb.table_version;
                self.statuses = statuses;
                self.since_ms = since;
                self.version += 1;
                Ingest::Accepted {
                    changed,
                    need_table: false,
                }
            }
            None => {
                if new_incarnation
                    || self.table.is_none()
                    || hb.table_version != self.table_version
                    || statuses.len() != self.statuses.len()
                {
                    return self.forget_table();
                }
                let mut changed = false;
                for (i, status) in statuses.iter().enumerate() {
                    if self.statuses[i] != *status {
                        self.statuses[i] = *status;
                        self.since_ms[i] = now;
                        changed = true;
                    }
                }
                if changed {
                    self.version += 1;
                }
                Ingest::Accepted {
                    changed,
                    need_table: false,
                }
            }
        }
    }

    fn forget_table(&mut self) -> Ingest {
        self.version += 1;
        self.table = None;
        self.positions.clear();
        self.statuses.clear();
        self.since_ms.clear();
        Ingest::Accepted {
            changed: false,
            need_table: true,
        }
    }

    /// The directives for this node, computed once per (state, observation)
    /// pair and reused while neither changes.
    pub fn directives(&mut self, state: &ClusterState, node: &str, depmgr: &str) -> Vec<Directive> {
        let Some(table) = &self.table else {
            return vec![];
        };
        match &self.directives {
            Some((index, version, d)) if *index == state.last_index && *version == self.version => {
                d.clone()
            }
            _ => {
                let d = directives_for(state, node, table, depmgr);
                self.directives = Some((state.last_index, self.version, d.clone()));
                d
            }
        }
    }

    /// The table entry of `module`, with its status and since when.
    pub fn module(&self, module: &str) -> Option<(&TableEntry, ModuleStatus, u64)> {
        let table = self.table.as_ref()?;
        let pos = *self.positions.get(module)?;
        Some((
            &table.modules[pos],
            *self.statuses.get(pos)?,
            *self.since_ms.get(pos)?,
        ))
    }
}

/// Everything the leader observed since it became leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Leader clock (ms) when this replica became leader: every node's
    /// grace window starts here.
    pub leader_since_ms: u64,
    pub nodes: BTreeMap<NodeId, NodeObservation>,
}

/// A configuration package to retrieve from depmgr for a placement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fetch {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub package: PackageRef,
}

/// The output of one planning pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub transitions: Vec<Transition>,
    pub fetches: Vec<Fetch>,
}

struct Planner<'a> {
    state: &'a ClusterState,
    observed: &'a Observed,
    now: u64,
    timing: Timing,
    /// Node health after this pass's node transitions.
    health: BTreeMap<&'a str, NodeHealth>,
    /// Nodes whose health this pass changes.
    health_changed: BTreeSet<&'a str>,
    /// Modules per node, including placements made in this pass (computed
    /// when first needed).
    load: Option<BTreeMap<String, usize>>,
    plan: Plan,
}

/// Which modules a pass looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'s> {
    /// Every module.
    All,
    /// Modules not settled (pending, installing, restoring, failing over),
    /// and running modules on these nodes or on nodes whose health changes.
    /// Running modules elsewhere cannot need anything until their node's
    /// heartbeat changes, so a periodic `All` pass is enough for them.
    Nodes(&'s BTreeSet<NodeId>),
}

/// Plans the next transitions over every module. Pure: `now` is the
/// leader's clock in ms.
pub fn plan(state: &ClusterState, observed: &Observed, now: u64, timing: Timing) -> Plan {
    plan_scoped(state, observed, now, timing, Scope::All)
}

/// Plans the next transitions for the modules in `scope`. Pure.
pub fn plan_scoped(
    state: &ClusterState,
    observed: &Observed,
    now: u64,
    timing: Timing,
    scope: Scope<'_>,
) -> Plan {
    let mut p = Planner {
        state,
        observed,
        now,
        timing,
        health: state
            .nodes
            .iter()
            .map(|(n, r)| (n.as_str(), r.health))
            .collect(),
        health_changed: BTreeSet::new(),
        load: None,
        plan: Plan::default(),
    };
    p.nodes();
    for (name, m) in &state.modules {
        let in_scope = match (scope, &m.placement) {
            (Scope::All, _) | (_, None) => true,
            (Scope::Nodes(dirty), Some(pl)) => {
                m.state != ModuleState::Running
                    || dirty.contains(&pl.node)
                    || p.health_changed.contains(pl.node.as_str())
            }
        };
        if in_scope {
            p.module(name, m);
        }
    }
    p.drains();
    p.plan
}

impl<'a> Planner<'a> {
    fn push(&mut self, t: Transition) {
        self.plan.transitions.push(t);
    }

    /// Registration and the failure detector.
    fn nodes(&mut self) {
        for (node, obs) in &self.observed.nodes {
            let Some(table) = &obs.table else { continue };
            let known = self.state.nodes.get(node);
            if known.is_none_or(|n| n.addr != table.addr || n.labels != table.labels) {
                self.push(Transition::RegisterNode(RegisterNode {
                    node: node.clone(),
                    addr: table.addr.clone(),
                    labels: table.labels.clone(),
                }));
                if known.is_none() {
                    self.health.insert(node.as_str(), NodeHealth::Ready);
                }
            }
        }
        for (node, record) in &self.state.nodes {
            let heard = self.observed.nodes.get(node);
            let last = heard
                .map_or(self.observed.leader_since_ms, |o| o.last_seen_ms)
                .max(self.observed.leader_since_ms);
            let silent = self.now.saturating_sub(last);
            let desired = if silent >= self.timing.down_after_ms() {
                NodeHealth::Down
            } else if silent >= self.timing.heartbeat_ttl_ms {
                NodeHealth::Suspect
            } else if heard.is_some() {
                NodeHealth::Ready
            } else {
                record.health
            };
            if desired != record.health {
                self.health.insert(node.as_str(), desired);
                self.health_changed.insert(node.as_str());
                self.push(Transition::SetNodeHealth(SetNodeHealth {
                    node: node.clone(),
                    health: desired,
                    detail: format!("no heartbeat for {silent} ms"),
                }));
            }
        }
    }

    /// Eligible nodes for `m`, best first, excluding `exclude`.
    fn load(&mut self) -> &mut BTreeMap<String, usize> {
        let state = self.state;
        self.load.get_or_insert_with(|| {
            state
                .load_by_node()
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect()
        })
    }

    fn eligible(&mut self, m: &ModuleRecord, exclude: &BTreeSet<&str>) -> Vec<String> {
        let load = self.load().clone();
        let mut nodes: Vec<(usize, &String)> = self
            .candidates(m, exclude)
            .filter(|name| self.health.get(name.as_str()) == Some(&NodeHealth::Ready))
            .map(|name| (load.get(name).copied().unwrap_or(0), name))
            .collect();
        nodes.sort();
        nodes.into_iter().map(|(_, n)| n.clone()).collect()
    }

    fn place(&mut self, module: &str, node: String, expect: Option<Epoch>, cause: PlaceCause) {
        *self.load().entry(node.clone()).or_default() += 1;
        self.push(Transition::Place(Place {
            module: module.to_string(),
            node,
            expect_epoch: expect,
            cause,
        }));
    }

    /// Fails the module over from its current node (claim 1), or to the next
    /// node when the failover node failed too (claim 2).
    fn failover(&mut self, name: &str, m: &ModuleRecord, epoch: Epoch, from: &str, reason: String) {
        let mut tried: BTreeSet<&str> = m.tried_nodes.iter().map(String::as_str).collect();
        tried.insert(from);
        let tried_list = tried.iter().copied().collect::<Vec<_>>().join(", ");
        if m.episode_failovers >= m.spec.failover.max_nodes {
            self.push(Transition::GiveUp(GiveUp {
                module: name.to_string(),
                epoch: Some(epoch),
                reason: format!(
                    "{reason}; failover.max_nodes = {} reached (tried: {tried_list})",
                    m.spec.failover.max_nodes
                ),
            }));
            return;
        }
        match self.eligible(m, &tried).into_iter().next() {
            Some(node) => {
                if let Some(c) = self.load().get_mut(from) {
                    *c = c.saturating_sub(1);
                }
                self.place(name, node, Some(epoch), PlaceCause::Failover { reason });
            }
            None => {
                let absent = self.unavailable(m, &tried);
                if absent.is_empty() {
                    self.push(Transition::GiveUp(GiveUp {
                        module: name.to_string(),
                        epoch: Some(epoch),
                        reason: format!(
                            "{reason}; no eligible node left for failover (tried: {tried_list})"
                        ),
                    }));
                    return;
                }
                // Nodes that may come back: wait for one rather than fail
                // for good because of a partition or an outage.
                self.await_node(name, m, epoch, &reason, &absent, &tried);
            }
        }
    }

    /// Moves the module off `from`, a node that was lost: to the best ready
    /// node that has not failed it in this episode, or, when none is ready,
    /// it waits for one. Never gives up: losing nodes is not the module
    /// failing.
    fn relocate(&mut self, name: &str, m: &ModuleRecord, epoch: Epoch, from: &str, reason: String) {
        let mut exclude: BTreeSet<&str> = m.tried_nodes.iter().map(String::as_str).collect();
        exclude.insert(from);
        if let Some(node) = self.eligible(m, &exclude).into_iter().next() {
            if let Some(c) = self.load().get_mut(from) {
                *c = c.saturating_sub(1);
            }
            self.place(name, node, Some(epoch), PlaceCause::NodeLost { reason });
            return;
        }
        let mut waiting = self.unavailable(m, &exclude);
        waiting.insert(0, from.to_string());
        self.await_node(name, m, epoch, &reason, &waiting, &exclude);
    }

    fn await_node(
        &mut self,
        name: &str,
        m: &ModuleRecord,
        epoch: Epoch,
        reason: &str,
        not_ready: &[String],
        tried: &BTreeSet<&str>,
    ) {
        let tried = tried.iter().copied().collect::<Vec<_>>().join(", ");
        let reason = format!(
            "{reason}; waiting for an eligible node to be ready (not ready: {}; excluded: {tried})",
            not_ready.join(", ")
        );
        if m.state != ModuleState::FailingOver || m.reason.as_ref() != Some(&reason) {
            self.push(Transition::AwaitNode(AwaitNode {
                module: name.to_string(),
                epoch,
                reason,
            }));
        }
    }

    /// Nodes that would be eligible for `m` but are not ready (suspect or
    /// down), excluding `exclude`.
    fn unavailable(&self, m: &ModuleRecord, exclude: &BTreeSet<&str>) -> Vec<String> {
        self.candidates(m, exclude)
            .filter(|name| self.health.get(name.as_str()) != Some(&NodeHealth::Ready))
            .cloned()
            .collect()
    }

    /// Nodes `m` may run on whatever their health: not draining, labels
    /// matching, not in `exclude`.
    fn candidates<'s>(
        &'s self,
        m: &'s ModuleRecord,
        exclude: &'s BTreeSet<&str>,
    ) -> impl Iterator<Item = &'a String> + 's {
        self.state
            .nodes
            .iter()
            .filter(move |(name, n)| {
                !n.draining
                    && !exclude.contains(name.as_str())
                    && m.spec
                        .placement
                        .labels
                        .iter()
                        .all(|(k, v)| n.labels.get(k) == Some(v))
            })
            .map(|(name, _)| name)
    }

    fn restore_or_failover(
        &mut self,
        name: &str,
        m: &ModuleRecord,
        epoch: Epoch,
        node: &str,
        status: ModuleStatus,
    ) {
        if m.restore_attempts < m.spec.restart.attempts {
            self.push(Transition::RestoreOrdered(RestoreOrdered {
                module: name.to_string(),
                epoch,
                seq: m.restore_seq + 1,
            }));
        } else {
            self.failover(
                name,
                m,
                epoch,
                node,
                format!(
                    "not restored on {node} after {} attempts (last status {})",
                    m.restore_attempts,
                    status.as_str()
                ),
            );
        }
    }

    fn module(&mut self, name: &str, m: &ModuleRecord) {
        if matches!(m.state, ModuleState::Failed | ModuleState::Stopped) {
            return;
        }
        let Some(p) = &m.placement else {
            let preferred = m.spec.placement.node.as_deref();
            let mut candidates = self.eligible(m, &BTreeSet::new());
            if let Some(pos) = preferred.and_then(|n| candidates.iter().position(|c| c == n)) {
                let node = candidates.remove(pos);
                candidates.insert(0, node);
            }
            if let Some(node) = candidates.into_iter().next() {
                self.place(name, node, None, PlaceCause::Initial);
            }
            return;
        };
        let health = self.health.get(p.node.as_str()).copied();
        let node_lost = matches!(
            (health, m.spec.fencing),
            (Some(NodeHealth::Down) | None, _) | (Some(NodeHealth::Suspect), Fencing::AtLeastOne)
        );
        if node_lost {
            let how = if health == Some(NodeHealth::Suspect) {
                "suspect"
            } else {
                "down"
            };
            self.relocate(
                name,
                m,
                p.epoch,
                &p.node,
                format!("node {} is {how}", p.node),
            );
            return;
        }
        if let Some(prev) = &p.previous {
            if self.released(name, prev, m.spec.fencing) {
                self.push(Transition::ReleasePrevious(ReleasePrevious {
                    module: name.to_string(),
                    epoch: p.epoch,
                }));
            } else if m.package.is_some() {
                return;
            }
        }
        if m.package.is_none() {
            self.plan.fetches.push(Fetch {
                module: name.to_string(),
                epoch: p.epoch,
                package: m.spec.package.clone(),
            });
            return;
        }
        let Some(obs) = self.observed.nodes.get(&p.node) else {
            return;
        };
        let Some((entry, status, since)) = obs.module(name) else {
            return;
        };
        if entry.epoch != p.epoch {
            return; // not installed yet: the install directive is on its way
        }
        let healthy_for = self.now.saturating_sub(since);
        let healthy =
            status == ModuleStatus::Running && healthy_for >= m.spec.restart.min_healthy_ms;
        let message = |kind: ReportKind| {
            obs.messages
                .get(name)
                .filter(|(e, k, _)| *e == p.epoch && *k == kind)
                .map(|(_, _, msg)| msg.clone())
        };
        match m.state {
            ModuleState::Installing | ModuleState::FailingOver => {
                if healthy {
                    self.push(Transition::Healthy(Healthy {
                        module: name.to_string(),
                        epoch: p.epoch,
                    }));
                } else if m.state == ModuleState::FailingOver
                    && matches!(status, ModuleStatus::Fenced | ModuleStatus::Stopped)
                {
                    // The node stopped its copy (its lease ran out during a
                    // partition, or its agent restarted): the module did not
                    // fail there, so no failed start is counted; it moves on.
                    self.relocate(
                        name,
                        m,
                        p.epoch,
                        &p.node,
                        format!("{} stopped its copy ({})", p.node, status.as_str()),
                    );
                } else if status == ModuleStatus::InstallFailed || status.is_down() {
                    let (stage, reason) = if status == ModuleStatus::InstallFailed {
                        let why = message(ReportKind::InstallFailed)
                            .unwrap_or_else(|| "no reason given".into());
                        (
                            FailStage::Install,
                            format!("install on {} failed: {why}", p.node),
                        )
                    } else {
                        let why =
                            message(ReportKind::Failed).unwrap_or_else(|| status.as_str().into());
                        (
                            FailStage::Start,
                            format!(
                                "module went down on {} before it was healthy: {why}",
                                p.node
                            ),
                        )
                    };
                    if stage == FailStage::Start && m.state == ModuleState::Installing {
                        // A fresh deploy that crashed: restore in place first.
                        self.push(Transition::FailureDetected(FailureDetected {
                            module: name.to_string(),
                            epoch: p.epoch,
                            status: status.as_str().to_string(),
                        }));
                        self.restore_or_failover(name, m, p.epoch, &p.node, status);
                        return;
                    }
                    self.push(Transition::InstallFailed(InstallFailed {
                        module: name.to_string(),
                        epoch: p.epoch,
                        stage,
                        reason: reason.clone(),
                    }));
                    self.failover(name, m, p.epoch, &p.node, reason);
                }
            }
            ModuleState::Running => {
                if status.is_down() {
                    self.push(Transition::FailureDetected(FailureDetected {
                        module: name.to_string(),
                        epoch: p.epoch,
                        status: status.as_str().to_string(),
                    }));
                    self.restore_or_failover(name, m, p.epoch, &p.node, status);
                }
            }
            ModuleState::Restoring => {
                if m.restore_seq == 0 {
                    self.restore_or_failover(name, m, p.epoch, &p.node, status);
                } else if entry.restore_seq == m.restore_seq {
                    if healthy {
                        self.push(Transition::Healthy(Healthy {
                            module: name.to_string(),
                            epoch: p.epoch,
                        }));
                    } else if status.is_down() {
                        self.restore_or_failover(name, m, p.epoch, &p.node, status);
                    }
                }
            }
            ModuleState::Pending | ModuleState::Failed | ModuleState::Stopped => {}
        }
    }

    /// Whether the copy on `prev` is known not to run (or need not be
    /// waited for), so the new placement may start.
    fn released(&self, module: &str, prev: &str, fencing: Fencing) -> bool {
        if fencing == Fencing::AtLeastOne {
            return true;
        }
        match self.health.get(prev) {
            None | Some(NodeHealth::Down) => return true,
            _ => {}
        }
        match self.observed.nodes.get(prev) {
            Some(obs) if obs.table.is_some() => match obs.module(module) {
                None => true,
                Some((_, status, _)) => status.is_down(),
            },
            _ => false,
        }
    }

    /// Moves modules off draining nodes, one at a time per node.
    fn drains(&mut self) {
        for (node, record) in &self.state.nodes {
            if !record.draining {
                continue;
            }
            let moving = self.state.modules.values().any(|m| {
                m.placement.as_ref().is_some_and(|p| {
                    p.cause == PlaceCause::Drain
                        && p.previous.as_deref() == Some(node.as_str())
                        && m.state == ModuleState::Installing
                })
            });
            if moving || self.plan_touches_drain(node) {
                continue;
            }
            let next = self
                .state
                .modules_on(node)
                .find(|(_, m)| m.state == ModuleState::Running);
            if let Some((name, m)) = next {
                let epoch = m.placement.as_ref().map(|p| p.epoch);
                let exclude = BTreeSet::from([node.as_str()]);
                if let Some(target) = self.eligible(m, &exclude).into_iter().next() {
                    self.place(name, target, epoch, PlaceCause::Drain);
                }
            }
        }
    }

    fn plan_touches_drain(&self, _node: &str) -> bool {
        self.plan
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(p) if p.cause == PlaceCause::Drain))
    }
}

/// The directives for a node's agent, derived from committed state and the
/// node's table: install what is placed there and not installed, repeat a
/// restore not yet executed, stop what is not placed there.
pub fn directives_for(
    state: &ClusterState,
    node: &str,
    table: &ModuleTable,
    depmgr: &str,
) -> Vec<Directive> {
    let mut out = Vec::new();
    let installed: BTreeMap<&str, &TableEntry> = table
        .modules
        .iter()
        .map(|e| (e.module.as_str(), e))
        .collect();
    for (name, m) in state.modules_on(node) {
        let (Some(p), Some(package)) = (&m.placement, &m.package) else {
            continue;
        };
        if matches!(m.state, ModuleState::Failed | ModuleState::Stopped) || p.previous.is_some() {
            continue;
        }
        match installed.get(name.as_str()) {
            Some(e) if e.epoch > p.epoch => {}
            Some(e) if e.epoch == p.epoch => {
                if m.state == ModuleState::Restoring && e.restore_seq < m.restore_seq {
                    out.push(Directive::Restore(Restore {
                        module: name.clone(),
                        epoch: p.epoch,
                        seq: m.restore_seq,
                        backoff_ms: m.spec.restart.backoff_ms,
                    }));
                }
            }
            _ => out.push(Directive::Install(Install {
                module: name.clone(),
                epoch: p.epoch,
                fencing: m.spec.fencing,
                package: package.clone(),
                depmgr: depmgr.to_string(),
            })),
        }
    }
    for e in &table.modules {
        let placed_here = state
            .modules
            .get(&e.module)
            .and_then(|m| m.placement.as_ref())
            .is_some_and(|p| p.node == node && p.epoch >= e.epoch);
        if !placed_here {
            out.push(Directive::Stop(Stop {
                module: e.module.clone(),
                epoch: state.last_index.max(e.epoch),
            }));
        }
    }
    out
}
