//! The replicated state of the supervisor cluster and its pure `apply`.
//!
//! Everything the cluster must not forget lives here and only changes
//! through [`ClusterState::apply`]: nodes (address, labels, health,
//! administrative state), modules (spec, placement with its epoch, restore
//! counters, failover episode, resolved configuration package), and an event
//! record of every decision.
//!
//! A Raft log entry carries one [`Batch`]: the leader's timestamp and a list
//! of [`Transition`]s applied in order. Each transition checks its
//! preconditions (the epoch it was planned against, the state it expects) and
//! is rejected, as a response, when they no longer hold, so a plan computed on
//! a slightly old state can never corrupt the current one, and a transition
//! replayed twice has no second effect.
//!
//! `apply` is deterministic: no clock (times come stamped in the batch), no
//! randomness, no I/O, ordered maps only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto::manifest::ConfigPackage;
use proto::spec::ModuleSpec;
use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

/// Events kept in the state; older ones are dropped first.
pub const EVENTS_KEPT: usize = 10_000;

/// A node's health as the leader's failure detector last committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    Ready,
    Suspect,
    Down,
}

/// A node, as registered by its agent's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub health: NodeHealth,
    /// Set by `POST /v1/nodes/{id}/drain`: no new modules, existing ones move.
    pub draining: bool,
    pub updated_ms: u64,
}

/// The life-cycle state of a module (the `state` field of its view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    /// Deployed, waiting for a node.
    Pending,
    /// Placed; the package is being retrieved, installed and started.
    Installing,
    /// Running and healthy.
    Running,
    /// Failed on its node; restores ordered there.
    Restoring,
    /// Moving to a failover node (installing there).
    FailingOver,
    /// Given up; `reason` says why.
    Failed,
    /// Stopped by an operator.
    Stopped,
}

impl ModuleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Pending => "pending",
            ModuleState::Installing => "installing",
            ModuleState::Running => "running",
            ModuleState::Restoring => "restoring",
            ModuleState::FailingOver => "failing_over",
            ModuleState::Failed => "failed",
            ModuleState::Stopped => "stopped",
        }
    }
}

/// Why a module was placed where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceCause {
    /// First placement after deploy.
    Initial,
    /// Failover (claim 1 and 2): restores exhausted, node down, or the
    /// previous failover node failed too.
    Failover { reason: String },
    /// Moved off a draining node; not a failure.
    Drain,
    /// Moved off a node that was lost (suspect or down, or back with its
    /// copy stopped). Not a failure of the module: the node is not marked
    /// as tried and `failover.max_nodes` is not spent, so a partition or an
    /// outage never makes a module fail for good.
    NodeLost { reason: String },
}

/// Where a module runs, and the fencing token of that decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: NodeId,
    /// Raft log index of the placement decision.
    pub epoch: Epoch,
    /// The node the module was on before, until that copy is known stopped.
    pub previous: Option<NodeId>,
    pub cause: PlaceCause,
}

/// A module and everything decided about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub spec: ModuleSpec,
    pub state: ModuleState,
    pub placement: Option<Placement>,
    /// The configuration package retrieved for the current placement.
    pub package: Option<ConfigPackage>,
    /// Restores ordered since the module was last healthy.
    pub restore_attempts: u32,
    /// Restore orders issued for the current placement (never reset while
    /// the placement lasts; the agent echoes it back).
    pub restore_seq: u32,
    /// Failovers performed over the module's life.
    pub failovers: u32,
    /// Nodes that failed the module in the current failure episode, in
    /// order; a failover never picks one of them (claim 2).
    pub tried_nodes: Vec<NodeId>,
    /// Failover nodes tried in the current episode (bounded by
    /// `failover.max_nodes`).
    pub episode_failovers: u32,
    /// Why the module is failed or what went wrong last.
    pub reason: Option<String>,
    /// Index of the deploy.
    pub deployed_at: Epoch,
    pub updated_ms: u64,
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Event number, strictly increasing.
    pub index: u64,
    /// Raft log index of the entry that recorded it.
    pub log_index: u64,
    pub at_ms: u64,
    pub kind: String,
    pub module: Option<ModuleName>,
    pub node: Option<NodeId>,
    pub detail: BTreeMap<String, String>,
}

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub modules: BTreeMap<ModuleName, ModuleRecord>,
    pub events: VecDeque<Event>,
    pub next_event: u64,
    /// Index: the modules placed on each node (kept by `apply`).
    pub placed: BTreeMap<NodeId, BTreeSet<ModuleName>>,
    /// Last applied log index (the epoch source).
    pub last_index: u64,
}

