//! Registration and the failure detector, the first step of a pass.
//!
//! A node whose agent's table was heard is registered, or updated when its
//! address or labels changed; a first registration whose table names
//! another cluster is recorded as such (`RegisterNodeFromOtherCluster`). Each registered node's health follows from
//! how long it has been silent, on the leader's clock: suspect after the
//! heartbeat TTL, down after the lease plus the clock-drift margin (never
//! earlier, so an agent cut off has stopped its at-most-one modules before
//! they move), ready again when heard. Silence counts from when this
//! replica became leader at the earliest: a new leader gives every node a
//! grace window instead of declaring the fleet down after an election.
//! Only a verdict that differs from the committed one is proposed; the
//! pass then plans against the new verdicts.

use crate::state::{
    NodeHealth, RegisterNode, RegisterNodeFromOtherCluster, SetNodeHealth, Transition,
};

use itertools::{EitherOrBoth, Itertools};

use super::Planner;

impl Planner<'_> {
    /// Registration and the failure detector.
    pub(super) fn nodes(&mut self) {
        // The state's nodes and the observed ones are both in name order:
        // walked side by side, never looked up in each other (10,000 nodes
        // at every pass).
        let (state, observed) = (self.state, self.observed);
        let joined = || {
            state
                .nodes
                .iter()
                .merge_join_by(observed.nodes.iter(), |(a, _), (b, _)| a.cmp(b))
        };
        for pair in joined() {
            let (node, known, obs) = match pair {
                EitherOrBoth::Both((node, record), (_, obs)) => (node, Some(record), obs),
                EitherOrBoth::Right((node, obs)) => (node, None, obs),
                EitherOrBoth::Left(_) => continue,
            };
            let Some(table) = &obs.table else { continue };
            // A node an operator removed (it was down) is registered again
            // only when its agent is heard again, not from what this leader
            // heard of it before it went down.
            let fresh = self.now.saturating_sub(obs.last_seen_ms) < self.timing.down_after_ms();
            if known.is_none() && !fresh {
                continue;
            }
            if known.is_none_or(|n| n.addr != table.addr || n.labels != table.labels) {
                let register = RegisterNode {
                    node: node.clone(),
                    addr: table.addr.clone(),
                    labels: table.labels.clone(),
                };
                // An agent that last served another cluster: recorded when
                // the node first registers (see `crate::state::identity`).
                let from_other =
                    known.is_none() && table.cluster != 0 && table.cluster != self.state.cluster_id;
                self.push(if from_other {
                    Transition::RegisterNodeFromOtherCluster(RegisterNodeFromOtherCluster {
                        register,
                        from_cluster: table.cluster,
                    })
                } else {
                    Transition::RegisterNode(register)
                });
                if known.is_none() {
                    self.health.insert(node.as_str(), NodeHealth::Ready);
                }
            }
        }
        for pair in joined() {
            let (node, record, heard) = match pair {
                EitherOrBoth::Both((node, record), (_, obs)) => (node, record, Some(obs)),
                EitherOrBoth::Left((node, record)) => (node, record, None),
                EitherOrBoth::Right(_) => continue,
            };
            let last = heard
                .map_or(self.observed.leader_since_ms, |o| o.last_seen_ms)
                .max(self.observed.leader_since_ms);
            let silent = self.now.saturating_sub(last);
            let desired = if silent >= self.timing.down_after_ms() {
                NodeHealth::Down
            } else if silent >= self.timing.heartbeat_ttl_ms {
                NodeHealth::Suspect
            } else if heard.is_some() {
                NodeHealth::Ready
            } else {
                record.health
            };
            if desired != record.health {
                self.health.insert(node.as_str(), desired);
                self.health_changed.insert(node.as_str());
                self.push(Transition::SetNodeHealth(SetNodeHealth {
                    node: node.clone(),
                    health: desired,
                    detail: format!("no heartbeat for {silent} ms"),
                }));
            }
        }
    }
}
