//! The operator's ways back: a drained node takes modules again
//! ([`Undrain`]), a failed module is cleared and placed again ([`Reset`]),
//! a down node is forgotten ([`RemoveNode`]), and a module is removed
//! through `stopped` ([`StopModule`]).
//!
//! ## Removing a module
//! `DELETE /v1/modules/{name}` proposes [`StopModule`]. When no copy of the
//! module can be running (it was never placed, or every node it was placed
//! on, now or before, is down or forgotten), the record is deleted at once,
//! as [`super::Remove`] does. Otherwise the module becomes `stopped`: it
//! keeps its placement so that its node's agent is told to stop the copy
//! (`crate::directives`), nothing places, restores or fails it over any
//! more, and the leader's planner proposes [`super::Remove`] once every
//! copy is known stopped (the agent's table no longer shows it running, or
//! its node is down). The decision lives in the log: a new leader carries
//! it on from the state.
//!
//! ## Forgetting a node
//! Only a `down` node may be removed: its lease has run out, so its agent
//! has stopped every at-most-one copy. Nothing is left pointing at it: a
//! module placed there loses that placement and waits to be placed again
//! (`pending`; a failed or stopped one keeps its state), a placement whose
//! previous copy ran there is released, and it leaves every module's tried
//! nodes. If its agent comes back later it registers as a new node.
//!
//! ## Resetting a module
//! Only a `failed` module may be reset (anything else is 409: a module
//! that runs, restores or fails over needs no reset), and only while its
//! package version is not quarantined (it would only wait for the
//! quarantine to end: the operator lifts it first, or updates the module). The module becomes
//! `pending` with its counters (restore attempts, failovers) and tried
//! nodes cleared; its placement is kept as the one the planner moves it
//! from, so that at-most-one fencing still waits for the old copy to be
//! known stopped before a new one starts.

use proto::{ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{
    ClusterState, EventKind, ModuleState, NodeHealth, Rejection, Remove, module_bytes, not_found,
};

/// Operator: a draining node takes modules again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undrain {
    pub node: NodeId,
}

impl Undrain {
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
        if !n.draining {
            return Err(Rejection::Conflict(format!(
                "node {:?} is not draining",
                self.node
            )));
        }
        n.draining = false;
        n.updated_ms = at;
        state.event(
            index,
            at,
            EventKind::NodeUndrained,
            None,
            Some(&self.node),
            &[],
        );
        Ok(())
    }
}

/// Operator: clear a failed module (its counters and tried nodes) so that
/// it is placed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    pub module: ModuleName,
}

impl Reset {
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
        if m.state != ModuleState::Failed {
            return Err(Rejection::Conflict(format!(
                "module {:?} is {}, not failed: only a failed module can be reset",
                self.module,
                m.state.as_str()
            )));
        }
        let package = &m.spec.package;
        if state.packages.is_quarantined(package) {
            // Placed again it would only wait for the quarantine to end.
            return Err(Rejection::Conflict(format!(
                "module {:?} uses package {package}, which is quarantined (it failed on several nodes): lift the quarantine first (`supctl quarantine lift {package}`, DELETE /v1/packages/quarantined/{}/{}), or update the module to another version",
                self.module, package.name, package.version
            )));
        }
        let mut detail = vec![
            ("restore_attempts", m.restore_attempts.to_string()),
            ("failovers", m.failovers.to_string()),
            ("tried", m.tried_nodes.join(",")),
        ];
        if let Some(reason) = m.reason.take() {
            detail.push(("reason", reason));
        }
        m.state = ModuleState::Pending;
        m.restore_attempts = 0;
        m.failovers = 0;
        m.episode_failovers = 0;
        m.tried_nodes.clear();
        // The old placement's package is not installed again: the module
        // gets a new placement (and its package) from the planner.
        m.package = None;
        m.updated_ms = at;
        state.module_event(index, at, EventKind::ModuleReset, &self.module, &detail);
        Ok(())
    }
}

/// Operator: forget a node that is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveNode {
    pub node: NodeId,
}