/// One Raft log entry's worth of transitions, stamped by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Leader's wall clock when it proposed the batch (ms since the epoch).
    pub at_ms: u64,
    pub transitions: Vec<Transition>,
}

/// The response to a batch: one outcome per transition, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub outcomes: Vec<Outcome>,
}

/// The outcome of one transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; `epoch` is the log index of the entry.
    Applied { epoch: Epoch },
    /// Not applied; the state is unchanged by this transition.
    Rejected(Rejection),
}

/// Why a transition was not applied (maps onto HTTP statuses at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// 404: an unknown module or node.
    NotFound(String),
    /// 409: conflicts with the state (duplicate name, stale epoch, …).
    Conflict(String),
    /// 400: invalid input.
    Invalid(String),
}

impl Rejection {
    pub fn message(&self) -> &str {
        match self {
            Rejection::NotFound(m) | Rejection::Conflict(m) | Rejection::Invalid(m) => m,
        }
    }
}

/// Every change the state can undergo. Variants are only ever added at the
/// end (the log is bincode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    Deploy(Deploy),
    Remove(Remove),
    Drain(Drain),
    RegisterNode(RegisterNode),
    SetNodeHealth(SetNodeHealth),
    Place(Place),
    PackageRetrieved(PackageRetrieved),
    FailureDetected(FailureDetected),
    RestoreOrdered(RestoreOrdered),
    Healthy(Healthy),
    InstallFailed(InstallFailed),
    GiveUp(GiveUp),
    ReleasePrevious(ReleasePrevious),
    AwaitNode(AwaitNode),
}

/// Operator: deploy a new module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub spec: ModuleSpec,
}

/// Operator: stop and remove a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    pub module: ModuleName,
}

/// Operator: drain a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub node: NodeId,
}

/// A node's agent announced (or changed) its address and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub node: NodeId,
    pub addr: String,
    pub labels: BTreeMap<String, String>,
}

/// The failure detector's verdict on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeHealth {
    pub node: NodeId,
    pub health: NodeHealth,
    pub detail: String,
}

/// Place a module on a node: a new epoch. `expect_epoch` is the placement
/// epoch the decision was made against (None: not placed yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub module: ModuleName,
    pub node: NodeId,
    pub expect_epoch: Option<Epoch>,
    pub cause: PlaceCause,
}

/// The configuration package (manifest + dependency closure) retrieved from
/// depmgr for a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRetrieved {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub package: ConfigPackage,
}

/// A heartbeat showed the module down on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetected {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub status: String,
}

/// A restore order for restore number `seq` of the placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOrdered {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub seq: u32,
}

/// The module ran healthy for `min_healthy_ms` (after an install, a
/// restore or a failover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthy {
    pub module: ModuleName,
    pub epoch: Epoch,
}

/// The install, or the first start, on the placement's node failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallFailed {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub stage: FailStage,
    pub reason: String,
}

/// Which step of bringing a placement up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailStage {
    /// Fetching, verifying or unpacking the package.
    Install,
    /// The module started but went down before it was healthy.
    Start,
}

/// The module must leave its node, but no eligible node is ready now while
/// some untried ones may come back (down or suspect): it waits for one
/// instead of failing, and the next pass places it once one is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitNode {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub reason: String,
}

/// No way left to run the module: mark it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiveUp {
    pub module: ModuleName,
    pub epoch: Option<Epoch>,
    pub reason: String,
}

/// The previous node's copy is known stopped (or the node is down): the new
/// placement may start (at-most-one fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePrevious {
    pub module: ModuleName,
    pub epoch: Epoch,
}

