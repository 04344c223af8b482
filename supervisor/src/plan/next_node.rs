//! Where a module goes next: the one rule that picks a node for a failover
//! or a move off a lost node, shared by the planner (which applies it to
//! the node health and load of its pass) and by pre-staging (which applies
//! it to the committed state, [`next_node`] and [`Ranking`]), so the node a
//! package is pre-staged on and the node the failover then picks cannot
//! drift apart.
//!
//! The rule: among the nodes the module may run on ([`admits`]: not
//! draining, labels matching), not its current node and not a node that
//! already failed it in this failover episode ([`failover_exclude`]), the
//! ready one with the fewest modules, then the first by name ([`rank`]).
//!
//! Pure: functions of their arguments.

use std::collections::{BTreeMap, BTreeSet};

use proto::{Epoch, NodeId};

use crate::state::{ClusterState, ModuleRecord, ModuleState, NodeHealth, NodeRecord};

/// The nodes a failover (or a move off a lost node) of `m` away from `from`
/// must not go to: `from` and the nodes that failed `m` in this episode.
pub fn failover_exclude<'a>(m: &'a ModuleRecord, from: &'a str) -> BTreeSet<&'a str> {
    let mut exclude: BTreeSet<&str> = m.tried_nodes.iter().map(String::as_str).collect();
    exclude.insert(from);
    exclude
}

/// Whether `m` may run on node `name` whatever its health: not draining,
/// labels matching, not in `exclude`.
pub fn admits(m: &ModuleRecord, name: &str, n: &NodeRecord, exclude: &BTreeSet<&str>) -> bool {
    !n.draining
        && !exclude.contains(name)
        && m.spec
            .placement
            .labels
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
}

/// Nodes `m` may run on whatever their health ([`admits`]), in name order.
pub fn candidates<'s, 'q>(
    state: &'s ClusterState,
    m: &'q ModuleRecord,
    exclude: &'q BTreeSet<&'q str>,
) -> impl Iterator<Item = &'s NodeId> + 'q
where
    's: 'q,
{
    state
        .nodes
        .iter()
        .filter(move |(name, n)| admits(m, name, n, exclude))
        .map(|(name, _)| name)
}

/// The `candidates` that are ready by `health`, best first: fewest modules
/// by `load`, then name: the rule, by ranking every node. The planner keeps
/// a ranking in step with its pass's load instead (`Planner::eligible`),
/// tested against this one.
#[cfg(test)]
pub fn rank<'s>(
    candidates: impl Iterator<Item = &'s NodeId>,
    health: impl Fn(&str) -> Option<NodeHealth>,
    load: impl Fn(&str) -> usize,
) -> Vec<&'s NodeId> {
    let mut nodes: Vec<(usize, &NodeId)> = candidates
        .filter(|name| health(name.as_str()) == Some(NodeHealth::Ready))
        .map(|name| (load(name.as_str()), name))
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, n)| n).collect()
}

/// The committed state's ready nodes in [`rank`]'s order (fewest modules,
/// then name), computed once to ask about many modules.
#[derive(Debug)]
pub struct Ranking<'s> {
    ready: Vec<(&'s NodeId, &'s NodeRecord)>,
}

impl<'s> Ranking<'s> {
    pub fn new(state: &'s ClusterState) -> Ranking<'s> {
        let load = state.load_by_node();
        let mut ready: Vec<(usize, &NodeId, &NodeRecord)> = state
            .nodes
            .iter()
            .filter(|(_, n)| n.health == NodeHealth::Ready)
            .map(|(name, n)| (load.get(name.as_str()).copied().unwrap_or(0), name, n))
            .collect();
        ready.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ranking {
            ready: ready.into_iter().map(|(_, name, n)| (name, n)).collect(),
        }
    }

    /// [`next_node`] on the ranking's state.
    pub fn next_node(&self, m: &ModuleRecord) -> Option<&'s NodeId> {
        if matches!(m.state, ModuleState::Failed | ModuleState::Stopped) {
            return None;
        }
        let p = m.placement.as_ref()?;
        let exclude = failover_exclude(m, &p.node);
        self.ready
            .iter()
            .find(|(name, n)| admits(m, name, n, &exclude))
            .map(|(name, _)| *name)
    }
}

/// The node `m` would fail over (or move, when its node is lost) to next,
/// judged on the committed state: the rule above with the recorded node
/// health and each node's committed load. `None` when `m` is not placed,
/// is failed or stopped, or no other node is eligible. A planning pass
/// picks the same node when nothing else in that pass changes node health
/// or load before it (a pass counts its own placements).
pub fn next_node<'s>(state: &'s ClusterState, m: &ModuleRecord) -> Option<&'s NodeId> {
    Ranking::new(state).next_node(m)
}

