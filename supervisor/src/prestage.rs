//! Pre-staging: the `Prefetch` directives a node's agent gets, so that the
//! configuration package of a module placed elsewhere is already in its
//! cache, verified, when the module fails over to it.
//!
//! For each module the node the module would fail over to next is a pure
//! function of the committed state ([`crate::plan::next_node`], the rule
//! the planner's failover applies; [`crate::plan::next_nodes`] for all
//! modules at once, kept by [`Targets`]). That node's agent
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
//! ## Cost
//! [`crate::plan::next_nodes`] is one pass over every placed module. The
//! leader runs it on a blocking thread, never on a heartbeat's path, on a
//! copy of the committed state, and no sooner than [`Targets::due`]
//! allows after the last run (a gap of [`GAP_PER_COST`] times its cost, at
//! least [`MIN_GAP`]): at most a fifth of a core whatever the fleet's size,
//! and the targets trail the committed state by about one run. A heartbeat
//! takes the latest targets; a stale target only sends a package to a node
//! that no longer needs it, or one too few (the failover installs from
//! depmgr then).
//!
//! Pure: functions of their arguments ([`Targets`] decides with the time
//! it is given).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::heartbeat::{Directive, ModuleTable, Prefetch};
use proto::manifest::ConfigPackage;
use proto::{Epoch, ModuleName, NodeId};

use crate::state::ClusterState;

/// Most `Prefetch` directives in one reply (each carries a package).
pub const MAX_PREFETCHES_PER_REPLY: usize = 8;

/// The `Prefetch` directives for `node`, whose agent has reported
/// `prestaged` (module → epoch of the placement whose package it holds);
/// `targets` are the modules that would fail over to `node` next, with
/// the epoch of their placement when the targets were computed
/// ([`crate::plan::next_nodes`]`[node]`).
///
/// A target reported pre-staged at that epoch costs a lookup in the
/// node's small `prestaged` map only; the others are looked up in the
/// state, and get a directive unless pre-staged at the epoch they have
/// now. So a reply costs lookups in the whole state only for what is
/// left to pre-stage.
pub fn prefetches_for(
    state: &ClusterState,
    table: &ModuleTable,
    targets: &[(ModuleName, Epoch)],
    prestaged: &BTreeMap<ModuleName, Epoch>,
    depmgr: &str,
) -> Vec<Directive> {
    if table.cluster != 0 && table.cluster != state.cluster_id {
        return vec![];
    }
    targets
        .iter()
        .filter(|(name, epoch)| prestaged.get(name) != Some(epoch))
        .filter_map(|(name, _)| {
            let m = state.modules.get(name)?;
            let (p, package) = (m.placement.as_ref()?, m.package.as_ref()?);
            (prestaged.get(name) != Some(&p.epoch)).then(|| {
                Directive::Prefetch(Prefetch {
                    module: name.clone(),
                    epoch: p.epoch,
                    package: ConfigPackage::clone(package),
                    depmgr: depmgr.to_string(),
                })
            })
        })
        .take(MAX_PREFETCHES_PER_REPLY)
        .collect()
}

/// What [`crate::plan::next_nodes`] computed: node -> the modules that
/// would fail over to it next, with the epoch of their placement then.
pub type TargetMap = BTreeMap<NodeId, Vec<(ModuleName, Epoch)>>;

/// Shortest gap between two computations of the targets.
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// The gap after a computation, as a multiple of what it cost: the
/// computations take at most 1 / (1 + this) of a core.
pub const GAP_PER_COST: u32 = 4;

/// [`crate::plan::next_nodes`] of the committed state as the leader last
/// computed it, and when to compute it again (leader memory).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// The state index it was computed at, and what it computed.
    at: Option<(u64, Arc<TargetMap>)>,
    /// A computation is under way.
    running: bool,
    /// When the last computation started and what it cost.
    last: Option<(Instant, Duration)>,
}

impl Targets {
    /// The latest targets and the state index they were computed at
    /// (`None` before the first computation ended).
    pub fn current(&self) -> Option<(u64, Arc<TargetMap>)> {
        self.at.clone()
    }

    /// Whether a computation for the state at `index` should start at
    /// `now`: the targets are older than `index`, none is under way, and
    /// the gap after the last one has passed. When it says yes, one is
    /// counted as under way until [`Targets::done`].
    pub fn due(&mut self, index: u64, now: Instant) -> bool {
        let stale = self.at.as_ref().is_none_or(|(at, _)| *at < index);
        let rested = self.last.is_none_or(|(started, cost)| {
            now.saturating_duration_since(started) >= cost + (cost * GAP_PER_COST).max(MIN_GAP)
        });
        let start = stale && !self.running && rested;
        if start {
            self.running = true;
        }
        start
    }

    /// A computation started at `started` failed at `now` (it panicked):
    /// none is under way, and the next waits the gap as after a success.
    pub fn failed(&mut self, started: Instant, now: Instant) {
        self.running = false;
        self.last = Some((started, now.saturating_duration_since(started)));
    }

    /// A computation started at `started` for the state at `index` ended
    /// at `now` with `map`.
    pub fn done(&mut self, index: u64, map: TargetMap, started: Instant, now: Instant) {
        self.running = false;
        self.last = Some((started, now.saturating_duration_since(started)));
        if self.at.as_ref().is_none_or(|(at, _)| *at <= index) {
            self.at = Some((index, Arc::new(map)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_computed_when_stale_one_at_a_time_and_no_more_than_the_duty_cycle_allows() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Targets::default();
        assert!(t.current().is_none());
        assert!(t.due(5, t0), "nothing computed yet");
        assert!(!t.due(6, t0), "one at a time");
        // It cost 50 ms: the next may start 50 + 4 x 50 = 250 ms after.
        t.done(5, TargetMap::new(), t0, t0 + ms(50));
        assert_eq!(t.current().map(|(i, _)| i), Some(5));
        assert!(!t.due(5, t0 + ms(1000)), "not stale: nothing to do");
        assert!(
            !t.due(6, t0 + ms(249)),
            "stale, but too soon after the last"
        );
        assert!(t.due(6, t0 + ms(250)));
        // A cheap run waits the minimum gap.
        t.done(6, TargetMap::new(), t0 + ms(250), t0 + ms(251));
        assert!(!t.due(7, t0 + ms(340)));
        assert!(t.due(7, t0 + ms(351)));
        // A result older than the one held is not taken.
        t.done(3, TargetMap::new(), t0 + ms(351), t0 + ms(352));
        assert_eq!(t.current().map(|(i, _)| i), Some(6));
        // A computation that failed is no longer under way: the next one
        // starts after the gap, and the targets held stay.
        assert!(t.due(7, t0 + ms(500)));
        assert!(!t.due(7, t0 + ms(700)), "under way");
        t.failed(t0 + ms(500), t0 + ms(510));
        assert!(!t.due(7, t0 + ms(609)), "too soon after the failure");
        assert!(t.due(7, t0 + ms(610)));
        assert_eq!(t.current().map(|(i, _)| i), Some(6));
    }
}
