//! The leader's reconciler: a pure `plan(state, observed, now) -> Plan`.
//!
//! Level-triggered and idempotent (the Kubernetes controller pattern): the
//! plan looks at the replicated [`ClusterState`] and at what the leader has
//! observed from heartbeats ([`Observed`], see [`crate::observe`]), and says
//! which transitions to commit and which configuration packages to
//! retrieve. Running it twice on the same inputs gives the same plan; a
//! transition that was already committed is rejected by `apply`'s
//! preconditions, so a repeated plan is harmless. What an agent is told is
//! derived from the committed state only ([`crate::directives`]), so it has
//! always been decided durably first.
//!
//! Pure: no clock (`now` is the leader's clock, passed in), no randomness,
//! no I/O; ordered maps only, so a plan is deterministic.
//!
//! ## One pass
//! 0. the lease terms: the replicated terms ([`crate::state::LeaseTerms`])
//!    are raised at once to cover this leader's own flags, lowered to them
//!    only once every lease an earlier leader granted has ended; the
//!    failure detector uses the longer of its own and the recorded terms;
//!    then the cluster's identity: recorded once, by the first pass that
//!    finds none ([`RecordClusterId`], see `crate::state::identity`);
//! 1. `detector`: registration and the failure detector (node health from
//!    heartbeat silence: suspect after the TTL, down after the lease plus
//!    the drift margin);
//! 2. `recovery`, for each module in [`Scope`]: first placement, restores,
//!    failover, moves off lost nodes, waiting for a node;
//! 3. `drain`: moves off draining nodes, one module per node at a time.
//!
//! Between 1 and 2, `versions`: package versions that failed on enough
//! nodes are quarantined; and for each module, before its recovery, its
//! rollout is placed, a module on a quarantined version goes back to a good
//! revision or waits, and a failing rollout is reverted (see
//! `crate::state::Versions`).
//!
//! A pass sees its own decisions: node health after step 1, and the load of
//! each node including the placements it made, so two modules failing over
//! together spread out.
//!
//! ## The recovery flow (claims 1 and 2)
//! For a module placed on node N at epoch E:
//! 1. heartbeat shows it down → `FailureDetected` + `RestoreOrdered(1)`;
//!    the restore directive goes out with the next reply to N;
//! 2. N's table shows restore `seq` executed: running for `min_healthy_ms` →
//!    `Healthy` (restored); down again → next `RestoreOrdered`, or after
//!    `restart.attempts`, failover;
//! 3. failover: a node that is ready, matches the labels, has the fewest
//!    modules and has not failed this module yet → `Place` (new epoch) →
//!    package retrieved from depmgr (`PackageRetrieved`) → install directive
//!    → healthy → `Healthy` (failover completed); install or first start
//!    fails → `InstallFailed` and the next failover node (claim 2), up to
//!    `failover.max_nodes`, then `GiveUp`;
//! 4. a node silent for the TTL is suspect; silent for the lease plus the
//!    drift margin it is down, and its modules move (`Place{NodeLost}`;
//!    at-least-one modules already when it is suspect). Losing a node is
//!    not the module failing: it spends no tried node and no
//!    `failover.max_nodes`, and with no ready node the module waits
//!    (`AwaitNode`) instead of failing.

mod detector;
mod drain;
mod next_node;
mod recovery;
mod versions;
mod whatif;

pub use next_node::{Ranking, next_node, next_nodes};
pub use whatif::what_if;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use proto::manifest::PackageRef;
use proto::{Epoch, ModuleName, NodeId};

use crate::observe::Observed;
use crate::state::{
    Changes, ClusterState, LeaseTerms, ModuleRecord, NodeHealth, Place, PlaceCause,
    RecordClusterId, RecordLease, Transition,
};

