//! JSON views of the replicated state, as the admin API answers them (the
//! field names are the outside contract; supctl reads them back).

use std::collections::BTreeMap;

use proto::manifest::PackageRef;
use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Event, ModuleRecord, NodeHealth, NodeRecord, PlaceCause};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleView {
    pub name: String,
    pub node: Option<String>,
    pub epoch: Option<u64>,
    pub state: String,
    pub restore_attempts: u32,
    pub failovers: u32,
    pub package: PackageRef,
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
}

impl ModuleView {
    pub fn of(name: &str, m: &ModuleRecord) -> ModuleView {
        ModuleView {
            name: name.to_string(),
            node: m.placement.as_ref().map(|p| p.node.clone()),
            epoch: m.placement.as_ref().map(|p| p.epoch),
            state: m.state.as_str().to_string(),
            restore_attempts: m.restore_attempts,
            failovers: m.failovers,
            package: m.spec.package.clone(),
            fencing: m.spec.fencing,
            reason: m.reason.clone(),
            tried_nodes: m.tried_nodes.clone(),
            placed_by: m.placement.as_ref().map(|p| {
                match &p.cause {
                    PlaceCause::Initial => "initial",
                    PlaceCause::Failover { .. } | PlaceCause::NodeLost { .. } => "failover",
                    PlaceCause::Drain => "drain",
                }
                .to_string()
            }),
            installed_version: m.package.as_ref().map(|p| p.manifest.version.clone()),
            updated_ms: m.updated_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub addr: String,
    /// ready | suspect | down | draining
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub modules: Vec<String>,
}

impl NodeView {
    pub fn of(state: &ClusterState, id: &str, n: &NodeRecord) -> NodeView {
        let status = match (n.draining, n.health) {
            (true, NodeHealth::Ready) => "draining",
            (_, NodeHealth::Ready) => "ready",
            (_, NodeHealth::Suspect) => "suspect",
            (_, NodeHealth::Down) => "down",
        };
        NodeView {
            id: id.to_string(),
            addr: n.addr.clone(),
            status: status.to_string(),
            labels: n.labels.clone(),
            modules: state.modules_on(id).map(|(name, _)| name.clone()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub index: u64,
    pub log_index: u64,
    pub at_ms: u64,
    pub kind: String,
    pub module: Option<String>,
    pub node: Option<String>,
    pub detail: BTreeMap<String, String>,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            index: e.index,
            log_index: e.log_index,
            at_ms: e.at_ms,
            kind: e.kind.to_string(),
            module: e.module.clone(),
            node: e.node.clone(),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// `POST /v1/modules` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub name: String,
    pub epoch: u64,
}

/// `POST /v1/cluster/members` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub id: u64,
    pub addr: String,
}
