//! The replicated state of the supervisor cluster and its pure `apply`.
//!
//! Everything the cluster must not forget lives here and only changes
//! through [`ClusterState::apply`]: nodes (address, labels, health,
//! administrative state), modules (spec, placement with its epoch, restore
//! counters, failover episode, resolved configuration package), and an event
//! record of every decision.
//!
//! ## Data flow
//! A Raft log entry carries one [`Batch`]: the leader's timestamp and a list
//! of [`Transition`]s applied in order. [`ClusterState::apply`] dispatches
//! each one to the `apply` of its struct, which sits beside the struct, by
//! concern:
//! - `modules`: what an operator asks of modules ([`Deploy`], [`Remove`]);
//! - `nodes`: node registration, the failure detector's verdicts, drains
//!   ([`RegisterNode`], [`SetNodeHealth`], [`Drain`]);
//! - `placement`: where a module runs and when it stops trying ([`Place`],
//!   [`ReleasePrevious`], [`AwaitNode`], [`GiveUp`]);
//! - `lease`: the lease terms every lease still held is within
//!   ([`RecordLease`]);
//! - `recovery`: bringing a placement up and keeping it up
//!   ([`PackageRetrieved`], [`FailureDetected`], [`RestoreOrdered`],
//!   [`Healthy`], [`InstallFailed`]).
//!
//! This file keeps what they share: the event record, the modules-by-node
//! index, and the queries the planner and the views ask
//! ([`ClusterState::modules_on`], [`ClusterState::eligible_nodes`],
//! [`ClusterState::load_by_node`]).
//!
//! ## Invariants
//! - Each transition checks only preconditions on the state (the epoch it
//!   was planned against, the state it expects) and is rejected, as a
//!   response, when they no longer hold, so a plan computed on a slightly
//!   old state can never corrupt the current one, and a transition replayed
//!   twice has no second effect. A rejected transition leaves the state
//!   unchanged. Input is validated at the edge before it is proposed (a
//!   module spec by the admin API), never here: what `apply` accepts must
//!   not depend on validation rules that a later version may change.
//! - `apply` is deterministic: no clock (times come stamped in the batch),
//!   no randomness, no I/O, ordered maps only. Replicas applying the same
//!   log hold byte-identical snapshots.
//! - `placed` always equals what the placements say (kept by `apply`).
//! - Storage: the log and snapshots are bincode ([`proto::codec`]).
//!   [`Transition`] variants are only ever appended, no field changes its
//!   encoding; the records shown by the admin API ([`Event`], [`EventKind`],
//!   [`ModuleState`]) live in [`proto::record`].

mod lease;
mod modules;
mod nodes;
mod placement;
mod recovery;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto::spec::ModuleSpec;
use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

pub use lease::{LeaseTerms, RecordLease};
pub use modules::{Deploy, ModuleRecord, Remove};
pub use nodes::{Drain, NodeHealth, NodeRecord, RegisterNode, SetNodeHealth};
pub use placement::{AwaitNode, GiveUp, Place, PlaceCause, Placement, ReleasePrevious};
pub use proto::record::{Event, EventKind, ModuleState};
pub use recovery::{
    FailStage, FailureDetected, Healthy, InstallFailed, PackageRetrieved, RestoreOrdered,
};

/// Events kept in the state; older ones are dropped first.
pub const EVENTS_KEPT: usize = 10_000;

/// The replicated state. Its encoding is its fields in order (bincode);
/// fields added later go at the end and decode to their default from a
/// snapshot written before them (see the `Deserialize` impl).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub modules: BTreeMap<ModuleName, ModuleRecord>,
    pub events: VecDeque<Event>,
    pub next_event: u64,
    /// Index: the modules placed on each node (kept by `apply`).
    pub placed: BTreeMap<NodeId, BTreeSet<ModuleName>>,
    /// Last applied log index (the epoch source).
    pub last_index: u64,
    /// The lease terms every lease still held is within (see `lease`).
    pub lease: LeaseTerms,
}

