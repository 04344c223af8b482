//! The cluster's identity: an id chosen once, by the first leader's first
//! planning pass ([`RecordClusterId`]), and kept for the cluster's life.
//!
//! Epochs are log indexes, so they only compare within one cluster; a
//! cluster re-created from scratch starts its log at 1 again. The leader
//! names its cluster in every accepted heartbeat reply, and an agent that
//! served another cluster adopts the new one and drops the old cluster's
//! epochs (see the agent's module table). The agent's table names the
//! cluster it last served, so the leader records a node that comes from
//! another cluster when it first registers it
//! ([`RegisterNodeFromOtherCluster`], event `node_from_other_cluster`).
//!
//! The id is derived from what the log entry carries (its index and the
//! leader's timestamp), so `apply` stays deterministic: two clusters get the
//! same id only if they record it at the same index in the same millisecond.

use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, RegisterNode, Rejection};

/// The id of a cluster whose identity is recorded at log `index` in a batch
/// stamped `at_ms`: both mixed (splitmix64), never 0 (0 means "none yet").
pub fn cluster_id(index: u64, at_ms: u64) -> u64 {
    let mut z = at_ms ^ index.rotate_left(41);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// Records the cluster's id (derived from the entry's index and timestamp)
/// when none is recorded yet; rejected afterwards, so it is chosen once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordClusterId {}

impl RecordClusterId {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        if state.cluster_id != 0 {
            return Err(Rejection::Conflict(format!(
                "the cluster id is already recorded ({})",
                state.cluster_id
            )));
        }
        state.cluster_id = cluster_id(index, at);
        Ok(())
    }
}

/// A node registers whose agent last served another cluster
/// (`from_cluster`, from its module table): [`RegisterNode`], plus the
/// event `node_from_other_cluster` when it registers the node for the first
/// time (an update or an unchanged registration records none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNodeFromOtherCluster {
    pub register: RegisterNode,
    pub from_cluster: u64,
}

impl RegisterNodeFromOtherCluster {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let first = !state.nodes.contains_key(&self.register.node);
        self.register.apply(state, index, at)?;
        if first && self.from_cluster != 0 && self.from_cluster != state.cluster_id {
            let node = self.register.node.clone();
            state.event(
                index,
                at,
                EventKind::NodeFromOtherCluster,
                None,
                Some(&node),
                &[
                    ("from_cluster", self.from_cluster.to_string()),
                    ("cluster", state.cluster_id.to_string()),
                ],
            );
        }
        Ok(())
    }
}