/// Timing of the failure detector (all in ms), and the quarantine policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silent this long: suspect.
    pub heartbeat_ttl_ms: u64,
    /// Lease granted to agents.
    pub lease_ms: u64,
    /// Clock-drift margin added to the lease before a node is declared down.
    pub drift_ms: u64,
    /// When a package version failed on this many distinct nodes within
    /// `quarantine.window_ms` it is quarantined (see `versions`).
    pub quarantine: QuarantinePolicy,
}

/// When a failing package version is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Distinct nodes (0: never quarantine).
    pub nodes: u32,
    pub window_ms: u64,
}

impl QuarantinePolicy {
    /// Two nodes within ten minutes.
    pub const DEFAULT: QuarantinePolicy = QuarantinePolicy {
        nodes: 2,
        window_ms: 10 * 60 * 1000,
    };
    /// Never quarantine.
    pub const OFF: QuarantinePolicy = QuarantinePolicy {
        nodes: 0,
        window_ms: 0,
    };
}

impl Timing {
    /// Silent this long: down (never before the lease plus the drift margin).
    pub fn down_after_ms(&self) -> u64 {
        self.heartbeat_ttl_ms
            .max(self.lease_ms.saturating_add(self.drift_ms))
    }

    /// This replica's own lease terms (its flags).
    pub fn terms(&self) -> LeaseTerms {
        LeaseTerms {
            lease_ms: self.lease_ms,
            drift_ms: self.drift_ms,
        }
    }

    /// The timing the failure detector uses: the longer of this replica's
    /// terms and the replicated ones, which cover every lease still held.
    pub fn covering(self, recorded: LeaseTerms) -> Timing {
        let t = self.terms().max(recorded);
        Timing {
            heartbeat_ttl_ms: self.heartbeat_ttl_ms,
            lease_ms: t.lease_ms,
            drift_ms: t.drift_ms,
            quarantine: self.quarantine,
        }
    }
}

/// The lease a leader with `timing` may grant under the `recorded` terms:
/// its own, but never more than the replicated lease (0, no lease, before
/// any terms are recorded).
pub fn grantable_lease_ms(timing: Timing, recorded: LeaseTerms) -> u64 {
    timing.lease_ms.min(recorded.lease_ms)
}

/// A configuration package to retrieve from depmgr for a placement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fetch {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub package: PackageRef,
}

/// The output of one planning pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub transitions: Vec<Transition>,
    pub fetches: Vec<Fetch>,
    /// The last module a [`Sweep`] looked at, where the next one starts
    /// (`None`: start from the first).
    pub swept_to: Option<ModuleName>,
}

/// Which modules a pass looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'s> {
    /// Every module.
    All,
    /// What changed since the previous pass, which planned when the state
    /// was at log index `since` (see [`ClusterState::changes_since`]):
    /// - modules not settled (installing, restoring, failing over, being
    ///   removed, failed, a rollout under way or held, an old copy to
    ///   release);
    /// - modules any transition changed since `since`;
    /// - modules placed on the `dirty` nodes (whose heartbeats changed) or
    ///   on nodes whose health this pass changes;
    /// - modules waiting for their first placement, when a change since
    ///   `since` or in this pass may let them in: a node registered,
    ///   changed, drained, undrained, removed or changing health, a
    ///   package quarantine set or lifted;
    /// - and, with `sweep`, the next slice of all modules in name order:
    ///   the safety net, whose cost per pass is bounded by the slice.
    ///
    /// A running module elsewhere cannot need anything until its node's
    /// heartbeat or health changes. When a change since `since` may
    /// concern any module (a quarantine), or more changes were applied
    /// than the state keeps track of ([`crate::state::TOUCHES_KEPT`]), the
    /// pass looks at every module.
    Changed {
        dirty: &'s BTreeSet<NodeId>,
        since: u64,
        sweep: Option<Sweep<'s>>,
    },
}

