//! Pre-staging: the `Prefetch` directives a node's agent gets, so that the
//! configuration package of a module placed elsewhere is already in its
//! cache, verified, when the module fails over to it.
//!
//! For each module the node the module would fail over to next is a pure
//! function of the committed state ([`crate::plan::next_node`], the rule
//! the planner's failover applies; [`crate::plan::next_nodes`] for all
//! modules at once, kept per state index by [`Targets`]). That node's agent
//! is sent `Prefetch { module, epoch, package, depmgr }` with the package
//! the current placement retrieved (`ModuleRecord::package`: no extra
//! depmgr call by the leader). Level-triggered like every directive:
//! repeated in each reply until the node's heartbeats report the module
//! pre-staged at that epoch (report `prestaged`, kept in memory by
//! [`crate::observe::NodeObservation`]); the agent treats repeats as
//! no-ops (it answers from its cache). A new leader knows nothing
//! pre-staged yet: it repeats the directive once, and the agent reports
//! again from its cache.
//!
//! At most [`MAX_PREFETCHES_PER_REPLY`] per reply, in module name order;
//! the rest follow as the first are reported. None while the node's table
//! names another cluster (as for every directive).
//!
//! Pure: functions of their arguments ([`Targets`] is a cache of one).

use std::collections::BTreeMap;

use proto::heartbeat::{Directive, ModuleTable, Prefetch};
use proto::{Epoch, ModuleName, NodeId};

use crate::state::ClusterState;

/// Most `Prefetch` directives in one reply (each carries a package).
pub const MAX_PREFETCHES_PER_REPLY: usize = 8;

/// The `Prefetch` directives for `node`, whose agent has reported
/// `prestaged` (module → epoch of the placement whose package it holds);
/// `targets` are the modules that would fail over to `node` next
/// ([`crate::plan::next_nodes`]`[node]`).
pub fn prefetches_for(
    state: &ClusterState,
    table: &ModuleTable,
    targets: &[ModuleName],
    prestaged: &BTreeMap<ModuleName, Epoch>,
    depmgr: &str,
) -> Vec<Directive> {
    if table.cluster != 0 && table.cluster != state.cluster_id {
        return vec![];
    }
    targets
        .iter()
        .filter_map(|name| {
            let m = state.modules.get(name)?;
            let (p, package) = (m.placement.as_ref()?, m.package.as_ref()?);
            (prestaged.get(name) != Some(&p.epoch)).then(|| {
                Directive::Prefetch(Prefetch {
                    module: name.clone(),
                    epoch: p.epoch,
                    package: package.clone(),
                    depmgr: depmgr.to_string(),
                })
            })
        })
        .take(MAX_PREFETCHES_PER_REPLY)
        .collect()
}

/// [`crate::plan::next_nodes`] of the committed state, computed once per
/// state index (one pass over the modules) and shared by every node's
/// directives (leader memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// The state index it was computed at, and what it computed.
    at: Option<(u64, BTreeMap<NodeId, Vec<ModuleName>>)>,
}

impl Targets {
    /// The modules that would fail over to `node` next, in `state`.
    pub fn of(&mut self, state: &ClusterState, node: &str) -> &[ModuleName] {
        let fresh = matches!(&self.at, Some((index, _)) if *index == state.last_index);
        if !fresh {
            self.at = Some((state.last_index, crate::plan::next_nodes(state)));
        }
        self.at
            .as_ref()
            .and_then(|(_, t)| t.get(node))
            .map_or(&[], Vec::as_slice)
    }
}