type Result = std::result::Result<(), Rejection>;

fn not_found(what: &str, name: &str) -> Rejection {
    Rejection::NotFound(format!("unknown {what} {name:?}"))
}

impl ClusterState {
    /// Applies one log entry. Deterministic.
    pub fn apply(&mut self, index: u64, batch: &Batch) -> BatchResponse {
        self.last_index = index;
        let outcomes = batch
            .transitions
            .iter()
            .map(|t| match self.apply_one(index, batch.at_ms, t) {
                Ok(()) => Outcome::Applied { epoch: index },
                Err(r) => Outcome::Rejected(r),
            })
            .collect();
        BatchResponse { outcomes }
    }

    fn event(
        &mut self,
        log_index: u64,
        at_ms: u64,
        kind: &str,
        module: Option<&str>,
        node: Option<&str>,
        detail: &[(&str, String)],
    ) {
        self.next_event += 1;
        self.events.push_back(Event {
            index: self.next_event,
            log_index,
            at_ms,
            kind: kind.to_string(),
            module: module.map(str::to_string),
            node: node.map(str::to_string),
            detail: detail
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// The module placed at `epoch` (its current placement), mutably.
    fn placed_module(
        &mut self,
        module: &str,
        epoch: Epoch,
    ) -> std::result::Result<&mut ModuleRecord, Rejection> {
        let m = self
            .modules
            .get_mut(module)
            .ok_or_else(|| not_found("module", module))?;
        match &m.placement {
            Some(p) if p.epoch == epoch => Ok(m),
            Some(p) => Err(Rejection::Conflict(format!(
                "module {module:?} is at epoch {}, not {epoch}",
                p.epoch
            ))),
            None => Err(Rejection::Conflict(format!(
                "module {module:?} is not placed"
            ))),
        }
    }

    /// Number of modules placed on each node (failed ones excluded).
    pub fn load_by_node(&self) -> BTreeMap<&str, usize> {
        let mut load: BTreeMap<&str, usize> = self.nodes.keys().map(|n| (n.as_str(), 0)).collect();
        for node in self.placed.keys() {
            let n = self
                .modules_on(node)
                .filter(|(_, m)| m.state != ModuleState::Failed)
                .count();
            load.insert(node.as_str(), n);
        }
        load
    }

    fn apply_one(&mut self, index: u64, at: u64, t: &Transition) -> Result {
        match t {
            Transition::Deploy(d) => {
                if let Err(e) = d.spec.validate() {
                    return Err(Rejection::Invalid(e.to_string()));
                }
                let name = d.spec.name.clone();
                if self.modules.contains_key(&name) {
                    return Err(Rejection::Conflict(format!(
                        "module {name:?} already exists"
                    )));
                }
                if let Some(node) = &d.spec.placement.node
                    && !self.nodes.contains_key(node)
                {
                    return Err(Rejection::NotFound(format!(
                        "placement.node: unknown node {node:?}"
                    )));
                }
                self.modules.insert(
                    name.clone(),
                    ModuleRecord {
                        spec: d.spec.clone(),
                        state: ModuleState::Pending,
                        placement: None,
                        package: None,
                        restore_attempts: 0,
                        restore_seq: 0,
                        failovers: 0,
                        tried_nodes: vec![],
                        episode_failovers: 0,
                        reason: None,
                        deployed_at: index,
                        updated_ms: at,
                    },
                );
                let pkg = d.spec.package.to_string();
                self.event(
                    index,
                    at,
                    "module_deployed",
                    Some(&name),
                    None,
                    &[("package", pkg)],
                );
                Ok(())
            }
            Transition::Remove(r) => {
                let m = self
                    .modules
                    .remove(&r.module)
                    .ok_or_else(|| not_found("module", &r.module))?;
                let node = m.placement.map(|p| p.node);
                if let Some(n) = &node {
                    self.unindex(n, &r.module);
                }
                self.event(
                    index,
                    at,
                    "module_removed",
                    Some(&r.module),
                    node.as_deref(),
                    &[],
                );
                Ok(())
            }
            Transition::Drain(d) => {
                let n = self
                    .nodes
                    .get_mut(&d.node)
                    .ok_or_else(|| not_found("node", &d.node))?;
                if n.draining {
                    return Err(Rejection::Conflict(format!(
                        "node {:?} is already draining",
                        d.node
                    )));
                }
                n.draining = true;
                n.updated_ms = at;
                self.event(index, at, "node_draining", None, Some(&d.node), &[]);
                Ok(())
            }
            Transition::RegisterNode(r) => {
                match self.nodes.get_mut(&r.node) {
                    Some(n) if n.addr == r.addr && n.labels == r.labels => {
                        return Err(Rejection::Conflict(format!("node {:?} unchanged", r.node)));
                    }
                    Some(n) => {
                        n.addr = r.addr.clone();
                        n.labels = r.labels.clone();
                        n.updated_ms = at;
                        self.event(
                            index,
                            at,
                            "node_updated",
                            None,
                            Some(&r.node),
                            &[("addr", r.addr.clone())],
                        );
                    }
                    None => {
                        self.nodes.insert(
                            r.node.clone(),
                            NodeRecord {
                                addr: r.addr.clone(),
                                labels: r.labels.clone(),
                                health: NodeHealth::Ready,
                                draining: false,
                                updated_ms: at,
                            },
                        );
                        self.event(
                            index,
                            at,
                            "node_registered",
                            None,
                            Some(&r.node),
                            &[("addr", r.addr.clone())],
                        );
                    }
                }
                Ok(())
            }
            Transition::SetNodeHealth(h) => {
                let n = self
                    .nodes
                    .get_mut(&h.node)
                    .ok_or_else(|| not_found("node", &h.node))?;
                if n.health == h.health {
                    return Err(Rejection::Conflict(format!(
                        "node {:?} already {:?}",
                        h.node, h.health
                    )));
                }
                n.health = h.health;
                n.updated_ms = at;
                let kind = match h.health {
                    NodeHealth::Ready => "node_ready",
                    NodeHealth::Suspect => "node_suspect",
                    NodeHealth::Down => "node_down",
                };
                self.event(
                    index,
                    at,
                    kind,
                    None,
                    Some(&h.node),
                    &[("detail", h.detail.clone())],
                );
                Ok(())
            }
            Transition::Place(p) => self.place(index, at, p),
            Transition::PackageRetrieved(p) => {
                let m = self.placed_module(&p.module, p.epoch)?;
                if m.package.is_some() {
                    return Err(Rejection::Conflict("package already retrieved".into()));
                }
                let version = p.package.manifest.version.clone();
                let artifacts = p.package.artifacts.len().to_string();
                m.package = Some(p.package.clone());
                m.updated_ms = at;
                let node = m.placement.as_ref().map(|pl| pl.node.clone());
                self.event(
                    index,
                    at,
                    "package_retrieved",
                    Some(&p.module),
                    node.as_deref(),
                    &[
                        ("version", version),
                        ("artifacts", artifacts),
                        ("epoch", p.epoch.to_string()),
                    ],
                );
                Ok(())
            }
            Transition::FailureDetected(f) => {
                let m = self.placed_module(&f.module, f.epoch)?;
                if !matches!(m.state, ModuleState::Running | ModuleState::Installing) {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} is {}, not running",
                        f.module,
                        m.state.as_str()
                    )));
                }
                m.state = ModuleState::Restoring;
                m.updated_ms = at;
                let node = m.placement.as_ref().map(|p| p.node.clone());
                self.event(
                    index,
                    at,
                    "failure_detected",
                    Some(&f.module),
                    node.as_deref(),
                    &[("status", f.status.clone()), ("epoch", f.epoch.to_string())],
                );
                Ok(())
            }
            Transition::RestoreOrdered(r) => {
                let m = self.placed_module(&r.module, r.epoch)?;
                if m.state != ModuleState::Restoring {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} is not restoring",
                        r.module
                    )));
                }
                if r.seq != m.restore_seq + 1 {
                    return Err(Rejection::Conflict(format!(
                        "restore {} already ordered (next is {})",
                        r.seq,
                        m.restore_seq + 1
                    )));
                }
                if m.restore_attempts >= m.spec.restart.attempts {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} has used its {} restore attempts",
                        r.module, m.spec.restart.attempts
                    )));
                }
                m.restore_seq = r.seq;
                m.restore_attempts += 1;
                m.updated_ms = at;
                let attempt = m.restore_attempts.to_string();
                let of = m.spec.restart.attempts.to_string();
                let node = m.placement.as_ref().map(|p| p.node.clone());
                self.event(
                    index,
                    at,
                    "restore_ordered",
                    Some(&r.module),
                    node.as_deref(),
                    &[
                        ("attempt", attempt),
                        ("of", of),
                        ("epoch", r.epoch.to_string()),
                    ],
                );
                Ok(())
            }
            Transition::Healthy(h) => {
                let m = self.placed_module(&h.module, h.epoch)?;
                let prior = m.state;
                let kinds: &[&str] = match prior {
                    ModuleState::Installing => &["installed"],
                    ModuleState::Restoring => &["restored"],
                    ModuleState::FailingOver => &["installed", "failover_completed"],
                    _ => {
                        return Err(Rejection::Conflict(format!(
                            "module {:?} is {}",
                            h.module,
                            prior.as_str()
                        )));
                    }
                };
                let attempts = m.restore_attempts.to_string();
                m.state = ModuleState::Running;
                m.restore_attempts = 0;
                m.tried_nodes.clear();
                m.episode_failovers = 0;
                m.reason = None;
                m.updated_ms = at;
                let node = m.placement.as_ref().map(|p| p.node.clone());
                for kind in kinds {
                    self.event(
                        index,
                        at,
                        kind,
                        Some(&h.module),
                        node.as_deref(),
                        &[
                            ("epoch", h.epoch.to_string()),
                            ("restore_attempts", attempts.clone()),
                        ],
                    );
                }
                Ok(())
            }
            Transition::InstallFailed(f) => {
                let m = self.placed_module(&f.module, f.epoch)?;
                if !matches!(m.state, ModuleState::Installing | ModuleState::FailingOver) {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} is not installing",
                        f.module
                    )));
                }
                m.reason = Some(f.reason.clone());
                m.updated_ms = at;
                let failover = m.state == ModuleState::FailingOver;
                let node = m.placement.as_ref().map(|p| p.node.clone());
                let kind = match f.stage {
                    FailStage::Install => "install_failed",
                    FailStage::Start => "start_failed",
                };
                self.event(
                    index,
                    at,
                    kind,
                    Some(&f.module),
                    node.as_deref(),
                    &[("reason", f.reason.clone()), ("epoch", f.epoch.to_string())],
                );
                if failover {
                    self.event(
                        index,
                        at,
                        "failover_failed",
                        Some(&f.module),
                        node.as_deref(),
                        &[("reason", f.reason.clone())],
                    );
                }
                Ok(())
            }
            Transition::GiveUp(g) => {
                let m = self
                    .modules
                    .get_mut(&g.module)
                    .ok_or_else(|| not_found("module", &g.module))?;
                if m.placement.as_ref().map(|p| p.epoch) != g.epoch {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} moved on",
                        g.module
                    )));
                }
                if m.state == ModuleState::Failed {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} already failed",
                        g.module
                    )));
                }
                m.state = ModuleState::Failed;
                m.reason = Some(g.reason.clone());
                m.updated_ms = at;
                let node = m.placement.as_ref().map(|p| p.node.clone());
                self.event(
                    index,
                    at,
                    "module_failed",
                    Some(&g.module),
                    node.as_deref(),
                    &[("reason", g.reason.clone())],
                );
                Ok(())
            }
            Transition::AwaitNode(w) => {
                let m = self.placed_module(&w.module, w.epoch)?;
                if m.state == ModuleState::FailingOver && m.reason.as_ref() == Some(&w.reason) {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} already waits for a node",
                        w.module
                    )));
                }
                if matches!(m.state, ModuleState::Failed | ModuleState::Stopped) {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} is {}",
                        w.module,
                        m.state.as_str()
                    )));
                }
                m.state = ModuleState::FailingOver;
                m.reason = Some(w.reason.clone());
                m.updated_ms = at;
                let node = m.placement.as_ref().map(|p| p.node.clone());
                self.event(
                    index,
                    at,
                    "failover_waiting",
                    Some(&w.module),
                    node.as_deref(),
                    &[("reason", w.reason.clone())],
                );
                Ok(())
            }
            Transition::ReleasePrevious(r) => {
                let m = self.placed_module(&r.module, r.epoch)?;
                let placement = m
                    .placement
                    .as_mut()
                    .expect("placed_module checked the placement");
                let previous = placement
                    .previous
                    .take()
                    .ok_or_else(|| Rejection::Conflict("no previous copy to release".into()))?;
                m.updated_ms = at;
                self.event(
                    index,
                    at,
                    "previous_released",
                    Some(&r.module),
                    Some(&previous),
                    &[("epoch", r.epoch.to_string())],
                );
                Ok(())
            }
        }
    }

    fn place(&mut self, index: u64, at: u64, p: &Place) -> Result {
        let node = self
            .nodes
            .get(&p.node)
            .ok_or_else(|| not_found("node", &p.node))?;
        if node.health != NodeHealth::Ready || node.draining {
            return Err(Rejection::Conflict(format!(
                "node {:?} cannot take modules now",
                p.node
            )));
        }
        let m = self
            .modules
            .get_mut(&p.module)
            .ok_or_else(|| not_found("module", &p.module))?;
        let current = m.placement.as_ref().map(|pl| pl.epoch);
        if current != p.expect_epoch {
            return Err(Rejection::Conflict(format!(
                "module {:?} placement changed (epoch {current:?})",
                p.module
            )));
        }
        if m.state == ModuleState::Failed {
            return Err(Rejection::Conflict(format!(
                "module {:?} has failed",
                p.module
            )));
        }
        let from = m.placement.as_ref().map(|pl| pl.node.clone());
        if let PlaceCause::NodeLost { .. } = p.cause {
            m.failovers += 1;
            m.state = ModuleState::FailingOver;
        } else if let PlaceCause::Failover { .. } = p.cause {
            if m.episode_failovers >= m.spec.failover.max_nodes {
                return Err(Rejection::Conflict(format!(
                    "module {:?} has tried failover.max_nodes = {} nodes",
                    p.module, m.spec.failover.max_nodes
                )));
            }
            if m.tried_nodes.contains(&p.node) {
                return Err(Rejection::Conflict(format!(
                    "node {:?} already failed module {:?}",
                    p.node, p.module
                )));
            }
            if let Some(from) = &from
                && !m.tried_nodes.contains(from)
            {
                m.tried_nodes.push(from.clone());
            }
            m.episode_failovers += 1;
            m.failovers += 1;
            m.state = ModuleState::FailingOver;
        } else {
            m.state = ModuleState::Installing;
        }
        if let Some(from) = &from {
            self.unindex(from, &p.module);
        }
        self.placed
            .entry(p.node.clone())
            .or_default()
            .insert(p.module.clone());
        let m = self.modules.get_mut(&p.module).expect("checked above");
        m.placement = Some(Placement {
            node: p.node.clone(),
            epoch: index,
            previous: from.clone(),
            cause: p.cause.clone(),
        });
        m.package = None;
        m.restore_seq = 0;
        if p.cause == PlaceCause::Drain {
            m.restore_attempts = 0;
        }
        m.reason = None;
        m.updated_ms = at;
        let mut detail = vec![("epoch", index.to_string())];
        if let Some(from) = &from {
            detail.push(("from", from.clone()));
        }
        let kind = match &p.cause {
            PlaceCause::Initial => "placed",
            PlaceCause::Failover { reason } | PlaceCause::NodeLost { reason } => {
                detail.push(("reason", reason.clone()));
                detail.push(("tried", m.tried_nodes.join(",")));
                "failover_started"
            }
            PlaceCause::Drain => "drain_moved",
        };
        self.event(index, at, kind, Some(&p.module), Some(&p.node), &detail);
        Ok(())
    }

    /// Modules placed on `node`, in name order (from the index).
    pub fn modules_on<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = (&'a ModuleName, &'a ModuleRecord)> + 'a {
        self.placed
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|name| self.modules.get_key_value(name))
    }

    fn unindex(&mut self, node: &str, module: &str) {
        if let Some(set) = self.placed.get_mut(node) {
            set.remove(module);
            if set.is_empty() {
                self.placed.remove(node);
            }
        }
    }

    /// Nodes a module may move to, best first: ready, not draining, labels
    /// match, not `exclude`d; fewest modules, then name.
    pub fn eligible_nodes(&self, spec: &ModuleSpec, exclude: &BTreeSet<&str>) -> Vec<NodeId> {
        let load = self.load_by_node();
        let mut nodes: Vec<(&usize, &NodeId)> = self
            .nodes
            .iter()
            .filter(|(name, n)| {
                n.health == NodeHealth::Ready
                    && !n.draining
                    && !exclude.contains(name.as_str())
                    && spec
                        .placement
                        .labels
                        .iter()
                        .all(|(k, v)| n.labels.get(k) == Some(v))
            })
            .map(|(name, _)| (load.get(name.as_str()).unwrap_or(&0), name))
            .collect();
        nodes.sort();
        nodes.into_iter().map(|(_, n)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str) -> ModuleSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "package": {"name": "p", "version": "1.0.0"}
        }))
        .expect("spec")
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deploy(usize),
        Remove(usize),
        Place(usize, usize, bool),
        Health(usize, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize).prop_map(Op::Deploy),
            (0..4usize).prop_map(Op::Remove),
            (0..4usize, 0..3usize, any::<bool>()).prop_map(|(m, n, f)| Op::Place(m, n, f)),
            (0..3usize, 0..3u8).prop_map(|(n, h)| Op::Health(n, h)),
        ]
    }

    proptest! {
        /// The modules-by-node index always equals what the placements say,
        /// whatever sequence of (valid or rejected) transitions is applied.
        #[test]
        fn placement_index_matches_placements(ops in proptest::collection::vec(op(), 1..60)) {
            let mut s = ClusterState::default();
            let nodes = ["a", "b", "c"];
            let mut index = 0;
            let mut apply = |s: &mut ClusterState, t: Transition| {
                index += 1;
                s.apply(index, &Batch { at_ms: index, transitions: vec![t] });
            };
            for n in nodes {
                apply(&mut s, Transition::RegisterNode(RegisterNode { node: n.into(), addr: format!("{n}:1"), labels: BTreeMap::new() }));
            }
            for o in ops {
                let t = match o {
                    Op::Deploy(m) => Transition::Deploy(Deploy { spec: spec(&format!("m{m}")) }),
                    Op::Remove(m) => Transition::Remove(Remove { module: format!("m{m}") }),
                    Op::Place(m, n, failover) => {
                        let name = format!("m{m}");
                        let expect = s.modules.get(&name).and_then(|r| r.placement.as_ref()).map(|p| p.epoch);
                        let cause = if failover { PlaceCause::Failover { reason: "x".into() } } else { PlaceCause::Initial };
                        Transition::Place(Place { module: name, node: nodes[n].into(), expect_epoch: expect, cause })
                    }
                    Op::Health(n, h) => Transition::SetNodeHealth(SetNodeHealth {
                        node: nodes[n].into(),
                        health: [NodeHealth::Ready, NodeHealth::Suspect, NodeHealth::Down][h as usize],
                        detail: String::new(),
                    }),
                };
                apply(&mut s, t);
                let mut derived: BTreeMap<NodeId, BTreeSet<ModuleName>> = BTreeMap::new();
                for (name, m) in &s.modules {
                    if let Some(p) = &m.placement {
                        derived.entry(p.node.clone()).or_default().insert(name.clone());
                    }
                }
                prop_assert_eq!(&s.placed, &derived);
            }
        }
    }
}
