//! The JSON of the admin API: views of the replicated state and the answer
//! of every endpoint. The field names are the outside contract
//! (docs/reference.md); the supervisor fills them in (`supervisor::views`),
//! supctl and the tests read them back.

use std::collections::BTreeMap;

use proto::manifest::PackageRef;
use serde::{Deserialize, Serialize};

/// `GET /v1/modules/{name}` (and each element of `GET /v1/modules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleView {
    pub name: String,
    pub node: Option<String>,
    pub epoch: Option<u64>,
    pub state: String,
    pub restore_attempts: u32,
    pub failovers: u32,
    #[schema(value_type = PackageRefSchema)]
    pub package: PackageRef,
    /// `at-most-one` or `at-least-one`.
    #[schema(value_type = String)]
    pub fencing: proto::spec::Fencing,
    /// Why the module failed, or what went wrong last.
    pub reason: Option<String>,
    /// Nodes that failed the module in the current failure episode.
    pub tried_nodes: Vec<String>,
    /// Why the module is where it is: initial, failover, drain.
    pub placed_by: Option<String>,
    /// The package version installed for the current placement, once
    /// retrieved from depmgr.
    pub installed_version: Option<String>,
    pub updated_ms: u64,
    /// The current revision (1: as deployed; each update adds one).
    #[serde(default = "first_revision")]
    pub revision: u32,
    /// The latest rollout, while it runs and after it ended; `null` when
    /// the module never moved from its first revision.
    #[serde(default)]
    pub rollout: Option<RolloutView>,
}

fn first_revision() -> u32 {
    1
}

/// A module's latest rollout, in [`ModuleView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutView {
    /// The revision it moved from (for `reverted`: the one that failed).
    pub from: u32,
    /// The revision it moved to (for `reverted`: the good one it went back
    /// to).
    pub to: u32,
    /// in_progress | completed | reverted
    pub state: String,
    /// Why it was reverted.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_ms: u64,
}

/// Each element of `GET /v1/modules/{name}/history`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionView {
    pub revision: u32,
    #[schema(value_type = PackageRefSchema)]
    pub package: PackageRef,
    /// When it last became the current revision (ms since the epoch).
    pub at_ms: u64,
    /// active | superseded (an update replaced it) | reverted (an operator
    /// rolled back from it) | failed (its rollout failed and was reverted)
    pub outcome: String,
    /// It ran healthy at least once.
    pub good: bool,
    /// Restores ordered while it was current.
    pub restores: u32,
    /// Failovers while it was current.
    pub failovers: u32,
    /// The whole spec of that revision.
    #[schema(value_type = Object)]
    pub spec: proto::spec::ModuleSpec,
}

/// `PUT /v1/modules/{name}` and `POST /v1/modules/{name}/rollback` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Updated {
    pub name: String,
    /// Log index of the update (the rollout's placement gets a later epoch).
    pub epoch: u64,
    /// The revision the module moves to.
    pub revision: u32,
}

/// `POST /v1/modules/{name}/rollback` body (`{}`: the previous revision).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub revision: Option<u32>,
}

/// Each element of `GET /v1/packages/quarantined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineView {
    #[schema(value_type = PackageRefSchema)]
    pub package: PackageRef,
    pub since_ms: u64,
    /// The nodes it failed on.
    pub nodes: Vec<String>,
    pub reason: String,
    /// Modules whose current spec uses it.
    pub modules: Vec<String>,
}

/// `DELETE /v1/packages/quarantined/{name}/{version}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineLifted {
    #[schema(value_type = PackageRefSchema)]
    pub package: PackageRef,
    pub lifted: bool,
    /// Log index of the lift.
    pub index: u64,
}

/// `POST /v1/rollouts` body: roll `package`@`version` out to every module
/// using `package` at another version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    pub package: String,
    pub version: String,
    /// Modules updated at a time (default 1, at least 1).
    #[serde(default = "one")]
    pub max_parallel: u32,
    /// Failed modules tolerated before the rollout pauses (default 0).
    #[serde(default)]
    pub max_failures: u32,
}

fn one() -> u32 {
    1
}

