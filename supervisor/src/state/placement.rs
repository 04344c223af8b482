//! Where a module runs: the placement record and the transitions that
//! decide it ([`Place`]), let a new placement start once the previous copy
//! is known stopped ([`ReleasePrevious`]), hold a module that has nowhere to
//! go ([`AwaitNode`]) and end its attempts ([`GiveUp`]).
//!
//! ## Invariants
//! - A placement's epoch is the log index of the [`Place`] that made it, so
//!   it strictly increases over a module's life; every later transition
//!   about the placement names its epoch and is rejected once the module
//!   has moved on.
//! - A [`Place`] names the epoch it was decided against (`expect_epoch`) and
//!   lands only on a ready, undrained node.
//! - A failover ([`PlaceCause::Failover`]) spends one of
//!   `failover.max_nodes` and marks the node it leaves as tried; a move off
//!   a lost node ([`PlaceCause::NodeLost`]) or a drain spends nothing
//!   (claim 2 counts failures of the module, not of nodes).
//! - `previous` names the node whose copy may still run: at-most-one
//!   fencing keeps the new copy from starting until [`ReleasePrevious`].

use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, ModuleState, NodeHealth, Rejection, not_found};

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
    /// Moved to another revision of the module (an update, a rollback, or
    /// a revert after a failed rollout; see `versions`). On the same node
    /// the agent replaces the old copy (stopping it first); elsewhere the
    /// previous copy is fenced as for a failover, except that an
    /// at-least-one module's old copy keeps running until the new one is
    /// healthy. Not a failure: spends nothing, starts a new episode.
    Rollout { revision: u32 },
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

/// Place a module on a node: a new epoch. `expect_epoch` is the placement
/// epoch the decision was made against (None: not placed yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub module: ModuleName,
    pub node: NodeId,
    pub expect_epoch: Option<Epoch>,
    pub cause: PlaceCause,
}