/// A slice of all modules, in name order: the `count` after `after` (from
/// the first when `None`). The plan says where the slice ended
/// ([`Plan::swept_to`]), where the next one starts.
#[derive(Debug, Clone, Copy)]
pub struct Sweep<'s> {
    pub after: Option<&'s str>,
    pub count: usize,
}

/// Plans the next transitions over every module. Pure: `now` is the
/// leader's clock in ms.
pub fn plan(state: &ClusterState, observed: &Observed, now: u64, timing: Timing) -> Plan {
    plan_scoped(state, observed, now, timing, Scope::All)
}

/// Plans the next transitions for the modules in `scope`. Pure.
pub fn plan_scoped(
    state: &ClusterState,
    observed: &Observed,
    now: u64,
    timing: Timing,
    scope: Scope<'_>,
) -> Plan {
    let mut p = Planner {
        state,
        observed,
        now,
        timing: timing.covering(state.lease),
        health: state
            .nodes
            .iter()
            .map(|(n, r)| (n.as_str(), r.health))
            .collect(),
        health_changed: BTreeSet::new(),
        load: None,
        ranked: None,
        plan: Plan::default(),
    };
    p.lease(timing);
    if state.cluster_id == 0 {
        p.push(Transition::RecordClusterId(RecordClusterId {}));
    }
    p.nodes();
    p.quarantines();
    let changed = match scope {
        Scope::All => None,
        Scope::Changed {
            dirty,
            since,
            sweep,
        } => state
            .changes_since(since)
            .map(|changes| (changes, dirty, sweep)),
    };
    match changed {
        None => {
            for (name, m) in &state.modules {
                p.module(name, m);
            }
        }
        Some((changes, dirty, sweep)) => {
            let names = p.in_scope(changes, dirty, sweep);
            for name in names {
                if let Some((name, m)) = state.modules.get_key_value(name) {
                    p.module(name, m);
                }
            }
        }
    }
    p.drains();
    p.fleet();
    p.plan
}

