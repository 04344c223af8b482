//! Nodes: the node record, and the transitions that register a node's
//! agent ([`RegisterNode`]), record the failure detector's verdict on it
//! ([`SetNodeHealth`]) and drain it ([`Drain`]).
//!
//! A node is registered by the leader the first time its agent's table is
//! heard (ready at once), and updated when the agent announces another
//! address or other labels. Its health changes only through the leader's
//! failure detector (`plan`), which proposes a verdict only when it differs
//! from the committed one; a repeated verdict or an unchanged registration
//! is rejected, so neither records a second event. A drain is an
//! administrative flag: the planner moves the node's modules away and
//! places nothing new there.

use std::collections::BTreeMap;

use proto::NodeId;
use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, Rejection, not_found};

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

/// A node's agent announced (or changed) its address and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub node: NodeId,
    pub addr: String,
    pub labels: BTreeMap<String, String>,
}

impl RegisterNode {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let kind = match state.nodes.get_mut(&self.node) {
            Some(n) if n.addr == self.addr && n.labels == self.labels => {
                return Err(Rejection::Conflict(format!(
                    "node {:?} unchanged",
                    self.node
                )));
            }
            Some(n) => {
                n.addr = self.addr.clone();
                n.labels = self.labels.clone();
                n.updated_ms = at;
                EventKind::NodeUpdated
            }
            None => {
                state.nodes.insert(
                    self.node.clone(),
                    NodeRecord {
                        addr: self.addr.clone(),
                        labels: self.labels.clone(),
                        health: NodeHealth::Ready,
                        draining: false,
                        updated_ms: at,
                    },
                );
                EventKind::NodeRegistered
            }
        };
        state.event(
            index,
            at,
            kind,
            None,
            Some(&self.node),
            &[("addr", self.addr.clone())],
        );
        Ok(())
    }
}

/// The failure detector's verdict on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeHealth {
    pub node: NodeId,
    pub health: NodeHealth,
    pub detail: String,
}

impl SetNodeHealth {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let n = state
            .nodes
            .get_mut(&self.node)
            .ok_or_else(|| not_found("node", &self.node))?;
        if n.health == self.health {
            return Err(Rejection::Conflict(format!(
                "node {:?} already {:?}",
                self.node, self.health
            )));
        }
        n.health = self.health;
        n.updated_ms = at;
        let kind = match self.health {
            NodeHealth::Ready => EventKind::NodeReady,
            NodeHealth::Suspect => EventKind::NodeSuspect,
            NodeHealth::Down => EventKind::NodeDown,
        };
        state.event(
            index,
            at,
            kind,
            None,
            Some(&self.node),
            &[("detail", self.detail.clone())],
        );
        Ok(())
    }
}

/// Operator: drain a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub node: NodeId,
}

impl Drain {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let n = state
            .nodes
            .get_mut(&self.node)
            .ok_or_else(|| not_found("node", &self.node))?;
        if n.draining {
            return Err(Rejection::Conflict(format!(
                "node {:?} is already draining",
                self.node
            )));
        }
        n.draining = true;
        n.updated_ms = at;
        state.event(
            index,
            at,
            EventKind::NodeDraining,
            None,
            Some(&self.node),
            &[],
        );
        Ok(())
    }
}