impl Place {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let node = state
            .nodes
            .get(&self.node)
            .ok_or_else(|| not_found("node", &self.node))?;
        if node.health != NodeHealth::Ready || node.draining {
            return Err(Rejection::Conflict(format!(
                "node {:?} cannot take modules now",
                self.node
            )));
        }
        let m = state
            .modules
            .get_mut(&self.module)
            .ok_or_else(|| not_found("module", &self.module))?;
        let current = m.placement.as_ref().map(|pl| pl.epoch);
        if current != self.expect_epoch {
            return Err(Rejection::Conflict(format!(
                "module {:?} placement changed (epoch {current:?})",
                self.module
            )));
        }
        let rollout = matches!(self.cause, PlaceCause::Rollout { .. });
        if m.state == ModuleState::Stopped {
            // Being removed (`StopModule`): a plan made before it must not
            // bring it back.
            return Err(Rejection::Conflict(format!(
                "module {:?} is being removed",
                self.module
            )));
        }
        if m.state == ModuleState::Failed && !rollout {
            return Err(Rejection::Conflict(format!(
                "module {:?} has failed",
                self.module
            )));
        }
        let from = m.placement.as_ref().map(|pl| pl.node.clone());
        match self.cause {
            PlaceCause::NodeLost { .. } => {
                m.failovers += 1;
                m.state = ModuleState::FailingOver;
            }
            PlaceCause::Failover { .. } => {
                if m.episode_failovers >= m.spec.failover.max_nodes {
                    return Err(Rejection::Conflict(format!(
                        "module {:?} has tried failover.max_nodes = {} nodes",
                        self.module, m.spec.failover.max_nodes
                    )));
                }
                if m.tried_nodes.contains(&self.node) {
                    return Err(Rejection::Conflict(format!(
                        "node {:?} already failed module {:?}",
                        self.node, self.module
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
            }
            PlaceCause::Initial | PlaceCause::Drain => m.state = ModuleState::Installing,
            PlaceCause::Rollout { .. } => {
                m.state = ModuleState::Installing;
                m.restore_attempts = 0;
                m.tried_nodes.clear();
                m.episode_failovers = 0;
            }
        }
        // On the same node the agent itself stops the old copy before the
        // new one starts: there is no other node's copy to wait for (a
        // rollout, or a reset module placed again where it was).
        let previous = from.clone().filter(|f| *f != self.node);
        m.placement = Some(Placement {
            node: self.node.clone(),
            epoch: index,
            previous,
            cause: self.cause.clone(),
        });
        m.package = None;
        m.restore_seq = 0;
        if self.cause == PlaceCause::Drain {
            m.restore_attempts = 0;
        }
        m.reason = None;
        m.updated_ms = at;
        let mut detail = vec![("epoch", index.to_string())];
        if let Some(from) = &from {
            detail.push(("from", from.clone()));
        }
        let kind = match &self.cause {
            PlaceCause::Initial => EventKind::Placed,
            PlaceCause::Rollout { revision } => {
                detail.push(("revision", revision.to_string()));
                EventKind::Placed
            }
            PlaceCause::Failover { reason } | PlaceCause::NodeLost { reason } => {
                detail.push(("reason", reason.clone()));
                detail.push(("tried", m.tried_nodes.join(",")));
                EventKind::FailoverStarted
            }
            PlaceCause::Drain => EventKind::DrainMoved,
        };
        if matches!(
            self.cause,
            PlaceCause::Failover { .. } | PlaceCause::NodeLost { .. }
        ) {
            state.count_on_revision(&self.module, false);
        }
        state.revision_placed(&self.module, index);
        if let Some(from) = &from {
            state.unindex(from, &self.module);
        }
        state.index(&self.node, &self.module);
        // A move off a lost or draining node is caused by that node's last
        // event (its `node_down`, `node_suspect` or `node_draining`).
        let cites = match self.cause {
            PlaceCause::NodeLost { .. } | PlaceCause::Drain => from.as_deref(),
            _ => None,
        };
        state.event_citing(
            index,
            at,
            kind,
            Some(&self.module),
            Some(&self.node),
            &detail,
            cites,
        );
        Ok(())
    }
}

/// The previous node's copy is known stopped (or the node is down): the new
/// placement may start (at-most-one fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePrevious {
    pub module: ModuleName,
    pub epoch: Epoch,
}

impl ReleasePrevious {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        let placement = m
            .placement
            .as_mut()
            .expect("placed_module checked the placement");
        let previous = placement
            .previous
            .take()
            .ok_or_else(|| Rejection::Conflict("no previous copy to release".into()))?;
        m.updated_ms = at;
        state.event(
            index,
            at,
            EventKind::PreviousReleased,
            Some(&self.module),
            Some(&previous),
            &[("epoch", self.epoch.to_string())],
        );
        Ok(())
    }
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

impl AwaitNode {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        if m.state == ModuleState::FailingOver && m.reason.as_ref() == Some(&self.reason) {
            return Err(Rejection::Conflict(format!(
                "module {:?} already waits for a node",
                self.module
            )));
        }
        if matches!(m.state, ModuleState::Failed | ModuleState::Stopped) {
            return Err(Rejection::Conflict(format!(
                "module {:?} is {}",
                self.module,
                m.state.as_str()
            )));
        }
        m.state = ModuleState::FailingOver;
        m.reason = Some(self.reason.clone());
        m.updated_ms = at;
        state.module_event(
            index,
            at,
            EventKind::FailoverWaiting,
            &self.module,
            &[("reason", self.reason.clone())],
        );
        Ok(())
    }
}

/// No way left to run the module: mark it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiveUp {
    pub module: ModuleName,
    pub epoch: Option<Epoch>,
    pub reason: String,
}

impl GiveUp {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state
            .modules
            .get_mut(&self.module)
            .ok_or_else(|| not_found("module", &self.module))?;
        if m.placement.as_ref().map(|p| p.epoch) != self.epoch {
            return Err(Rejection::Conflict(format!(
                "module {:?} moved on",
                self.module
            )));
        }
        if m.state == ModuleState::Failed {
            return Err(Rejection::Conflict(format!(
                "module {:?} already failed",
                self.module
            )));
        }
        if m.state == ModuleState::Stopped {
            return Err(Rejection::Conflict(format!(
                "module {:?} is being removed",
                self.module
            )));
        }
        m.state = ModuleState::Failed;
        m.reason = Some(self.reason.clone());
        m.updated_ms = at;
        state.module_event(
            index,
            at,
            EventKind::ModuleFailed,
            &self.module,
            &[("reason", self.reason.clone())],
        );
        Ok(())
    }
}
