//! What one module needs next, the middle step of a pass: its first
//! placement, restores on its node, failover to another node (claims 1 and
//! 2), a move off a lost node, waiting for a node, and giving up.
//!
//! Decisions for a module placed at epoch E on node N, from its record and
//! N's latest heartbeat:
//! - being removed (`stopped`): once every copy (on N, and on the node it
//!   was moving from) is known stopped, `Remove`; nothing else;
//! - not placed, or reset by an operator (`pending` with the placement it
//!   leaves): the best eligible node, the preferred one first;
//! - N lost (down, or suspect for an at-least-one module): relocate, which
//!   never gives up (no tried node, no `failover.max_nodes` spent); with no
//!   ready node the module waits (`AwaitNode`);
//! - a previous copy not yet released: release it once known stopped, or
//!   at once for at-least-one modules; until then only the package may be
//!   retrieved (the install directive waits for the release);
//! - no package yet: fetch it;
//! - otherwise by state: healthy for `min_healthy_ms` → `Healthy`; down →
//!   `FailureDetected` and a restore, or after `restart.attempts` a
//!   failover; a fresh deploy that dies before it is healthy is restored in
//!   place first; a failed install, or a failed first start on a failover
//!   node → `InstallFailed` and the next failover node, up to
//!   `failover.max_nodes`, then `GiveUp`; a failover node that stopped its
//!   copy itself (fenced, agent restarted) is a lost node, not a failure.
//!
//! Only heartbeat evidence about epoch E counts: a table entry of an older
//! epoch means the install directive is still on its way.

use std::collections::BTreeSet;

use proto::Epoch;
use proto::heartbeat::{ModuleStatus, ReportKind};
use proto::spec::Fencing;

use crate::state::{
    AwaitNode, FailStage, FailureDetected, GiveUp, Healthy, InstallFailed, ModuleRecord,
    ModuleState, NodeHealth, PlaceCause, ReleasePrevious, Remove, RestoreOrdered, Transition,
};

use super::{Fetch, Planner};