/// A module of a fleet rollout, with why it failed or was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetModuleView {
    pub module: String,
    /// The revision it was updated to (active modules).
    #[serde(default)]
    pub revision: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/rollouts/{id}` (each element of `GET /v1/rollouts`, and the
/// answer of `POST /v1/rollouts` and its pause, resume, cancel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetRolloutView {
    pub id: u64,
    #[schema(value_type = PackageRefSchema)]
    pub package: PackageRef,
    /// running | paused | completed | cancelled
    pub state: String,
    /// Why it paused or was cancelled.
    pub reason: Option<String>,
    pub max_parallel: u32,
    pub max_failures: u32,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Not started yet, in order.
    pub pending: Vec<String>,
    /// Updated, health gate still open.
    pub active: Vec<FleetModuleView>,
    /// Updated, the new revision ran healthy.
    pub completed: Vec<String>,
    /// Reverted, refused, or failed.
    pub failed: Vec<FleetModuleView>,
    /// Removed, stopped, or already at the version.
    pub skipped: Vec<FleetModuleView>,
}

impl FleetRolloutView {
    /// No module left to start or to wait for, or cancelled.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "cancelled")
    }
}

/// Each element of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: String,
    pub addr: String,
    /// ready | suspect | down | draining
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub modules: Vec<String>,
    /// How long the lease the leader last granted this node's agent has
    /// left (ms), as the leader sees it: at 0 the agent stops its
    /// `at-most-one` modules. Null when the answer did not come from the
    /// leader, or the leader has not heard the node in its term.
    #[serde(default)]
    pub lease_left_ms: Option<u64>,
}

/// Each element of `GET /v1/events`: one recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub index: u64,
    pub log_index: u64,
    pub at_ms: u64,
    pub kind: String,
    pub module: Option<String>,
    pub node: Option<String>,
    pub detail: BTreeMap<String, String>,
    /// The index of the event that led to this one (null: an operator's
    /// request that starts a chain, or an event recorded before causes
    /// were).
    #[serde(default)]
    pub cause: Option<u64>,
}

/// Each element of `GET /v1/modules/{name}/why`: an event of the module's
/// causal chain (newest first), with its cause, and what it means in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhyStep {
    #[serde(flatten)]
    pub event: EventView,
    /// The event in words.
    pub text: String,
}

/// The data of an `event: gap` of `GET /v1/events/stream`: the events
/// `after + 1 ..= first_kept - 1` were dropped from the replicated state
/// (it keeps the newest 10,000) before this client read them; the stream
/// goes on from `first_kept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventGap {
    /// The client's position: the last event index it had.
    pub after: u64,
    /// The oldest event the replica still keeps.
    pub first_kept: u64,
    /// How many event indices were skipped (before any filter).
    pub missed: u64,
}

/// A member of the Raft cluster, in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// `GET /v1/cluster`, answered by the replica asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: u64,
    pub members: Vec<MemberView>,
    /// The replica that answered.
    pub id: u64,
    /// The leader's address, when known.
    pub leader_addr: Option<String>,
}

/// Each element of `GET /v1/cluster/replicas`: a member as its own
/// `/ready` answered the replica asked (within a second).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaView {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// It answered `/ready` with 200.
    pub ready: bool,
    /// `Leader`, `Follower`, `Candidate`, `Learner`; null when it did not
    /// answer.
    pub state: Option<String>,
    pub term: Option<u64>,
    pub applied: Option<u64>,
    /// Why it is not ready, or why it did not answer.
    pub reason: Option<String>,
}

/// `POST /v1/modules` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployed {
    pub name: String,
    pub epoch: u64,
}

/// `POST /v1/cluster/members` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub id: u64,
    pub addr: String,
}

/// `POST /v1/cluster/members` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberAdded {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// `DELETE /v1/cluster/members/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRemoved {
    pub removed: u64,
}

/// `POST /v1/nodes/{id}/drain` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drained {
    pub node: String,
    /// Always `draining`.
    pub status: String,
    /// Log index of the drain.
    pub index: u64,
}

/// `DELETE /v1/modules/{name}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Removed {
    pub name: String,
    pub removed: bool,
    /// Log index of the removal.
    pub index: u64,
    /// `removed`: gone at once (no copy could run); `stopped`: the module
    /// shows `stopped` until its copy on `waiting_for` is known stopped,
    /// then disappears.
    #[serde(default = "removed_state")]
    pub state: String,
    /// The nodes whose copy is being stopped (empty when `removed`).
    #[serde(default)]
    pub waiting_for: Vec<String>,
}