/// One planning pass: its inputs, what it decided so far, and what those
/// decisions changed (node health, load) for the decisions after them.
struct Planner<'a> {
    state: &'a ClusterState,
    observed: &'a Observed,
    now: u64,
    timing: Timing,
    /// Node health after this pass's node transitions.
    health: BTreeMap<&'a str, NodeHealth>,
    /// Nodes whose health this pass changes.
    health_changed: BTreeSet<&'a str>,
    /// Modules per node, including placements made in this pass (computed
    /// when first needed).
    load: Option<BTreeMap<String, usize>>,
    /// The state's nodes by (load, name), kept with `load` (built when
    /// first needed): [`Planner::eligible`] walks it from the front and
    /// stops at what it needs, instead of ranking every node for every
    /// module (which at 10,000 nodes was most of a pass placing modules).
    ranked: Option<BTreeSet<(usize, String)>>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn push(&mut self, t: Transition) {
        self.plan.transitions.push(t);
    }

    /// Keeps the replicated lease terms covering every lease that may be
    /// held (see `crate::state::lease`): raised at once to cover this
    /// leader's own terms; lowered to them only once the recorded lease
    /// plus drift has passed since this replica became leader.
    fn lease(&mut self, own: Timing) {
        let own = own.terms();
        let recorded = self.state.lease;
        if own == recorded {
            return;
        }
        let since = self.now.saturating_sub(self.observed.leader_since_ms);
        let settled = since >= recorded.lease_ms.saturating_add(recorded.drift_ms);
        let terms = if settled { own } else { own.max(recorded) };
        if terms != recorded {
            self.push(Transition::RecordLease(RecordLease {
                terms,
                expect: recorded,
            }));
        }
    }

    /// Modules per node, including this pass's placements.
    fn load(&mut self) -> &mut BTreeMap<String, usize> {
        let state = self.state;
        self.load.get_or_insert_with(|| {
            state
                .load_by_node()
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect()
        })
    }

    /// Counts one module more (`up`) or one fewer on `node` in this pass's
    /// load, and keeps the ranking in step.
    fn shift_load(&mut self, node: &str, up: bool) {
        let load = self.load();
        let (old, new) = match load.get_mut(node) {
            Some(c) => {
                let old = *c;
                *c = if up { old + 1 } else { old.saturating_sub(1) };
                (old, *c)
            }
            None if up => {
                load.insert(node.to_string(), 1);
                (0, 1)
            }
            None => return,
        };
        if let Some(ranked) = &mut self.ranked
            && self.state.nodes.contains_key(node)
        {
            ranked.remove(&(old, node.to_string()));
            ranked.insert((new, node.to_string()));
        }
    }

    /// The first `n` eligible nodes for `m`, best first (ready, fewest
    /// modules, then name), excluding `exclude`: the rule of
    /// [`next_node`] ([`next_node::rank`] of [`next_node::candidates`]),
    /// on this pass's health and load.
    fn eligible(&mut self, m: &ModuleRecord, exclude: &BTreeSet<&str>, n: usize) -> Vec<String> {
        if self.ranked.is_none() {
            let state = self.state;
            let load = self.load();
            let ranked = state
                .nodes
                .keys()
                .map(|name| (load.get(name).copied().unwrap_or(0), name.clone()))
                .collect();
            self.ranked = Some(ranked);
        }
        self.ranked
            .iter()
            .flatten()
            .filter(|(_, name)| self.is_eligible(m, name, exclude))
            .take(n)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Whether `node` is among the eligible nodes for `m` ([`Planner::eligible`]).
    fn is_eligible(&self, m: &ModuleRecord, node: &str, exclude: &BTreeSet<&str>) -> bool {
        self.health.get(node) == Some(&NodeHealth::Ready)
            && self
                .state
                .nodes
                .get(node)
                .is_some_and(|r| next_node::admits(m, node, r, exclude))
    }

    /// Nodes that would be eligible for `m` but are not ready (suspect or
    /// down), excluding `exclude`.
    fn unavailable(&self, m: &ModuleRecord, exclude: &BTreeSet<&str>) -> Vec<String> {
        self.candidates(m, exclude)
            .filter(|name| self.health.get(name.as_str()) != Some(&NodeHealth::Ready))
            .cloned()
            .collect()
    }

    /// Nodes `m` may run on whatever their health: not draining, labels
    /// matching, not in `exclude`.
    fn candidates<'s>(
        &'s self,
        m: &'s ModuleRecord,
        exclude: &'s BTreeSet<&str>,
    ) -> impl Iterator<Item = &'a String> + 's {
        next_node::candidates(self.state, m, exclude)
    }

    /// The modules a [`Scope::Changed`] pass looks at, in name order (see
    /// there); records where the sweep ended.
    fn in_scope(
        &mut self,
        changes: Changes<'a>,
        dirty: &BTreeSet<NodeId>,
        sweep: Option<Sweep<'_>>,
    ) -> BTreeSet<&'a str> {
        let state = self.state;
        // Whether a module waiting for its first placement may find a node
        // now that it did not find in the previous pass.
        let placeable = changes.placeable
            || self
                .plan
                .transitions
                .iter()
                .any(Transition::may_let_waiting_in);
        let mut names = changes.modules;
        let nodes = dirty
            .iter()
            .map(String::as_str)
            .chain(self.health_changed.iter().copied());
        for node in nodes {
            if let Some(placed) = state.placed.get(node) {
                names.extend(placed.iter().map(String::as_str));
            }
        }
        if placeable {
            names.extend(state.waiting());
        }
        if let Some(sweep) = sweep {
            let slice = match sweep.after {
                Some(after) => state
                    .modules
                    .range::<_, str>((Bound::Excluded(after), Bound::Unbounded)),
                None => state.modules.range::<_, str>(..),
            };
            let slice: Vec<&'a String> = slice.take(sweep.count).map(|(n, _)| n).collect();
            // A short slice reached the end: the next starts from the first.
            self.plan.swept_to = if slice.len() == sweep.count {
                slice.last().map(|n| n.to_string())
            } else {
                None
            };
            names.extend(slice.into_iter().map(String::as_str));
        }
        names
    }

    /// Plans a placement, and counts it in the load of `node`.
    fn place(&mut self, module: &str, node: String, expect: Option<Epoch>, cause: PlaceCause) {
        self.shift_load(&node, true);
        self.push(Transition::Place(Place {
            module: module.to_string(),
            node,
            expect_epoch: expect,
            cause,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Deploy, Drain, RegisterNode, SetNodeHealth};
    use proptest::prelude::*;

    const NODES: [&str; 5] = ["a", "b", "c", "d", "e"];

    #[derive(Debug, Clone)]
    enum Op {
        Shift(usize, bool),
        Check(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..NODES.len(), any::<bool>()).prop_map(|(n, up)| Op::Shift(n, up)),
            (0..32u8).prop_map(Op::Check),
        ]
    }

    proptest! {
        /// The pass's ranking, kept in step with its load, gives the nodes
        /// that ranking every node gives ([`next_node::rank`]), in the same
        /// order, whatever placements and releases the pass counted and
        /// whichever nodes are excluded, suspect, down or draining.
        #[test]
        fn the_kept_ranking_agrees_with_ranking_every_node(
            health in proptest::collection::vec(0..3u8, NODES.len()),
            drained in 0..NODES.len() + 1,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let mut s = ClusterState::default();
            let apply = |s: &mut ClusterState, t: Transition| s.apply_next(t);
            for (n, h) in NODES.iter().zip(&health) {
                apply(&mut s, Transition::RegisterNode(RegisterNode { node: n.to_string(), addr: format!("{n}:1"), labels: BTreeMap::new() }));
                let health = [NodeHealth::Ready, NodeHealth::Suspect, NodeHealth::Down][*h as usize];
                apply(&mut s, Transition::SetNodeHealth(SetNodeHealth { node: n.to_string(), health, detail: String::new() }));
            }
            if let Some(n) = NODES.get(drained) {
                apply(&mut s, Transition::Drain(Drain { node: n.to_string() }));
            }
            let spec: proto::spec::ModuleSpec = serde_json::from_value(serde_json::json!({
                "name": "m", "package": {"name": "p", "version": "1.0.0"}
            })).expect("spec");
            apply(&mut s, Transition::Deploy(Deploy { spec }));
            let m = s.modules["m"].clone();
            let observed = Observed::default();
            let mut p = Planner {
                state: &s,
                observed: &observed,
                now: 0,
                timing: crate::scenarios::TIMING,
                health: s.nodes.iter().map(|(n, r)| (n.as_str(), r.health)).collect(),
                health_changed: BTreeSet::new(),
                load: None,
                ranked: None,
                plan: Plan::default(),
            };
            for o in ops {
                match o {
                    Op::Shift(n, up) => p.shift_load(NODES[n], up),
                    Op::Check(mask) => {
                        let exclude: BTreeSet<&str> = NODES
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, n)| *n)
                            .collect();
                        let load = p.load().clone();
                        let expected: Vec<String> = next_node::rank(
                            next_node::candidates(&s, &m, &exclude),
                            |n| p.health.get(n).copied(),
                            |n| load.get(n).copied().unwrap_or(0),
                        )
                        .into_iter()
                        .cloned()
                        .collect();
                        prop_assert_eq!(p.eligible(&m, &exclude, usize::MAX), expected.clone());
                        prop_assert_eq!(p.eligible(&m, &exclude, 1), expected.iter().take(1).cloned().collect::<Vec<_>>());
                        for n in NODES {
                            prop_assert_eq!(p.is_eligible(&m, n, &exclude), expected.iter().any(|e| e == n));
                        }
                    }
                }
            }
        }
    }
}
