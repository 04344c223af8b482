//! Versions in a pass: quarantining package versions that failed on enough
//! nodes, and for each module, before its recovery, what its revisions
//! need (see `crate::state::Versions`):
//! - held for a quarantined version: wait while it lasts; once lifted (or
//!   the module was updated away from it), placed again;
//! - on a quarantined version: back to its last good revision when it has
//!   one; otherwise, unless it runs, held;
//! - a rollout not yet placed: placed ([`PlaceCause::Rollout`]); an
//!   at-most-one module on its own node when that node still suits the new
//!   spec (the agent stops the old copy first), an at-least-one module on
//!   another node when one suits it (the old copy runs until the new one
//!   is healthy).
//!
//! Failing rollouts are reverted from the recovery step
//! ([`Planner::revert_instead`]).

use std::collections::BTreeSet;

use proto::Epoch;
use proto::spec::Fencing;

use crate::state::{
    AdvanceFleetRollout, HoldQuarantined, ModuleRecord, ModuleState, PlaceCause, QuarantinePackage,
    Revert, Transition,
};

use super::Planner;

impl Planner<'_> {
    /// Quarantines each package version that failed on
    /// `quarantine.nodes` distinct nodes within `quarantine.window_ms`.
    pub(super) fn quarantines(&mut self) {
        let policy = self.timing.quarantine;
        if policy.nodes == 0 {
            return;
        }
        let since = self.now.saturating_sub(policy.window_ms);
        let packages = &self.state.packages;
        for package in packages.failures.keys() {
            if packages.is_quarantined(package) {
                continue;
            }
            let nodes = packages.failed_nodes_since(package, since);
            if nodes.len() >= policy.nodes as usize {
                let nodes: Vec<String> = nodes.into_iter().cloned().collect();
                let reason = format!(
                    "it failed to install or start on {} nodes within {} s ({})",
                    nodes.len(),
                    policy.window_ms / 1000,
                    nodes.join(", ")
                );
                self.push(Transition::QuarantinePackage(QuarantinePackage {
                    package: package.clone(),
                    nodes,
                    reason,
                }));
            }
        }
    }

    /// Carries each running fleet rollout on when an advance would change
    /// something (see `crate::state::FleetRollout`).
    pub(super) fn fleet(&mut self) {
        let state = self.state;
        for f in state.fleet.rollouts.values() {
            if f.can_advance(state) {
                self.push(Transition::AdvanceFleetRollout(AdvanceFleetRollout {
                    id: f.id,
                }));
            }
        }
    }

    /// What the module's revisions need before its recovery; true when
    /// that is all it needs this pass.
    pub(super) fn versions(&mut self, name: &str, m: &ModuleRecord) -> bool {
        let state = self.state;
        let Some(v) = state.versions_of(name) else {
            return false;
        };
        let quarantined = state.packages.is_quarantined(&m.spec.package);
        if let Some(held) = &v.held {
            if quarantined && *held == m.spec.package {
                return true;
            }
            self.place_rollout(name, m, v.revision);
            return true;
        }
        if quarantined && m.state != ModuleState::Failed {
            if v.last_good(&state.packages).is_some() {
                self.push(Transition::Revert(Revert {
                    module: name.to_string(),
                    expect: v.revision,
                    reason: format!("package {} is quarantined", m.spec.package),
                }));
                return true;
            }
            if m.state == ModuleState::Running {
                return false;
            }
            self.push(Transition::HoldQuarantined(HoldQuarantined {
                module: name.to_string(),
                package: m.spec.package.clone(),
            }));
            return true;
        }
        if m.placement.is_some() && v.rollout.as_ref().is_some_and(|r| r.needs_placing()) {
            self.place_rollout(name, m, v.revision);
            return true;
        }
        false
    }

    /// Places `name` under its current revision (see the module doc for
    /// the node). With no node that suits it, it waits for one.
    fn place_rollout(&mut self, name: &str, m: &ModuleRecord, revision: u32) {
        let current = m.placement.as_ref().map(|p| p.node.clone());
        let none = BTreeSet::new();
        // The best two: one of them is not the current node.
        let eligible = self.eligible(m, &none, 2);
        let here = current.clone().filter(|c| self.is_eligible(m, c, &none));
        let node = match m.spec.fencing {
            Fencing::AtMostOne => here.or_else(|| eligible.first().cloned()),
            Fencing::AtLeastOne => eligible
                .iter()
                .find(|n| Some(*n) != current.as_ref())
                .cloned()
                .or(here),
        };
        let Some(node) = node else {
            return;
        };
        if let Some(c) = &current {
            self.shift_load(c, false);
        }
        let expect = m.placement.as_ref().map(|p| p.epoch);
        self.place(name, node, expect, PlaceCause::Rollout { revision });
    }

    /// A rollout whose placement at `epoch` failed (its install, its start,
    /// or its restores): reverts to the last good revision instead of the
    /// failover the recovery step would plan; true when it did.
    pub(super) fn revert_instead(&mut self, name: &str, epoch: Epoch, reason: &str) -> bool {
        if !self.rollout_open(name, epoch) {
            return false;
        }
        let Some(v) = self.state.versions_of(name) else {
            return false;
        };
        self.push(Transition::Revert(Revert {
            module: name.to_string(),
            expect: v.revision,
            reason: reason.to_string(),
        }));
        true
    }

    /// Whether a failure of the placement at `epoch` fails a rollout that
    /// can be reverted: the rollout's health gate is open for a placement
    /// at or after its own, and a good revision is there to go back to.
    pub(super) fn rollout_open(&self, name: &str, epoch: Epoch) -> bool {
        let state = self.state;
        state.versions_of(name).is_some_and(|v| {
            v.in_progress()
                .is_some_and(|r| r.epoch.is_some_and(|e| epoch >= e))
                && v.last_good(&state.packages).is_some()
        })
    }
}
