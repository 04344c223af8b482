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
//! - `identity`: the cluster's id, chosen once ([`RecordClusterId`]), and
//!   nodes whose agents served another cluster
//!   ([`RegisterNodeFromOtherCluster`]);
//! - `recovery`: bringing a placement up and keeping it up
//!   ([`PackageRetrieved`], [`FailureDetected`], [`RestoreOrdered`],
//!   [`Healthy`], [`InstallFailed`]);
//! - `versions`: revisions and rollouts ([`Update`], [`Rollback`],
//!   [`Revert`]) and quarantined package versions ([`QuarantinePackage`],
//!   [`LiftQuarantine`], [`HoldQuarantined`]).
//! - `prestage`: a package pre-staged on the next failover node, an event
//!   only ([`RecordPrestaged`]).
//! - `lifecycle`: the operator's ways back ([`Undrain`], [`Reset`],
//!   [`RemoveNode`]) and removing a module through `stopped`
//!   ([`StopModule`], then [`Remove`] once its copy is known stopped).
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

mod attention;
mod fleet;
mod identity;
mod lease;
mod lifecycle;
mod modules;
mod nodes;
mod placement;
mod prestage;
mod recovery;
mod versions;
mod why;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto::spec::ModuleSpec;
use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

pub use attention::{Changes, TOUCHES_KEPT};
pub use fleet::{
    AdvanceFleetRollout, FLEET_ROLLOUTS_KEPT, FleetAction, FleetRollout, FleetRollouts, FleetState,
    SetFleetRollout, StartFleetRollout,
};
pub use identity::{RecordClusterId, RegisterNodeFromOtherCluster, cluster_id};
pub use lease::{LeaseTerms, RecordLease};
pub use lifecycle::{RemoveNode, Reset, StopModule, Undrain, copies_maybe_running};
pub use modules::{Deploy, ModuleRecord, Remove};
pub use nodes::{Drain, NodeHealth, NodeRecord, RegisterNode, SetNodeHealth};
pub use placement::{AwaitNode, GiveUp, Place, PlaceCause, Placement, ReleasePrevious};
pub use prestage::RecordPrestaged;
pub use proto::record::{Event, EventKind, ModuleState};
pub use recovery::{
    FailStage, FailureDetected, Healthy, InstallFailed, PackageRetrieved, RestoreOrdered,
};
pub use versions::{
    HoldQuarantined, LiftQuarantine, Packages, Quarantine, QuarantinePackage, REVISIONS_KEPT,
    Revert, Revision, RevisionOutcome, Rollback, Rollout, RolloutState, Update, Versions,
};
pub use why::{CHAIN_KEPT, Why};

/// Events kept in the state; older ones are dropped first.
pub const EVENTS_KEPT: usize = 10_000;
/// Most bytes the kept events may encode to, all together; beyond it the
/// oldest are dropped first, as beyond [`EVENTS_KEPT`]. 16 MiB: 10,000
/// events of about 1.6 KiB each (a usual event is under 200 bytes; a long
/// failure reason makes one larger).
pub const EVENTS_MAX_BYTES: u64 = 16 << 20;

/// A persistent ordered map: structurally shared, so a copy costs O(1)
/// and a change copies only the path to it. The state's large parts are
/// kept in these, so that a snapshot encodes a copy taken in an instant
/// while apply goes on ([`ClusterState::frozen`]). Encoded as a
/// `BTreeMap` is, in the same order: the stored format is unchanged.
pub type SharedMap<K, V> = imbl::OrdMap<K, V>;
/// A persistent ordered set (see [`SharedMap`]).
pub type SharedSet<T> = imbl::OrdSet<T>;
/// A persistent sequence (see [`SharedMap`]): the kept events.
pub type SharedVec<T> = imbl::Vector<T>;

/// The replicated state.
///
/// It is stored without [`ClusterState::size`], which is computed again
/// when a state is decoded (a snapshot) and kept by `apply` since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub modules: SharedMap<ModuleName, ModuleRecord>,
    pub events: SharedVec<Event>,
    pub next_event: u64,
    /// Index: the modules placed on each node (kept by `apply`).
    pub placed: SharedMap<NodeId, SharedSet<ModuleName>>,
    /// Last applied log index (the epoch source).
    pub last_index: u64,
    /// The lease terms every lease still held is within (see `lease`).
    /// Added after the first stored format: see [`StoredState`].
    pub lease: LeaseTerms,
    /// The cluster's id, chosen once (0: not yet; see `identity`). Added
    /// after `lease`: see [`StoredState`].
    pub cluster_id: u64,
    /// Each module's revisions and rollout (see `versions`; a module
    /// without an entry is at revision 1). Added after `cluster_id`.
    pub versions: SharedMap<ModuleName, Versions>,
    /// Package versions that failed, and those quarantined. Added with
    /// `versions`.
    pub packages: Packages,
    /// Fleet rollouts (see `fleet`). Added after `packages`.
    pub fleet: FleetRollouts,
    /// Each live module's causal chain (see `why`). Added after `fleet`,
    /// with the events' causes.
    pub why: Why,
    /// Encoded size of the parts (kept by `apply`; not stored).
    size: StateSize,
    /// What the planner's scoped passes look at (kept by `apply`; not
    /// stored, and not part of the state's value: see `attention`).
    attention: attention::Attention,
}