impl Planner<'_> {
    /// Plans what one module needs next: a first placement, a move off a
    /// lost node, the release of its previous copy, its package, or the next
    /// step of its recovery as its node's heartbeats show it.
    pub(super) fn module(&mut self, name: &str, m: &ModuleRecord) {
        if m.state == ModuleState::Stopped {
            self.finish_removal(name, m);
            return;
        }
        if self.versions(name, m) || m.state == ModuleState::Failed {
            return;
        }
        let placement = m
            .placement
            .as_ref()
            .filter(|_| m.state != ModuleState::Pending);
        let Some(p) = placement else {
            // Not placed yet, or reset by an operator (`pending` with the
            // placement it moves from, whose copy is fenced as usual).
            let none = BTreeSet::new();
            let preferred = m
                .spec
                .placement
                .node
                .as_deref()
                .filter(|n| self.is_eligible(m, n, &none))
                .map(str::to_string);
            if let Some(node) = preferred.or_else(|| self.eligible(m, &none, 1).pop()) {
                let from = m.placement.as_ref();
                if let Some(from) = from {
                    self.shift_load(&from.node, false);
                }
                self.place(name, node, from.map(|p| p.epoch), PlaceCause::Initial);
            }
            return;
        };
        let health = self.health.get(p.node.as_str()).copied();
        let node_lost = matches!(
            (health, m.spec.fencing),
            (Some(NodeHealth::Down) | None, _) | (Some(NodeHealth::Suspect), Fencing::AtLeastOne)
        );
        if node_lost {
            let how = if health == Some(NodeHealth::Suspect) {
                "suspect"
            } else {
                "down"
            };
            self.relocate(
                name,
                m,
                p.epoch,
                &p.node,
                format!("node {} is {how}", p.node),
            );
            return;
        }
        let surge =
            matches!(p.cause, PlaceCause::Rollout { .. }) && m.spec.fencing == Fencing::AtLeastOne;
        if let Some(prev) = &p.previous
            && surge
        {
            // An at-least-one rollout to another node: the old copy runs
            // until the new one is healthy (or its node is gone).
            let gone = matches!(
                self.health.get(prev.as_str()),
                None | Some(NodeHealth::Down)
            );
            if m.state == ModuleState::Running || gone {
                self.push(Transition::ReleasePrevious(ReleasePrevious {
                    module: name.to_string(),
                    epoch: p.epoch,
                }));
            }
        } else if let Some(prev) = &p.previous {
            if self.released(name, prev, m.spec.fencing) {
                self.push(Transition::ReleasePrevious(ReleasePrevious {
                    module: name.to_string(),
                    epoch: p.epoch,
                }));
            } else if m.package.is_some() {
                return;
            }
        }
        if m.package.is_none() {
            self.plan.fetches.push(Fetch {
                module: name.to_string(),
                epoch: p.epoch,
                package: m.spec.package.clone(),
            });
            return;
        }
        let Some(obs) = self.observed.nodes.get(&p.node) else {
            return;
        };
        let Some((entry, status, since)) = obs.module(name) else {
            return;
        };
        if entry.epoch != p.epoch {
            return; // not installed yet: the install directive is on its way
        }
        let healthy_for = self.now.saturating_sub(since);
        let healthy =
            status == ModuleStatus::Running && healthy_for >= m.spec.restart.min_healthy_ms;
        let message = |kind: ReportKind| {
            obs.messages
                .get(name)
                .filter(|(e, k, _)| *e == p.epoch && *k == kind)
                .map(|(_, _, msg)| msg.clone())
        };
        match m.state {
            ModuleState::Installing | ModuleState::FailingOver => {
                if healthy {
                    self.push(Transition::Healthy(Healthy {
                        module: name.to_string(),
                        epoch: p.epoch,
                    }));
                } else if m.state == ModuleState::FailingOver
                    && matches!(status, ModuleStatus::Fenced | ModuleStatus::Stopped)
                {
                    // The node stopped its copy (its lease ran out during a
                    // partition, or its agent restarted): the module did not
                    // fail there, so no failed start is counted; it moves on.
                    self.relocate(
                        name,
                        m,
                        p.epoch,
                        &p.node,
                        format!("{} stopped its copy ({})", p.node, status.as_str()),
                    );
                } else if status == ModuleStatus::InstallFailed || status.is_down() {
                    let (stage, reason) = if status == ModuleStatus::InstallFailed {
                        let why = message(ReportKind::InstallFailed)
                            .unwrap_or_else(|| "no reason given".into());
                        (
                            FailStage::Install,
                            format!("install on {} failed: {why}", p.node),
                        )
                    } else {
                        let why =
                            message(ReportKind::Failed).unwrap_or_else(|| status.as_str().into());
                        (
                            FailStage::Start,
                            format!(
                                "module went down on {} before it was healthy: {why}",
                                p.node
                            ),
                        )
                    };
                    if stage == FailStage::Start
                        && m.state == ModuleState::Installing
                        && !self.rollout_open(name, p.epoch)
                    {
                        // A fresh deploy that crashed: restore in place first.
                        self.push(Transition::FailureDetected(FailureDetected {
                            module: name.to_string(),
                            epoch: p.epoch,
                            status,
                        }));
                        self.restore_or_failover(name, m, p.epoch, &p.node, status);
                        return;
                    }
                    self.push(Transition::InstallFailed(InstallFailed {
                        module: name.to_string(),
                        epoch: p.epoch,
                        stage,
                        reason: reason.clone(),
                    }));
                    self.failover(name, m, p.epoch, &p.node, reason);
                }
            }
            ModuleState::Running => {
                if status.is_down() {
                    self.push(Transition::FailureDetected(FailureDetected {
                        module: name.to_string(),
                        epoch: p.epoch,
                        status,
                    }));
                    self.restore_or_failover(name, m, p.epoch, &p.node, status);
                }
            }
            ModuleState::Restoring => {
                if m.restore_seq == 0 {
                    self.restore_or_failover(name, m, p.epoch, &p.node, status);
                } else if entry.restore_seq == m.restore_seq {
                    if healthy {
                        self.push(Transition::Healthy(Healthy {
                            module: name.to_string(),
                            epoch: p.epoch,
                        }));
                    } else if status.is_down() {
                        self.restore_or_failover(name, m, p.epoch, &p.node, status);
                    }
                }
            }
            ModuleState::Pending | ModuleState::Failed | ModuleState::Stopped => {}
        }
    }

    fn restore_or_failover(
        &mut self,
        name: &str,
        m: &ModuleRecord,
        epoch: Epoch,
        node: &str,
        status: ModuleStatus,
    ) {
        if m.restore_attempts < m.spec.restart.attempts {
            self.push(Transition::RestoreOrdered(RestoreOrdered {
                module: name.to_string(),
                epoch,
                seq: m.restore_seq + 1,
            }));
        } else {
            self.failover(
                name,
                m,
                epoch,
                node,
                format!(
                    "not restored on {node} after {} attempts (last status {})",
                    m.restore_attempts,
                    status.as_str()
                ),
            );
        }
    }

    /// Fails the module over from its current node (claim 1), or to the next
    /// node when the failover node failed too (claim 2).
    fn failover(&mut self, name: &str, m: &ModuleRecord, epoch: Epoch, from: &str, reason: String) {
        if self.revert_instead(name, epoch, &reason) {
            return;
        }
        let tried = super::next_node::failover_exclude(m, from);
        let tried_list = tried.iter().copied().collect::<Vec<_>>().join(", ");
        if m.episode_failovers >= m.spec.failover.max_nodes {
            self.push(Transition::GiveUp(GiveUp {
                module: name.to_string(),
                epoch: Some(epoch),
                reason: format!(
                    "{reason}; failover.max_nodes = {} reached (tried: {tried_list})",
                    m.spec.failover.max_nodes
                ),
            }));
            return;
        }
        match self.eligible(m, &tried, 1).pop() {
            Some(node) => {
                self.shift_load(from, false);
                self.place(name, node, Some(epoch), PlaceCause::Failover { reason });
            }
            None => {
                let absent = self.unavailable(m, &tried);
                if absent.is_empty() {
                    self.push(Transition::GiveUp(GiveUp {
                        module: name.to_string(),
                        epoch: Some(epoch),
                        reason: format!(
                            "{reason}; no eligible node left for failover (tried: {tried_list})"
                        ),
                    }));
                    return;
                }
                // Nodes that may come back: wait for one rather than fail
                // for good because of a partition or an outage.
                self.await_node(name, m, epoch, &reason, &absent, &tried);
            }
        }
    }

    /// Moves the module off `from`, a node that was lost: to the best ready
    /// node that has not failed it in this episode, or, when none is ready,
    /// it waits for one. Never gives up: losing nodes is not the module
    /// failing.
    fn relocate(&mut self, name: &str, m: &ModuleRecord, epoch: Epoch, from: &str, reason: String) {
        let exclude = super::next_node::failover_exclude(m, from);
        if let Some(node) = self.eligible(m, &exclude, 1).pop() {
            self.shift_load(from, false);
            self.place(name, node, Some(epoch), PlaceCause::NodeLost { reason });
            return;
        }
        let mut waiting = self.unavailable(m, &exclude);
        waiting.insert(0, from.to_string());
        self.await_node(name, m, epoch, &reason, &waiting, &exclude);
    }

    fn await_node(
        &mut self,
        name: &str,
        m: &ModuleRecord,
        epoch: Epoch,
        reason: &str,
        not_ready: &[String],
        tried: &BTreeSet<&str>,
    ) {
        let tried = tried.iter().copied().collect::<Vec<_>>().join(", ");
        let reason = format!(
            "{reason}; waiting for an eligible node to be ready (not ready: {}; excluded: {tried})",
            not_ready.join(", ")
        );
        if m.state != ModuleState::FailingOver || m.reason.as_ref() != Some(&reason) {
            self.push(Transition::AwaitNode(AwaitNode {
                module: name.to_string(),
                epoch,
                reason,
            }));
        }
    }

    /// A module being removed (`stopped`): once every copy of it is known
    /// stopped, its record goes (`Remove`, event `module_removed`).
    fn finish_removal(&mut self, name: &str, m: &ModuleRecord) {
        let stopped = m.placement.as_ref().is_none_or(|p| {
            [Some(&p.node), p.previous.as_ref()]
                .into_iter()
                .flatten()
                .all(|node| self.copy_stopped(name, node))
        });
        if stopped {
            self.push(Transition::Remove(Remove {
                module: name.to_string(),
            }));
        }
    }

    /// Whether the copy on `prev` is known not to run (or need not be
    /// waited for), so the new placement may start.
    fn released(&self, module: &str, prev: &str, fencing: Fencing) -> bool {
        fencing == Fencing::AtLeastOne || self.copy_stopped(module, prev)
    }

    /// Whether the copy of `module` on `node` is known not to run: the
    /// node is down or forgotten, or its agent's table shows no copy, or a
    /// copy that is down.
    fn copy_stopped(&self, module: &str, node: &str) -> bool {
        match self.health.get(node) {
            None | Some(NodeHealth::Down) => return true,
            _ => {}
        }
        match self.observed.nodes.get(node) {
            Some(obs) if obs.table.is_some() => match obs.module(module) {
                None => true,
                Some((_, status, _)) => status.is_down(),
            },
            _ => false,
        }
    }
}
