//! Why a module is where it is: every event's `cause`, and each live
//! module's causal chain, kept apart from the event ring so that it
//! survives the ring dropping old events (`GET /v1/modules/{name}/why`).
//!
//! ## Causes (decided in `apply`, from the replicated state alone)
//! - An event about a module is caused by the module's previous event: a
//!   restore order by the failure it answers, a restore by its order, a
//!   failover after spent restores by the last restore that failed, a
//!   placement of a rollout by the rollout's start, a reset by the
//!   failure it clears.
//! - A move off a node (a failover because the node was lost, a move off a
//!   draining node) is caused by that node's last event (`node_down`,
//!   `node_suspect`, `node_draining`), which is copied into the module's
//!   chain so that the chain names it even once the ring dropped it.
//! - An event about a node alone is caused by the node's previous event
//!   (`node_down` by `node_suspect`, which records how long the node had
//!   been silent: the last heartbeat seen).
//! - A deploy starts a chain: no cause (an operator's request).
//!
//! ## Bounds
//! A module's chain keeps its first event (normally its deploy) and its
//! newest [`CHAIN_KEPT`]` - 1` events; a node keeps its last event. Both
//! go when the module or node is removed.

use std::collections::{BTreeMap, VecDeque};

use proto::{ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{Event, EventKind};

/// Most events kept in one module's chain.
pub const CHAIN_KEPT: usize = 32;

/// The causal chains (see the module docs). A trailing field of the
/// stored state: a snapshot written before it decodes with no chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    /// Each live module's chain, oldest first.
    pub modules: super::SharedMap<ModuleName, VecDeque<Event>>,
    /// Each node's last event about its health or draining.
    pub nodes: BTreeMap<NodeId, Event>,
}

/// Encoded bytes of a module's chain entry.
pub(super) fn chain_bytes(name: &str, chain: &VecDeque<Event>) -> u64 {
    proto::encoded_len(&(name, chain)) as u64
}

/// Encoded bytes of a node's entry.
pub(super) fn node_bytes(name: &str, event: &Event) -> u64 {
    proto::encoded_len(&(name, event)) as u64
}

impl Why {
    /// Encoded bytes of every entry (beyond the two empty maps' length
    /// prefixes, counted with the state's fixed part).
    pub(super) fn bytes(&self) -> u64 {
        let modules: u64 = self.modules.iter().map(|(n, c)| chain_bytes(n, c)).sum();
        let nodes: u64 = self.nodes.iter().map(|(n, e)| node_bytes(n, e)).sum();
        modules + nodes
    }

    /// The cause of a new event about `module` or `node`; `cites` names
    /// the node whose last event caused it instead (a move off that node).
    pub(super) fn cause(
        &self,
        kind: EventKind,
        module: Option<&str>,
        node: Option<&str>,
        cites: Option<&str>,
    ) -> Option<u64> {
        if kind == EventKind::ModuleDeployed {
            return None;
        }
        if let Some(e) = cites.and_then(|n| self.nodes.get(n)) {
            return Some(e.index);
        }
        match module {
            Some(m) => self.modules.get(m).and_then(|c| c.back()).map(|e| e.index),
            None => node.and_then(|n| self.nodes.get(n)).map(|e| e.index),
        }
    }

    /// Keeps `event` (already given its cause) in the chains; returns the
    /// change of their encoded size.
    pub(super) fn record(&mut self, event: &Event, cites: Option<&str>) -> i64 {
        let mut delta = 0i64;
        match (&event.module, &event.node) {
            (Some(module), _) => {
                let before = self
                    .modules
                    .get(module)
                    .map_or(0, |c| chain_bytes(module, c));
                if event.kind == EventKind::ModuleRemoved {
                    self.modules.remove(module);
                    return -(before as i64);
                }
                let cited = cites.and_then(|n| self.nodes.get(n)).cloned();
                let chain = self.modules.entry(module.clone()).or_default();
                // Exact growth: most chains hold one or two events, and a
                // doubling deque would keep room for four (120 B each) in
                // every module's chain (measured: examples/state_memory).
                if let Some(cited) = cited
                    && !chain.iter().any(|e| e.index == cited.index)
                {
                    chain.reserve_exact(1);
                    chain.push_back(cited);
                }
                chain.reserve_exact(1);
                chain.push_back(event.clone());
                while chain.len() > CHAIN_KEPT {
                    // The first event (the deploy) stays.
                    chain.remove(1);
                }
                delta += chain_bytes(module, chain) as i64 - before as i64;
            }
            (None, Some(node)) => {
                let before = self.nodes.get(node).map_or(0, |e| node_bytes(node, e));
                if event.kind == EventKind::NodeRemoved {
                    self.nodes.remove(node);
                } else {
                    self.nodes.insert(node.clone(), event.clone());
                }
                let after = self.nodes.get(node).map_or(0, |e| node_bytes(node, e));
                delta += after as i64 - before as i64;
            }
            (None, None) => {}
        }
        delta
    }

    /// `module`'s chain, newest first: the events that put it where it is,
    /// each naming its cause. Empty for a module without one.
    pub fn chain(&self, module: &str) -> Vec<Event> {
        self.modules
            .get(module)
            .map(|c| c.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}