/// [`ClusterState`] as stored: the same fields, in the same order, without
/// the size. The events are stored without their causes
/// ([`proto::record::StoredEvent`]), which follow at the end, one per event
/// (`causes`), so the encoding of a state without them is unchanged.
/// Fields added after the first stored format (`lease`, then
/// `cluster_id`, then `versions` and `packages`, then `fleet`, then
/// `causes` and `why`) are optional at the end: a
/// snapshot written before them has nothing more, and they decode to their
/// default (no lease terms, no cluster id recorded yet, every module at its
/// implicit revision 1, no package failures), as the compatibility fixture
/// shows (`scenarios::compat`).
struct StoredState {
    nodes: BTreeMap<NodeId, NodeRecord>,
    modules: SharedMap<ModuleName, ModuleRecord>,
    events: SharedVec<Event>,
    next_event: u64,
    placed: SharedMap<NodeId, SharedSet<ModuleName>>,
    last_index: u64,
    lease: LeaseTerms,
    cluster_id: u64,
    versions: SharedMap<ModuleName, Versions>,
    packages: Packages,
    fleet: FleetRollouts,
    causes: Vec<Option<u64>>,
    why: Why,
}

impl Serialize for ClusterState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Ring<'a>(&'a SharedVec<Event>);
        impl Serialize for Ring<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(proto::record::StoredEvent::of))
            }
        }
        struct Causes<'a>(&'a SharedVec<Event>);
        impl Serialize for Causes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|e| e.cause))
            }
        }
        let mut st = s.serialize_struct("ClusterState", 13)?;
        st.serialize_field("nodes", &self.nodes)?;
        st.serialize_field("modules", &self.modules)?;
        st.serialize_field("events", &Ring(&self.events))?;
        st.serialize_field("next_event", &self.next_event)?;
        st.serialize_field("placed", &self.placed)?;
        st.serialize_field("last_index", &self.last_index)?;
        st.serialize_field("lease", &self.lease)?;
        st.serialize_field("cluster_id", &self.cluster_id)?;
        st.serialize_field("versions", &self.versions)?;
        st.serialize_field("packages", &self.packages)?;
        st.serialize_field("fleet", &self.fleet)?;
        st.serialize_field("causes", &Causes(&self.events))?;
        st.serialize_field("why", &self.why)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClusterState, D::Error> {
        StoredState::deserialize(d).map(ClusterState::from)
    }
}

impl<'de> Deserialize<'de> for StoredState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoredState, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        const FIELDS: &[&str] = &[
            "nodes",
            "modules",
            "events",
            "next_event",
            "placed",
            "last_index",
            "lease",
            "cluster_id",
            "versions",
            "packages",
            "fleet",
            "causes",
            "why",
        ];
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = StoredState;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the cluster state's fields in order")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StoredState, A::Error> {
                let missing = |i: usize| A::Error::invalid_length(i, &"13 fields");
                // Read in the stored order: a struct literal's fields are
                // evaluated as written.
                Ok(StoredState {
                    nodes: seq.next_element()?.ok_or_else(|| missing(0))?,
                    modules: seq.next_element()?.ok_or_else(|| missing(1))?,
                    events: seq
                        .next_element::<VecDeque<proto::record::StoredEvent>>()?
                        .ok_or_else(|| missing(2))?
                        .into_iter()
                        .map(Event::from)
                        .collect(),
                    next_event: seq.next_element()?.ok_or_else(|| missing(3))?,
                    placed: seq.next_element()?.ok_or_else(|| missing(4))?,
                    last_index: seq.next_element()?.ok_or_else(|| missing(5))?,
                    // The input ends here in the first format.
                    lease: seq.next_element().ok().flatten().unwrap_or_default(),
                    // ... and here in the format with the lease terms.
                    cluster_id: seq.next_element().ok().flatten().unwrap_or_default(),
                    // ... and here in the format with the cluster id.
                    versions: seq.next_element().ok().flatten().unwrap_or_default(),
                    packages: seq.next_element().ok().flatten().unwrap_or_default(),
                    // ... and here in the format with the package versions.
                    fleet: seq.next_element().ok().flatten().unwrap_or_default(),
                    // ... and here in the format with the fleet rollouts.
                    causes: seq.next_element().ok().flatten().unwrap_or_default(),
                    why: seq.next_element().ok().flatten().unwrap_or_default(),
                })
            }
        }
        d.deserialize_struct("ClusterState", FIELDS, Fields)
    }
}

impl From<StoredState> for ClusterState {
    fn from(s: StoredState) -> ClusterState {
        let mut events = s.events;
        // One cause per event, or none at all (a state written before them).
        if s.causes.len() == events.len() {
            for (e, cause) in events.iter_mut().zip(s.causes) {
                e.cause = cause;
            }
        }
        // The encoding holds each spec twice (the record's and its current
        // revision's, as before they were shared): share them again.
        let mut versions = s.versions;
        for (name, m) in &s.modules {
            if let Some(r) = versions.get_mut(name).and_then(Versions::current_mut)
                && r.spec == m.spec
            {
                r.spec = m.spec.clone();
            }
        }
        let mut state = ClusterState {
            nodes: s.nodes,
            modules: s.modules,
            events,
            next_event: s.next_event,
            placed: s.placed,
            last_index: s.last_index,
            lease: s.lease,
            cluster_id: s.cluster_id,
            versions,
            packages: s.packages,
            fleet: s.fleet,
            why: s.why,
            size: StateSize::default(),
            attention: attention::Attention::default(),
        };
        state.size = StateSize::of(&state);
        state.attention = attention::Attention::of(&state);
        state
    }
}