impl RemoveNode {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let node = self.node.as_str();
        let n = state
            .nodes
            .get(node)
            .ok_or_else(|| not_found("node", node))?;
        if n.health != NodeHealth::Down {
            let status = match (n.draining, n.health) {
                (true, NodeHealth::Ready) => "draining",
                (_, NodeHealth::Ready) => "ready",
                (_, NodeHealth::Suspect) => "suspect",
                (_, NodeHealth::Down) => "down",
            };
            return Err(Rejection::Conflict(format!(
                "node {node:?} is {status}, not down: only a down node can be removed (stop its agent; the node is down once its lease has run out)"
            )));
        }
        state.nodes.remove(node);
        state.placed.remove(node);
        let touched: Vec<ModuleName> = state
            .modules
            .iter()
            .filter(|(_, m)| {
                m.tried_nodes.iter().any(|t| t == node)
                    || m.placement
                        .as_ref()
                        .is_some_and(|p| p.node == node || p.previous.as_deref() == Some(node))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut unplaced = Vec::new();
        for name in &touched {
            let before = module_bytes(name, &state.modules[name], state.versions.get(name));
            let m = state.modules.get_mut(name).expect("listed above");
            m.tried_nodes.retain(|t| t != node);
            if let Some(p) = &mut m.placement
                && p.previous.as_deref() == Some(node)
            {
                p.previous = None;
            }
            if m.placement.as_ref().is_some_and(|p| p.node == node) {
                m.placement = None;
                m.package = None;
                m.restore_seq = 0;
                if !matches!(m.state, ModuleState::Failed | ModuleState::Stopped) {
                    m.state = ModuleState::Pending;
                    m.reason = Some(format!(
                        "node {node} was removed; waiting to be placed again"
                    ));
                }
                m.updated_ms = at;
                unplaced.push(name.clone());
            }
            let after = module_bytes(name, &state.modules[name], state.versions.get(name));
            // `touches` names the node only: the modules changed here are
            // measured, and filed for the planner, here.
            state.size.modules = state.size.modules.saturating_sub(before) + after;
            state.touch(name, index);
        }
        let detail = if unplaced.is_empty() {
            vec![]
        } else {
            vec![("modules", unplaced.join(","))]
        };
        state.event(index, at, EventKind::NodeRemoved, None, Some(node), &detail);
        Ok(())
    }
}

/// Operator: remove a module, through `stopped` while a copy may run (see
/// the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopModule {
    pub module: ModuleName,
}

impl StopModule {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state
            .modules
            .get(&self.module)
            .ok_or_else(|| not_found("module", &self.module))?;
        let waiting = copies_maybe_running(state, &self.module);
        if m.state == ModuleState::Stopped {
            let on = if waiting.is_empty() {
                "it disappears at the leader's next pass".to_string()
            } else {
                format!("waiting for its copy on {} to stop", waiting.join(", "))
            };
            return Err(Rejection::Conflict(format!(
                "module {:?} is already being removed: it is stopped, {on}",
                self.module
            )));
        }
        if waiting.is_empty() {
            return Remove {
                module: self.module.clone(),
            }
            .apply(state, index, at);
        }
        let nodes = waiting.join(", ");
        let m = state
            .modules
            .get_mut(&self.module)
            .expect("looked up above");
        m.state = ModuleState::Stopped;
        m.reason = Some(format!(
            "removed by an operator; waiting for its copy on {nodes} to stop"
        ));
        m.updated_ms = at;
        state.module_event(
            index,
            at,
            EventKind::ModuleStopping,
            &self.module,
            &[("waiting_for", nodes)],
        );
        Ok(())
    }
}