fn removed_state() -> String {
    "removed".to_string()
}

/// `POST /v1/nodes/{id}/undrain` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Undrained {
    pub node: String,
    /// The node's status now (`ready`, or `suspect`/`down` when it is not
    /// heard).
    pub status: String,
    /// Log index of the undrain.
    pub index: u64,
}

/// `DELETE /v1/nodes/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRemoved {
    pub node: String,
    pub removed: bool,
    /// Log index of the removal.
    pub index: u64,
    /// Modules that were placed on the node and wait to be placed again.
    pub unplaced: Vec<String>,
}

/// `POST /v1/modules/{name}/reset` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reset {
    pub name: String,
    /// The module's state now (`pending`: it is placed again).
    pub state: String,
    /// Log index of the reset.
    pub index: u64,
}

impl EventView {
    /// The event's kind, typed; `None` for a kind this client does not know
    /// (a newer supervisor may record kinds added since: `kind` stays a
    /// string on the wire so that old clients keep reading new events).
    pub fn event_kind(&self) -> Option<proto::record::EventKind> {
        self.kind.parse().ok()
    }

    /// The event in words ([`proto::record::explain`]); a kind this client
    /// does not know is named with its module and node.
    pub fn explain(&self) -> String {
        match self.event_kind() {
            Some(kind) => proto::record::explain(
                kind,
                self.module.as_deref(),
                self.node.as_deref(),
                &self.detail,
            ),
            None => {
                let mut s = self.kind.replace('_', " ");
                if let Some(m) = &self.module {
                    s = format!("{m}: {s}");
                }
                if let Some(n) = &self.node {
                    s = format!("{s} on {n}");
                }
                s
            }
        }
    }
}

impl ModuleView {
    /// The module's state, typed; `None` for a state this client does not
    /// know.
    pub fn module_state(&self) -> Option<proto::record::ModuleState> {
        serde_json::from_value(serde_json::Value::String(self.state.clone())).ok()
    }
}

/// A package version (`PackageRef`), as the JSON shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PackageRefSchema {
    name: String,
    version: String,
}

/// The body of `POST /v1/plan`: an action to predict, committed nowhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanRequest {
    /// `POST /v1/nodes/{node}/drain`.
    Drain { node: String },
    /// The node's agent dies now (`kill -9`, the host lost).
    Lose { node: String },
    /// `POST /v1/modules` with this spec.
    Deploy {
        #[schema(value_type = Object)]
        spec: proto::spec::ModuleSpec,
    },
    /// `PUT /v1/modules/{name}` with this spec.
    Update {
        #[schema(value_type = Object)]
        spec: proto::spec::ModuleSpec,
    },
}

/// The answer of `POST /v1/plan`: what the planner would decide, run on a
/// copy of the state (nothing is committed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    /// The action, as asked (`drain`, `lose`, `deploy`, `update`).
    pub action: String,
    /// Modules that would move (or be placed), by name.
    pub moves: Vec<PlannedMove>,
    /// Modules that would wait for a node (none eligible and ready).
    pub waiting: Vec<PlannedWait>,
    /// Modules that would fail for good.
    pub failed: Vec<PlannedWait>,
    /// The decisions the cluster would record, in order, in words.
    pub transitions: Vec<PlannedStep>,
    /// The assumptions the prediction rests on.
    pub assumptions: Vec<String>,
}

/// One module's move in a [`PlanView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedMove {
    pub module: String,
    /// Its node now (null: not placed).
    pub from: Option<String>,
    pub to: String,
    /// `initial`, `failover`, `node_lost`, `drain`, `rollout`.
    pub cause: String,
    /// `at-most-one` or `at-least-one`.
    pub fencing: String,
    /// The module is down at least this long (ms), by the cluster's own
    /// timing, before its install on `to` (which adds its own time); 0 when
    /// it need not stop.
    pub down_ms_at_least: u64,
    /// What stops and for how long, in words.
    pub down: String,
}

/// A module that would wait or fail, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedWait {
    pub module: String,
    pub reason: String,
}

/// One decision in a [`PlanView`]: the event it would record, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedStep {
    pub kind: String,
    pub module: Option<String>,
    pub node: Option<String>,
    pub text: String,
}