/// For every node, the modules that would fail over to it next and have a
/// package retrieved for their placement (what pre-staging sends it), in
/// module name order, each with the epoch of its placement. One walk over
/// the modules in order (no lookup by name: the leader asks this of a
/// million modules).
pub fn next_nodes(state: &ClusterState) -> BTreeMap<NodeId, Vec<(proto::ModuleName, Epoch)>> {
    let ranking = Ranking::new(state);
    let mut out: BTreeMap<NodeId, Vec<(proto::ModuleName, Epoch)>> = BTreeMap::new();
    for (name, m) in state.modules.iter() {
        let (Some(p), Some(_)) = (&m.placement, &m.package) else {
            continue;
        };
        if let Some(node) = ranking.next_node(m) {
            out.entry(node.clone())
                .or_default()
                .push((name.clone(), p.epoch));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{
        Batch, Deploy, Drain, Place, PlaceCause, RegisterNode, SetNodeHealth, Transition,
    };
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Deploy(usize, bool),
        Place(usize, usize, bool),
        Health(usize, u8),
        Drain(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6usize, any::<bool>()).prop_map(|(m, l)| Op::Deploy(m, l)),
            (0..6usize, 0..4usize, any::<bool>()).prop_map(|(m, n, f)| Op::Place(m, n, f)),
            (0..4usize, 0..3u8).prop_map(|(n, h)| Op::Health(n, h)),
            (0..4usize).prop_map(Op::Drain),
        ]
    }

    proptest! {
        /// The ranking computed once answers as the planner's rule does
        /// (`rank` over `candidates`, excluding the current and tried
        /// nodes, on the committed health and load), for any state.
        #[test]
        fn ranking_agrees_with_the_planners_rule(ops in proptest::collection::vec(op(), 1..40)) {
            let nodes = ["a", "b", "c", "d"];
            let mut s = ClusterState::default();
            let mut index = 0;
            let mut apply = |s: &mut ClusterState, t: Transition| {
                index += 1;
                s.apply(index, &Batch { at_ms: index, transitions: vec![t] });
            };
            for (i, n) in nodes.iter().enumerate() {
                let labels = if i % 2 == 0 {
                    BTreeMap::from([("zone".to_string(), "east".to_string())])
                } else {
                    BTreeMap::new()
                };
                apply(&mut s, Transition::RegisterNode(RegisterNode {
                    node: n.to_string(), addr: format!("{n}:1"), labels,
                }));
            }
            for o in ops {
                let t = match o {
                    Op::Deploy(m, labelled) => {
                        let mut spec: proto::spec::ModuleSpec = serde_json::from_value(serde_json::json!({
                            "name": format!("m{m}"), "package": {"name": "p", "version": "1.0.0"}
                        })).expect("spec");
                        if labelled {
                            spec.placement.labels.insert("zone".into(), "east".into());
                        }
                        Transition::Deploy(Deploy { spec })
                    }
                    Op::Place(m, n, failover) => {
                        let name = format!("m{m}");
                        let expect = s.modules.get(&name).and_then(|r| r.placement.as_ref()).map(|p| p.epoch);
                        let cause = if failover { PlaceCause::Failover { reason: "x".into() } } else { PlaceCause::Initial };
                        Transition::Place(Place { module: name, node: nodes[n].into(), expect_epoch: expect, cause })
                    }
                    Op::Health(n, h) => Transition::SetNodeHealth(SetNodeHealth {
                        node: nodes[n].into(),
                        health: [NodeHealth::Ready, NodeHealth::Suspect, NodeHealth::Down][h as usize],
                        detail: String::new(),
                    }),
                    Op::Drain(n) => Transition::Drain(Drain { node: nodes[n].into() }),
                };
                apply(&mut s, t);
                let load = s.load_by_node();
                for m in s.modules.values() {
                    let planner = m.placement.as_ref().and_then(|p| {
                        let exclude = failover_exclude(m, &p.node);
                        rank(
                            candidates(&s, m, &exclude),
                            |n| s.nodes.get(n).map(|r| r.health),
                            |n| load.get(n).copied().unwrap_or(0),
                        )
                        .first()
                        .map(|n| (*n).clone())
                    });
                    let planner = planner.filter(|_| !matches!(m.state, ModuleState::Failed | ModuleState::Stopped));
                    prop_assert_eq!(next_node(&s, m).cloned(), planner);
                }
                // next_nodes, from the placed index, says the same for every
                // module with a package, in name order.
                let mut expected: BTreeMap<NodeId, Vec<(String, Epoch)>> = BTreeMap::new();
                for (name, m) in &s.modules {
                    if let Some(node) = next_node(&s, m).filter(|_| m.package.is_some()) {
                        let epoch = m.placement.as_ref().expect("a next node needs a placement").epoch;
                        expected.entry(node.clone()).or_default().push((name.clone(), epoch));
                    }
                }
                prop_assert_eq!(next_nodes(&s), expected);
            }
        }
    }
}