/// The nodes where a copy of `module` may still run as far as the state
/// knows: its placement's node and the previous one, when they are known
/// and not down (a down node's lease has run out: its agent stopped it).
pub fn copies_maybe_running(state: &ClusterState, module: &str) -> Vec<NodeId> {
    let Some(p) = state.modules.get(module).and_then(|m| m.placement.as_ref()) else {
        return vec![];
    };
    [Some(&p.node), p.previous.as_ref()]
        .into_iter()
        .flatten()
        .filter(|n| {
            state
                .nodes
                .get(n.as_str())
                .is_some_and(|r| r.health != NodeHealth::Down)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::{
        Batch, Deploy, Drain, GiveUp, Place, PlaceCause, RegisterNode, Remove, SetNodeHealth,
        StateSize, Transition,
    };
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Deploy(usize),
        Place(usize, usize, bool),
        Health(usize, u8),
        Drain(usize),
        Undrain(usize),
        GiveUp(usize),
        Reset(usize),
        RemoveNode(usize),
        Register(usize),
        Stop(usize),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Two modules and three nodes, placements and health changes
        // weighted up: failovers off a node that then goes down and is
        // removed happen often.
        prop_oneof![
            2 => (0..2usize).prop_map(Op::Deploy),
            6 => (0..2usize, 0..3usize, any::<bool>()).prop_map(|(m, n, f)| Op::Place(m, n, f)),
            4 => (0..3usize, 0..3u8).prop_map(|(n, h)| Op::Health(n, h)),
            1 => (0..3usize).prop_map(Op::Drain),
            1 => (0..3usize).prop_map(Op::Undrain),
            1 => (0..2usize).prop_map(Op::GiveUp),
            1 => (0..2usize).prop_map(Op::Reset),
            3 => (0..3usize).prop_map(Op::RemoveNode),
            2 => (0..3usize).prop_map(Op::Register),
            1 => (0..2usize).prop_map(Op::Stop),
            1 => (0..2usize).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever the operator's ways back are mixed with, the
        /// modules-by-node index equals the placements, no placement, previous
        /// copy or tried node names a node that is not registered, a rejected
        /// transition changes nothing, and the size kept by `apply` equals
        /// the size measured afresh.
        #[test]
        fn ways_back_keep_the_state_consistent(ops in proptest::collection::vec(op(), 1..80)) {
            let nodes = ["a", "b", "c"];
            let mut s = ClusterState::default();
            let mut index = 0;
            for o in ops {
                let module = |m: usize| format!("m{m}");
                let epoch = |s: &ClusterState, m: usize| {
                    s.modules.get(&module(m)).and_then(|r| r.placement.as_ref()).map(|p| p.epoch)
                };
                let t = match o {
                    Op::Deploy(m) => Transition::Deploy(Deploy {
                        spec: serde_json::from_value(serde_json::json!({
                            "name": module(m), "package": {"name": "p", "version": "1.0.0"}
                        })).expect("spec"),
                    }),
                    Op::Place(m, n, failover) => Transition::Place(Place {
                        module: module(m),
                        node: nodes[n].into(),
                        expect_epoch: epoch(&s, m),
                        cause: if failover {
                            PlaceCause::Failover { reason: "x".into() }
                        } else {
                            PlaceCause::Initial
                        },
                    }),
                    Op::Health(n, h) => Transition::SetNodeHealth(SetNodeHealth {
                        node: nodes[n].into(),
                        health: [NodeHealth::Ready, NodeHealth::Suspect, NodeHealth::Down][h as usize],
                        detail: String::new(),
                    }),
                    Op::Drain(n) => Transition::Drain(Drain { node: nodes[n].into() }),
                    Op::Undrain(n) => Transition::Undrain(Undrain { node: nodes[n].into() }),
                    Op::GiveUp(m) => Transition::GiveUp(GiveUp {
                        module: module(m),
                        epoch: epoch(&s, m),
                        reason: "x".into(),
                    }),
                    Op::Reset(m) => Transition::Reset(Reset { module: module(m) }),
                    Op::RemoveNode(n) => Transition::RemoveNode(RemoveNode { node: nodes[n].into() }),
                    Op::Register(n) => Transition::RegisterNode(RegisterNode {
                        node: nodes[n].into(),
                        addr: format!("{}:1", nodes[n]),
                        labels: BTreeMap::new(),
                    }),
                    Op::Stop(m) => Transition::StopModule(StopModule { module: module(m) }),
                    Op::Remove(m) => Transition::Remove(Remove { module: module(m) }),
                };
                index += 1;
                let before = s.clone();
                let resp = s.apply(index, &Batch { at_ms: index, transitions: vec![t] });
                if matches!(resp.outcomes[0], super::super::Outcome::Rejected(_)) {
                    let mut after = s.clone();
                    after.last_index = before.last_index;
                    prop_assert_eq!(&after, &before);
                }
                let mut derived: super::super::SharedMap<String, super::super::SharedSet<String>> = super::super::SharedMap::new();
                for (name, m) in &s.modules {
                    if let Some(p) = &m.placement {
                        derived.entry(p.node.clone()).or_default().insert(name.clone());
                        prop_assert!(s.nodes.contains_key(&p.node), "{} placed on a forgotten node", name);
                        if let Some(prev) = &p.previous {
                            prop_assert!(s.nodes.contains_key(prev), "{} waits for a forgotten node", name);
                        }
                    }
                    for t in &m.tried_nodes {
                        prop_assert!(s.nodes.contains_key(t), "{} tried a forgotten node", name);
                    }
                }
                prop_assert_eq!(&s.placed, &derived);
                prop_assert_eq!(s.size(), StateSize::of(&s));
            }
        }
    }
}