/// The encoded size of a [`ClusterState`], by part, in bytes: each part
/// the sum of its entries' encoded sizes, so that `apply` keeps it by
/// measuring only the entries a transition touches. The `placed` index is
/// counted with the entries it indexes (a module's name once more, a
/// node's name and a set length), which bounds it from above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Module records with their revisions.
    pub modules: u64,
    pub nodes: u64,
    pub events: u64,
    /// Package failures and quarantines.
    pub packages: u64,
    /// Fleet rollouts.
    pub fleet: u64,
    /// The modules' causal chains and the nodes' last events (`why`).
    pub why: u64,
}

/// Bytes of the fixed part of an encoded state: ten length prefixes and
/// six u64 (two counters, the lease terms, the cluster id, the last fleet
/// rollout id; 9 bytes each at most).
const STATE_FIXED_BYTES: u64 = 16 * 9;

impl StateSize {
    /// Measures every entry of `state` (after decoding a snapshot).
    fn of(state: &ClusterState) -> StateSize {
        StateSize {
            modules: state
                .modules
                .iter()
                .map(|(name, m)| module_bytes(name, m, state.versions.get(name)))
                .sum(),
            nodes: state
                .nodes
                .iter()
                .map(|(name, n)| node_bytes(name, n))
                .sum(),
            events: state.events.iter().map(event_bytes).sum(),
            packages: packages_bytes(&state.packages),
            fleet: fleet_bytes(&state.fleet),
            why: state.why.bytes(),
        }
    }

    /// All parts together: an upper bound on the encoded state's size,
    /// within a few bytes per module and node.
    pub fn total(&self) -> u64 {
        self.modules
            + self.nodes
            + self.events
            + self.packages
            + self.fleet
            + self.why
            + STATE_FIXED_BYTES
    }
}

/// Encoded bytes of a module's entry, with its share of `placed` and its
/// revisions (when it has an entry).
pub fn module_bytes(name: &str, m: &ModuleRecord, v: Option<&Versions>) -> u64 {
    let revisions = v.map_or(0, |v| proto::encoded_len(&(name, v)));
    (proto::encoded_len(&(name, m)) + proto::encoded_len(name) + revisions) as u64
}

/// Encoded bytes of a node's entry, with its share of `placed` (its name
/// and a set length).
fn node_bytes(name: &str, n: &NodeRecord) -> u64 {
    (proto::encoded_len(&(name, n)) + proto::encoded_len(name) + 9) as u64
}

/// Encoded bytes of the package failures and quarantines beyond the empty
/// maps' length prefixes (counted in [`STATE_FIXED_BYTES`]).
fn packages_bytes(p: &Packages) -> u64 {
    if p.failures.is_empty() && p.quarantined.is_empty() {
        0
    } else {
        proto::encoded_len(p) as u64
    }
}

/// Encoded bytes of the fleet rollouts beyond the empty record (counted
/// in [`STATE_FIXED_BYTES`]).
fn fleet_bytes(f: &FleetRollouts) -> u64 {
    if f.rollouts.is_empty() && f.last_id == 0 {
        0
    } else {
        proto::encoded_len(f) as u64
    }
}

fn event_bytes(e: &Event) -> u64 {
    proto::encoded_len(e) as u64
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
    RecordClusterId(RecordClusterId),
    RegisterNodeFromOtherCluster(RegisterNodeFromOtherCluster),
    Update(Update),
    Rollback(Rollback),
    Revert(Revert),
    QuarantinePackage(QuarantinePackage),
    LiftQuarantine(LiftQuarantine),
    HoldQuarantined(HoldQuarantined),
    RecordPrestaged(RecordPrestaged),
    StartFleetRollout(StartFleetRollout),
    AdvanceFleetRollout(AdvanceFleetRollout),
    SetFleetRollout(SetFleetRollout),
    Undrain(Undrain),
    Reset(Reset),
    RemoveNode(RemoveNode),
    StopModule(StopModule),
}