/// Decodes the fields in order; `lease`, added after the first stored
/// format, is optional at the end: a snapshot written before it has
/// nothing more, and decodes to the default (no terms recorded yet), as the
/// compatibility fixture shows (`scenarios::compat`).
impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClusterState, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        const FIELDS: &[&str] = &[
            "nodes",
            "modules",
            "events",
            "next_event",
            "placed",
            "last_index",
            "lease",
        ];
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ClusterState;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the cluster state's fields in order")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClusterState, A::Error> {
                let missing = |i: usize| A::Error::invalid_length(i, &"7 fields");
                Ok(ClusterState {
                    nodes: seq.next_element()?.ok_or_else(|| missing(0))?,
                    modules: seq.next_element()?.ok_or_else(|| missing(1))?,
                    events: seq.next_element()?.ok_or_else(|| missing(2))?,
                    next_event: seq.next_element()?.ok_or_else(|| missing(3))?,
                    placed: seq.next_element()?.ok_or_else(|| missing(4))?,
                    last_index: seq.next_element()?.ok_or_else(|| missing(5))?,
                    // The input ends here in the first format.
                    lease: seq.next_element().ok().flatten().unwrap_or_default(),
                })
            }
        }
        d.deserialize_struct("ClusterState", FIELDS, Fields)
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// 404: an unknown module or node.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with the state (duplicate name, stale epoch, …).
    #[error("{0}")]
    Conflict(String),
    /// 400: invalid input.
    #[error("{0}")]
    Invalid(String),
}

impl Rejection {
    pub fn message(&self) -> &str {
        match self {
            Rejection::NotFound(m) | Rejection::Conflict(m) | Rejection::Invalid(m) => m,
        }
    }
}

/// Every change the state can undergo, one struct each (its `apply` beside
/// it). Variants are only ever added at the end, never reordered: the log is
/// bincode, which stores the variant's position.
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
    RecordLease(RecordLease),
}

impl Transition {
    /// Applies the transition at log `index`, stamped `at` (ms) by the
    /// leader. `Err` leaves the state unchanged.
    fn apply(&self, state: &mut ClusterState, index: u64, at: u64) -> Result<(), Rejection> {
        match self {
            Transition::Deploy(t) => t.apply(state, index, at),
            Transition::Remove(t) => t.apply(state, index, at),
            Transition::Drain(t) => t.apply(state, index, at),
            Transition::RegisterNode(t) => t.apply(state, index, at),
            Transition::SetNodeHealth(t) => t.apply(state, index, at),
            Transition::Place(t) => t.apply(state, index, at),
            Transition::PackageRetrieved(t) => t.apply(state, index, at),
            Transition::FailureDetected(t) => t.apply(state, index, at),
            Transition::RestoreOrdered(t) => t.apply(state, index, at),
            Transition::Healthy(t) => t.apply(state, index, at),
            Transition::InstallFailed(t) => t.apply(state, index, at),
            Transition::GiveUp(t) => t.apply(state, index, at),
            Transition::ReleasePrevious(t) => t.apply(state, index, at),
            Transition::AwaitNode(t) => t.apply(state, index, at),
            Transition::RecordLease(t) => t.apply(state, index, at),
        }
    }
}

/// The rejection for a name the state does not know.
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
            .map(|t| match t.apply(self, index, batch.at_ms) {
                Ok(()) => Outcome::Applied { epoch: index },
                Err(r) => Outcome::Rejected(r),
            })
            .collect();
        BatchResponse { outcomes }
    }

    /// Records a decision, dropping the oldest beyond [`EVENTS_KEPT`].
    fn event(
        &mut self,
        log_index: u64,
        at_ms: u64,
        kind: EventKind,
        module: Option<&str>,
        node: Option<&str>,
        detail: &[(&str, String)],
    ) {
        self.next_event += 1;
        self.events.push_back(Event {
            index: self.next_event,
            log_index,
            at_ms,
            kind,
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

    /// Records an event about `module`, on the node it is placed on now.
    fn module_event(
        &mut self,
        log_index: u64,
        at_ms: u64,
        kind: EventKind,
        module: &str,
        detail: &[(&str, String)],
    ) {
        let node = self
            .modules
            .get(module)
            .and_then(|m| m.placement.as_ref())
            .map(|p| p.node.clone());
        self.event(
            log_index,
            at_ms,
            kind,
            Some(module),
            node.as_deref(),
            detail,
        );
    }

    /// The module placed at `epoch` (its current placement), mutably.
    fn placed_module(
        &mut self,
        module: &str,
        epoch: Epoch,
    ) -> Result<&mut ModuleRecord, Rejection> {
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

    /// Adds `module` to the modules-by-node index under `node`.
    fn index(&mut self, node: &str, module: &str) {
        self.placed
            .entry(node.to_string())
            .or_default()
            .insert(module.to_string());
    }

    /// Takes `module` out of the modules-by-node index under `node`.
    fn unindex(&mut self, node: &str, module: &str) {
        if let Some(set) = self.placed.get_mut(node) {
            set.remove(module);
            if set.is_empty() {
                self.placed.remove(node);
            }
        }
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
