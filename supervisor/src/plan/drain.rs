//! Drains, the last step of a pass: modules move off a draining node one
//! at a time, each to the best eligible node (`Place{Drain}`, a new epoch).
//! A node's next module moves once the previous one's copy on the node is
//! released, and a pass plans at most one drain move. A drain is not a
//! failure: it counts no failover and resets restore attempts (`apply`).

use std::collections::BTreeSet;

use crate::state::{ModuleState, PlaceCause, Transition};

use super::Planner;

impl Planner<'_> {
    /// Moves modules off draining nodes, one at a time per node.
    pub(super) fn drains(&mut self) {
        for (node, record) in &self.state.nodes {
            if !record.draining {
                continue;
            }
            let moving = self.state.modules.values().any(|m| {
                m.placement.as_ref().is_some_and(|p| {
                    p.cause == PlaceCause::Drain
                        && p.previous.as_deref() == Some(node.as_str())
                        && m.state == ModuleState::Installing
                })
            });
            if moving || self.plan_touches_drain(node) {
                continue;
            }
            let next = self
                .state
                .modules_on(node)
                .find(|(_, m)| m.state == ModuleState::Running);
            if let Some((name, m)) = next {
                let epoch = m.placement.as_ref().map(|p| p.epoch);
                let exclude = BTreeSet::from([node.as_str()]);
                if let Some(target) = self.eligible(m, &exclude, 1).pop() {
                    self.place(name, target, epoch, PlaceCause::Drain);
                }
            }
        }
    }

    fn plan_touches_drain(&self, _node: &str) -> bool {
        self.plan
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::Place(p) if p.cause == PlaceCause::Drain))
    }
}