impl Transition {
    /// The module and the node whose entries the transition may change
    /// (besides the events and the `placed` index): every transition
    /// changes at most the module or the node it names, which is what lets
    /// `apply` keep [`StateSize`] by measuring only those.
    fn touches(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Transition::Deploy(t) => (Some(&t.spec.name), None),
            Transition::Remove(t) => (Some(&t.module), None),
            Transition::Drain(t) => (None, Some(&t.node)),
            Transition::RegisterNode(t) => (None, Some(&t.node)),
            Transition::SetNodeHealth(t) => (None, Some(&t.node)),
            Transition::Place(t) => (Some(&t.module), None),
            Transition::PackageRetrieved(t) => (Some(&t.module), None),
            Transition::FailureDetected(t) => (Some(&t.module), None),
            Transition::RestoreOrdered(t) => (Some(&t.module), None),
            Transition::Healthy(t) => (Some(&t.module), None),
            Transition::InstallFailed(t) => (Some(&t.module), None),
            Transition::GiveUp(t) => (Some(&t.module), None),
            Transition::ReleasePrevious(t) => (Some(&t.module), None),
            Transition::AwaitNode(t) => (Some(&t.module), None),
            Transition::RecordLease(_) => (None, None),
            Transition::RecordClusterId(_) => (None, None),
            Transition::RegisterNodeFromOtherCluster(t) => (None, Some(&t.register.node)),
            Transition::Update(t) => (Some(&t.spec.name), None),
            Transition::Rollback(t) => (Some(&t.module), None),
            Transition::Revert(t) => (Some(&t.module), None),
            Transition::QuarantinePackage(_) | Transition::LiftQuarantine(_) => (None, None),
            Transition::HoldQuarantined(t) => (Some(&t.module), None),
            // Only an event: no module or node entry changes.
            Transition::RecordPrestaged(_) => (None, None),
            // The fleet rollouts only; an advance updates modules through
            // `apply_one`, which measures each.
            Transition::StartFleetRollout(_)
            | Transition::AdvanceFleetRollout(_)
            | Transition::SetFleetRollout(_) => (None, None),
            Transition::Undrain(t) => (None, Some(&t.node)),
            Transition::Reset(t) => (Some(&t.module), None),
            // The modules it unplaces are measured by its `apply`.
            Transition::RemoveNode(t) => (None, Some(&t.node)),
            Transition::StopModule(t) => (Some(&t.module), None),
        }
    }

    /// Whether the transition sets or lifts a package quarantine (which
    /// may concern any module).
    pub fn changes_quarantines(&self) -> bool {
        matches!(
            self,
            Transition::QuarantinePackage(_) | Transition::LiftQuarantine(_)
        )
    }

    /// Whether the transition may let a module waiting for its first
    /// placement find a node: it changes a node's record (registered,
    /// relabelled, health, drained, undrained, removed) or a quarantine.
    pub fn may_let_waiting_in(&self) -> bool {
        self.touches().1.is_some() || self.changes_quarantines()
    }

    /// Whether the transition may change the package failures or
    /// quarantines (whose size is then measured again).
    fn touches_packages(&self) -> bool {
        matches!(
            self,
            Transition::InstallFailed(_)
                | Transition::FailureDetected(_)
                | Transition::QuarantinePackage(_)
                | Transition::LiftQuarantine(_)
        )
    }

    /// Whether the transition may change the fleet rollouts.
    fn touches_fleet(&self) -> bool {
        matches!(
            self,
            Transition::StartFleetRollout(_)
                | Transition::AdvanceFleetRollout(_)
                | Transition::SetFleetRollout(_)
        )
    }

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
            Transition::RecordClusterId(t) => t.apply(state, index, at),
            Transition::RegisterNodeFromOtherCluster(t) => t.apply(state, index, at),
            Transition::Update(t) => t.apply(state, index, at),
            Transition::Rollback(t) => t.apply(state, index, at),
            Transition::Revert(t) => t.apply(state, index, at),
            Transition::QuarantinePackage(t) => t.apply(state, index, at),
            Transition::LiftQuarantine(t) => t.apply(state, index, at),
            Transition::HoldQuarantined(t) => t.apply(state, index, at),
            Transition::RecordPrestaged(t) => t.apply(state, index, at),
            Transition::StartFleetRollout(t) => t.apply(state, index, at),
            Transition::AdvanceFleetRollout(t) => t.apply(state, index, at),
            Transition::SetFleetRollout(t) => t.apply(state, index, at),
            Transition::Undrain(t) => t.apply(state, index, at),
            Transition::Reset(t) => t.apply(state, index, at),
            Transition::RemoveNode(t) => t.apply(state, index, at),
            Transition::StopModule(t) => t.apply(state, index, at),
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
            .map(|t| match self.apply_one(t, index, batch.at_ms) {
                Ok(()) => Outcome::Applied { epoch: index },
                Err(r) => Outcome::Rejected(r),
            })
            .collect();
        BatchResponse { outcomes }
    }

    /// Applies one transition, keeping [`StateSize`] (also for the
    /// transitions another one applies, as a fleet rollout's updates).
    fn apply_one(&mut self, t: &Transition, index: u64, at: u64) -> Result<(), Rejection> {
        let (module, node) = t.touches();
        let before = self.entry_bytes(module, node);
        let directed_before = module.map(|m| self.directed_nodes(m));
        let outcome = t.apply(self, index, at);
        let after = self.entry_bytes(module, node);
        // Exact (the property test checks it); saturating so that a
        // miscount could never stop an apply.
        self.size.modules = self.size.modules.saturating_sub(before.0) + after.0;
        self.size.nodes = self.size.nodes.saturating_sub(before.1) + after.1;
        if t.touches_packages() {
            self.size.packages = packages_bytes(&self.packages);
        }
        if t.touches_fleet() {
            self.size.fleet = fleet_bytes(&self.fleet);
        }
        if outcome.is_ok() {
            if t.may_let_waiting_in() {
                self.attention.placeable = index;
            }
            if t.changes_quarantines() {
                self.attention.wide = index;
            }
            if t.changes_quarantines() || matches!(t, Transition::RecordClusterId(_)) {
                self.mark_all_directed(index);
            }
            // The nodes the module may have left, and the node named (its
            // record, or the modules a node removal unplaced: those are
            // touched, which marks the nodes they are on now).
            let left = directed_before.into_iter().flatten().flatten();
            self.mark_directed(left.chain(node.map(str::to_string)), index);
            // A rejected transition changed nothing (so a plan rejected
            // again and again does not bring its module back each pass).
            if let Some(module) = module {
                self.touch(module, index);
            }
        }
        outcome
    }

    /// A copy to encode (a snapshot) while apply goes on: the stored
    /// parts, without the planner's index. Cheap: the modules, their
    /// revisions and causal chains, the `placed` index and the events are
    /// shared ([`SharedMap`], [`SharedVec`]); the nodes, the packages and
    /// the fleet rollouts are copied.
    pub fn frozen(&self) -> ClusterState {
        ClusterState {
            nodes: self.nodes.clone(),
            modules: self.modules.clone(),
            events: self.events.clone(),
            next_event: self.next_event,
            placed: self.placed.clone(),
            last_index: self.last_index,
            lease: self.lease,
            cluster_id: self.cluster_id,
            versions: self.versions.clone(),
            packages: self.packages.clone(),
            fleet: self.fleet.clone(),
            why: self.why.clone(),
            size: self.size,
            attention: attention::Attention::left_out(),
        }
    }

    /// Encoded size of the state, by part (an upper bound within a few
    /// bytes per entry; see [`StateSize`]). Kept by `apply`: free to ask.
    pub fn size(&self) -> StateSize {
        self.size
    }

    /// Encoded bytes of the entries of `module` and `node` (0 when absent).
    fn entry_bytes(&self, module: Option<&str>, node: Option<&str>) -> (u64, u64) {
        let m = module
            .and_then(|name| self.modules.get_key_value(name))
            .map_or(0, |(name, m)| {
                module_bytes(name, m, self.versions.get(name))
            });
        let n = node
            .and_then(|name| self.nodes.get_key_value(name))
            .map_or(0, |(name, n)| node_bytes(name, n));
        (m, n)
    }

    /// Records a decision, dropping the oldest beyond [`EVENTS_KEPT`]
    /// events or [`EVENTS_MAX_BYTES`] bytes. Its cause is the previous
    /// event of its module (or of its node): see `why`.
    fn event(
        &mut self,
        log_index: u64,
        at_ms: u64,
        kind: EventKind,
        module: Option<&str>,
        node: Option<&str>,
        detail: &[(&str, String)],
    ) {
        self.event_citing(log_index, at_ms, kind, module, node, detail, None);
    }

    /// [`ClusterState::event`], caused by the last event of node `cites`
    /// when it has one (a module moved off that node).
    #[allow(clippy::too_many_arguments)]
    fn event_citing(
        &mut self,
        log_index: u64,
        at_ms: u64,
        kind: EventKind,
        module: Option<&str>,
        node: Option<&str>,
        detail: &[(&str, String)],
        cites: Option<&str>,
    ) {
        self.next_event += 1;
        let event = Event {
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
            cause: self.why.cause(kind, module, node, cites),
        };
        let delta = self.why.record(&event, cites);
        self.size.why = self.size.why.saturating_add_signed(delta);
        self.size.events += event_bytes(&event);
        self.events.push_back(event);
        // The newest event is always kept, whatever its size.
        while self.events.len() > EVENTS_KEPT
            || (self.size.events > EVENTS_MAX_BYTES && self.events.len() > 1)
        {
            if let Some(old) = self.events.pop_front() {
                self.size.events = self.size.events.saturating_sub(event_bytes(&old));
            }
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
    ///
    /// The `placed` index gives each node's count; only the failed ones are
    /// looked up, and every placed module that is not running is in the
    /// planner's `unsettled` set, so the cost is the number of nodes plus
    /// the unsettled modules, not the number of modules. A state without
    /// the planner's index ([`ClusterState::frozen`]) counts the long way.
    pub fn load_by_node(&self) -> BTreeMap<&str, usize> {
        if !self.attention.is_built() {
            return self.load_by_node_walk();
        }
        let mut load: BTreeMap<&str, usize> = self.nodes.keys().map(|n| (n.as_str(), 0)).collect();
        for (node, set) in self.placed.iter() {
            load.insert(node.as_str(), set.len());
        }
        for name in self.attention_unsettled() {
            let Some(m) = self.modules.get(name) else {
                continue;
            };
            if m.state != ModuleState::Failed {
                continue;
            }
            if let Some(p) = &m.placement
                && self
                    .placed
                    .get(&p.node)
                    .is_some_and(|set| set.contains(name))
                && let Some(n) = load.get_mut(p.node.as_str())
            {
                *n -= 1;
            }
        }
        load
    }

    /// [`ClusterState::load_by_node`] by looking at every module (what a
    /// copy without the planner's index, [`ClusterState::frozen`], does).
    pub fn load_by_node_walk(&self) -> BTreeMap<&str, usize> {
        // One walk over the records in order, counted by node name in a
        // hash map: no lookup of a module by name.
        let mut counted: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for m in self.modules.values() {
            if let Some(p) = &m.placement
                && m.state != ModuleState::Failed
            {
                *counted.entry(p.node.as_str()).or_default() += 1;
            }
        }
        let mut load: BTreeMap<&str, usize> = self.nodes.keys().map(|n| (n.as_str(), 0)).collect();
        load.extend(counted);
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
impl ClusterState {
    /// Applies `t` alone at the next log index, stamped with it (tests).
    pub(crate) fn apply_next(&mut self, t: Transition) {
        let index = self.last_index + 1;
        self.apply(
            index,
            &Batch {
                at_ms: index,
                transitions: vec![t],
            },
        );
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

    /// `spec`, at-least-one for the odd-numbered modules of the property
    /// tests (`m1`, `m3`: their rollouts to another node keep the old copy).
    fn prop_spec(m: usize) -> ModuleSpec {
        let mut spec = spec(&format!("m{m}"));
        if m % 2 == 1 {
            spec.fencing = proto::spec::Fencing::AtLeastOne;
        }
        spec
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deploy(usize),
        Remove(usize),
        Place(usize, usize, bool),
        Health(usize, u8),
        Update(usize, u8),
        Rollback(usize),
        Failed(usize),
        Retrieved(usize),
        Restore(usize),
        Healthy(usize),
        Crashed(usize),
        Release(usize),
        Stop(usize),
        RemoveNode(usize),
        Register(usize),
        Quarantine(u8),
        Lift(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize).prop_map(Op::Deploy),
            (0..4usize).prop_map(Op::Remove),
            (0..4usize, 0..3usize, any::<bool>()).prop_map(|(m, n, f)| Op::Place(m, n, f)),
            (0..3usize, 0..3u8).prop_map(|(n, h)| Op::Health(n, h)),
            (0..4usize, 0..3u8).prop_map(|(m, v)| Op::Update(m, v)),
            (0..4usize).prop_map(Op::Rollback),
            (0..4usize).prop_map(Op::Failed),
            (0..4usize).prop_map(Op::Retrieved),
            (0..4usize).prop_map(Op::Restore),
            (0..4usize).prop_map(Op::Healthy),
            (0..4usize).prop_map(Op::Crashed),
            (0..4usize).prop_map(Op::Release),
            (0..4usize).prop_map(Op::Stop),
            (0..3usize).prop_map(Op::RemoveNode),
            (0..3usize).prop_map(Op::Register),
            (0..3u8).prop_map(Op::Quarantine),
            (0..3u8).prop_map(Op::Lift),
        ]
    }

    const PROP_NODES: [&str; 3] = ["a", "b", "c"];

    /// The transition `o` stands for in state `s` (epochs and sequence
    /// numbers as the planner would read them from `s`).
    fn transition(s: &ClusterState, o: Op) -> Transition {
        let nodes = PROP_NODES;
        let name = |m: usize| format!("m{m}");
        let placement = |m: usize| s.modules.get(&name(m)).and_then(|r| r.placement.clone());
        let epoch = |m: usize| placement(m).map_or(0, |p| p.epoch);
        let package = |v: u8| proto::manifest::PackageRef::new("p", format!("1.0.{v}"));
        match o {
            Op::Deploy(m) => Transition::Deploy(Deploy { spec: prop_spec(m) }),
            Op::Remove(m) => Transition::Remove(Remove { module: name(m) }),
            Op::Place(m, n, failover) => {
                let cause = match (failover, m % 2) {
                    (true, _) => PlaceCause::Failover { reason: "x".into() },
                    (false, 1) if placement(m).is_some() => PlaceCause::Rollout { revision: 2 },
                    _ => PlaceCause::Initial,
                };
                Transition::Place(Place {
                    module: name(m),
                    node: nodes[n].into(),
                    expect_epoch: placement(m).map(|p| p.epoch),
                    cause,
                })
            }
            Op::Health(n, h) => Transition::SetNodeHealth(SetNodeHealth {
                node: nodes[n].into(),
                health: [NodeHealth::Ready, NodeHealth::Suspect, NodeHealth::Down][h as usize],
                detail: String::new(),
            }),
            Op::Update(m, v) => {
                let mut spec = prop_spec(m);
                spec.package.version = format!("1.0.{v}");
                Transition::Update(Update { spec })
            }
            Op::Rollback(m) => Transition::Rollback(Rollback {
                module: name(m),
                revision: None,
            }),
            Op::Failed(m) => Transition::InstallFailed(InstallFailed {
                module: name(m),
                epoch: epoch(m),
                stage: FailStage::Install,
                reason: "x".into(),
            }),
            Op::Retrieved(m) => {
                let version = s
                    .modules
                    .get(&name(m))
                    .map_or("1.0.0".to_string(), |r| r.spec.package.version.clone());
                Transition::PackageRetrieved(PackageRetrieved {
                    module: name(m),
                    epoch: epoch(m),
                    package: crate::scenarios::package_of(&proto::manifest::PackageRef::new(
                        "p", version,
                    )),
                })
            }
            Op::Restore(m) => Transition::RestoreOrdered(RestoreOrdered {
                module: name(m),
                epoch: epoch(m),
                seq: s.modules.get(&name(m)).map_or(0, |r| r.restore_seq) + 1,
            }),
            Op::Healthy(m) => Transition::Healthy(Healthy {
                module: name(m),
                epoch: epoch(m),
            }),
            Op::Crashed(m) => Transition::FailureDetected(FailureDetected {
                module: name(m),
                epoch: epoch(m),
                status: proto::heartbeat::ModuleStatus::Failed,
            }),
            Op::Release(m) => Transition::ReleasePrevious(ReleasePrevious {
                module: name(m),
                epoch: epoch(m),
            }),
            Op::Stop(m) => Transition::StopModule(StopModule { module: name(m) }),
            Op::RemoveNode(n) => Transition::RemoveNode(RemoveNode {
                node: nodes[n].into(),
            }),
            Op::Register(n) => Transition::RegisterNode(RegisterNode {
                node: nodes[n].into(),
                addr: format!("{}:1", nodes[n]),
                labels: BTreeMap::new(),
            }),
            Op::Quarantine(v) => Transition::QuarantinePackage(QuarantinePackage {
                package: package(v),
                nodes: vec!["a".into()],
                reason: "x".into(),
            }),
            Op::Lift(v) => Transition::LiftQuarantine(LiftQuarantine {
                package: package(v),
            }),
        }
    }

    fn apply_next(s: &mut ClusterState, t: Transition) {
        s.apply_next(t);
    }

    /// The kept events are capped by bytes as well as by count: events
    /// with a 100 KiB detail push the oldest out once they add up to
    /// EVENTS_MAX_BYTES, long before EVENTS_KEPT; a snapshot decodes to
    /// the same size.
    #[test]
    fn events_are_capped_by_bytes_oldest_first() {
        let mut s = ClusterState::default();
        let detail = "d".repeat(100 << 10);
        apply_next(
            &mut s,
            Transition::RegisterNode(RegisterNode {
                node: "a".into(),
                addr: "a:1".into(),
                labels: BTreeMap::new(),
            }),
        );
        let per_event = 100 << 10;
        let n = (EVENTS_MAX_BYTES / per_event) as usize + 50;
        for i in 0..n {
            let health = [NodeHealth::Suspect, NodeHealth::Ready][i % 2];
            apply_next(
                &mut s,
                Transition::SetNodeHealth(SetNodeHealth {
                    node: "a".into(),
                    health,
                    detail: detail.clone(),
                }),
            );
        }
        assert!(
            s.size().events <= EVENTS_MAX_BYTES,
            "{} bytes kept",
            s.size().events
        );
        let encoded: u64 = s.events.iter().map(|e| proto::encoded_len(e) as u64).sum();
        assert_eq!(s.size().events, encoded);
        assert!(
            s.events.len() < n && s.events.len() < EVENTS_KEPT,
            "{} events kept",
            s.events.len()
        );
        assert!(
            s.size().events > EVENTS_MAX_BYTES - 2 * per_event,
            "dropped more than needed"
        );
        // The oldest went first: the newest is the last one applied.
        assert_eq!(s.events.back().map(|e| e.index), Some(s.next_event));
        assert_eq!(
            s.events.front().map(|e| e.index),
            Some(s.next_event - s.events.len() as u64 + 1)
        );
        let decoded: ClusterState =
            proto::decode(&proto::encode(&s).expect("encode")).expect("decode");
        assert_eq!(decoded.size(), s.size());
        assert_eq!(decoded, s);
    }

    /// A frozen copy, taken for a snapshot, encodes as the state did when
    /// it was taken, whatever is applied to the state after.
    #[test]
    fn a_frozen_copy_keeps_what_it_saw() {
        let mut s = ClusterState::default();
        for m in ["a", "b"] {
            apply_next(&mut s, Transition::Deploy(Deploy { spec: spec(m) }));
        }
        let frozen = s.frozen();
        let bytes = proto::encode(&s).expect("encode");
        apply_next(&mut s, Transition::Deploy(Deploy { spec: spec("c") }));
        apply_next(&mut s, Transition::Remove(Remove { module: "a".into() }));
        assert_eq!(proto::encode(&frozen).expect("encode"), bytes);
        assert_eq!(frozen.modules.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.modules.keys().collect::<Vec<_>>(), ["b", "c"]);
    }

    /// A frozen copy shares the state's large parts instead of copying
    /// them (what makes it cheap enough to take while apply waits).
    #[test]
    fn a_frozen_copy_shares_the_large_parts() {
        let mut s = ClusterState::default();
        for i in 0..1000 {
            let spec = spec(&format!("module-{i:04}"));
            apply_next(&mut s, Transition::Deploy(Deploy { spec }));
        }
        let frozen = s.frozen();
        assert!(frozen.modules.ptr_eq(&s.modules));
        assert!(frozen.versions.ptr_eq(&s.versions));
        assert!(frozen.why.modules.ptr_eq(&s.why.modules));
        assert!(frozen.events.ptr_eq(&s.events));
        assert_eq!(frozen.events.len(), 1000);
    }

    /// A module's spec is held once, shared by its record and its current
    /// revision: after a deploy, after an update that becomes current, and
    /// after a round trip through the encoding (a snapshot).
    #[test]
    fn the_record_and_its_current_revision_share_one_spec() {
        let shared = |s: &ClusterState, m: &str| {
            let v = &s.versions[m];
            let current = v.get(v.revision).expect("current revision kept");
            std::sync::Arc::ptr_eq(&s.modules[m].spec, &current.spec)
        };
        let mut s = ClusterState::default();
        apply_next(&mut s, Transition::Deploy(Deploy { spec: spec("a") }));
        assert!(shared(&s, "a"), "after the deploy");
        let mut next = spec("a");
        next.package.version = "2.0.0".parse().expect("version");
        apply_next(&mut s, Transition::Update(Update { spec: next.clone() }));
        assert_eq!(s.versions["a"].revision, 2);
        assert_eq!(*s.modules["a"].spec, next);
        assert!(shared(&s, "a"), "after the update");
        let decoded: ClusterState =
            proto::decode(&proto::encode(&s).expect("encode")).expect("decode");
        assert_eq!(decoded, s);
        assert!(shared(&decoded, "a"), "after decoding");
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
                let t = transition(&s, o);
                apply(&mut s, t);
                let mut derived: SharedMap<NodeId, SharedSet<ModuleName>> = SharedMap::new();
                for (name, m) in &s.modules {
                    if let Some(p) = &m.placement {
                        derived.entry(p.node.clone()).or_default().insert(name.clone());
                    }
                }
                prop_assert_eq!(&s.placed, &derived);
                // The size kept by apply equals the size measured afresh.
                prop_assert_eq!(s.size(), StateSize::of(&s));
                // So does the planner's index.
                prop_assert!(s.attention_is_exact());
                // The node loads from it equal those counted module by module.
                prop_assert_eq!(s.load_by_node(), s.load_by_node_walk());
                prop_assert!(s.size().total() + 1 >= proto::encode(&s).expect("encode").len() as u64);
            }
        }

        /// A node's directives change only at an index the state marks for
        /// that node (`directives_changed_at`): the leader's reuse of a
        /// node's directives until then never hides one. Checked for every
        /// node, with a module table holding copies placed there (some)
        /// and copies placed elsewhere (some), whatever sequence of
        /// transitions is applied; the epoch of a `Stop` is the state's
        /// last index when computed, and is left out of the comparison.
        #[test]
        fn directives_change_only_where_marked(ops in proptest::collection::vec(op(), 1..80)) {
            use proto::heartbeat::{Directive, ModuleTable, TableEntry};
            let mut s = ClusterState::default();
            for n in 0..PROP_NODES.len() {
                let t = transition(&s, Op::Register(n));
                apply_next(&mut s, t);
            }
            apply_next(&mut s, Transition::RecordClusterId(RecordClusterId {}));
            // What an agent on `node` may hold: the copies placed there,
            // every other one at the epoch it has, one old stale copy.
            let table = |s: &ClusterState, node: &str| {
                let modules = (0..4)
                    .filter_map(|i| {
                        let name = format!("m{i}");
                        let p = s.modules.get(&name).and_then(|m| m.placement.as_ref());
                        let here = p.is_some_and(|p| p.node == node || p.previous.as_deref() == Some(node));
                        let epoch = match p {
                            Some(p) if here && i % 2 == 0 => p.epoch,
                            Some(_) if here => return None,
                            _ if i == 3 => 1,
                            _ => return None,
                        };
                        Some(TableEntry { module: name, epoch, restore_seq: 0 })
                    })
                    .collect();
                ModuleTable { addr: format!("{node}:1"), labels: BTreeMap::new(), modules, cluster: s.cluster_id }
            };
            let stable = |d: Vec<Directive>| -> Vec<Directive> {
                d.into_iter()
                    .map(|d| match d {
                        Directive::Stop(mut stop) => {
                            stop.epoch = 0;
                            Directive::Stop(stop)
                        }
                        other => other,
                    })
                    .collect()
            };
            for o in ops {
                let t = transition(&s, o);
                let tables: Vec<ModuleTable> = PROP_NODES.iter().map(|n| table(&s, n)).collect();
                let before: Vec<Vec<Directive>> = PROP_NODES
                    .iter()
                    .zip(&tables)
                    .map(|(n, t)| stable(crate::directives::directives_for(&s, n, t, "d")))
                    .collect();
                let previous = s.last_index;
                apply_next(&mut s, t.clone());
                for ((n, t2), d) in PROP_NODES.iter().zip(&tables).zip(&before) {
                    if s.directives_changed_at(n) <= previous {
                        let after = stable(crate::directives::directives_for(&s, n, t2, "d"));
                        prop_assert_eq!(&after, d, "node {} after {:?}", n, t);
                    }
                }
                // A decoded state (a snapshot installed) marks everything
                // at its own index.
                let decoded: ClusterState = proto::decode(&proto::encode(&s).expect("encode")).expect("decode");
                prop_assert_eq!(decoded.directives_changed_at("a"), s.last_index);
            }
        }
    }
}
