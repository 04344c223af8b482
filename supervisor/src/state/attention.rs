//! What the planner's scoped passes look at: an index kept by `apply`
//! beside the state, so that a pass costs what changed, not what exists.
//!
//! - `unsettled`: modules that may need a step with nothing else changing
//!   (installing, restoring, failing over, being removed or stopped,
//!   failed, a rollout under way or held, an old copy still to release):
//!   every scoped pass looks at them;
//! - `waiting`: modules waiting for their first placement, looked at again
//!   only after a change that may let them in (`placeable`);
//! - `touched`: the modules each recent log index changed, so a pass looks
//!   at what changed since the previous one (a bounded window: a pass
//!   whose previous pass is older than the window looks at everything);
//! - `wide`: the index of the last change that may concern any module (a
//!   package quarantine set or lifted), after which a pass looks at all.
//!
//! Beside it, for the heartbeat replies: the index at which each node's
//! directives last may have changed (`directed`), so the leader reuses a
//! node's directives until a change concerns that node, instead of until
//! any change at all ([`ClusterState::directives_changed_at`]).
//!
//! A running module whose copy is settled and whose node's heartbeat does
//! not change needs nothing, so it is in none of these: the leader finds
//! it through the node's heartbeat (its dirty nodes) or the failure
//! detector (a node's health changing), and the periodic sweep over a
//! bounded slice of all modules is the safety net (see `plan::Scope`).
//!
//! Not stored: a decoded state builds it afresh ([`Attention::of`]), with
//! every change dated at its own index. Not part of the state's value
//! either: two states equal but for it compare equal.

use std::collections::{BTreeSet, HashMap, VecDeque};

use proto::{ModuleName, NodeId};

use super::{ClusterState, ModuleState};

/// How many module changes the window keeps (about 3 MiB of names): a
/// pass sees everything that changed since the previous pass as long as
/// fewer than this many changes were applied in between.
pub const TOUCHES_KEPT: usize = 1 << 16;

/// The planner's index (see the module doc).
#[derive(Debug, Clone, Default)]
pub(super) struct Attention {
    /// Index of the last change that may let a waiting module in: a
    /// node's record changed (registered, relabelled, health, drained,
    /// undrained, removed) or a package quarantine set or lifted.
    pub(super) placeable: u64,
    /// Index of the last change that may concern any module.
    pub(super) wide: u64,
    /// (log index, module) for the last [`TOUCHES_KEPT`] module changes,
    /// oldest first.
    touched: VecDeque<(u64, ModuleName)>,
    /// Changes at or below this index may have left the window.
    floor: u64,
    /// Left out of its state ([`Attention::left_out`]: a
    /// [`ClusterState::frozen`] copy); otherwise built for it
    /// ([`Attention::of`], or the empty state's, kept by `apply`).
    left_out: bool,
    unsettled: BTreeSet<ModuleName>,
    waiting: BTreeSet<ModuleName>,
    /// Index of the last change that may concern a node's directives, by
    /// node (one entry per node ever concerned: the nodes are few).
    directed: HashMap<NodeId, u64>,
    /// Index of the last change that may concern every node's directives
    /// (a quarantine set or lifted, the cluster id recorded); for a
    /// decoded state, its own last index.
    directed_all: u64,
}

impl PartialEq for Attention {
    fn eq(&self, _: &Attention) -> bool {
        true
    }
}

impl Eq for Attention {}

/// Which class a module is in.
fn classify(state: &ClusterState, name: &str) -> Option<Class> {
    let m = state.modules.get(name)?;
    let versions_busy = state.versions.get(name).is_some_and(|v| {
        v.held.is_some()
            || v.rollout
                .as_ref()
                .is_some_and(|r| r.needs_placing() || r.in_progress())
    });
    Some(match &m.placement {
        _ if versions_busy => Class::Unsettled,
        None if m.state == ModuleState::Pending => Class::Waiting,
        Some(p) if m.state == ModuleState::Running && p.previous.is_none() => Class::Settled,
        _ => Class::Unsettled,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Settled,
    Waiting,
    Unsettled,
}

impl Attention {
    /// No index: a copy of the state that leaves it out.
    pub(super) fn left_out() -> Attention {
        Attention {
            left_out: true,
            ..Attention::default()
        }
    }

    /// Whether this index was built for its state.
    pub(super) fn is_built(&self) -> bool {
        !self.left_out
    }

    /// The index of `state`, every change dated at its last index.
    pub(super) fn of(state: &ClusterState) -> Attention {
        let mut a = Attention {
            placeable: state.last_index,
            wide: state.last_index,
            floor: state.last_index,
            directed_all: state.last_index,
            ..Attention::default()
        };
        for name in state.modules.keys() {
            a.file(name, classify(state, name));
        }
        a
    }

    fn file(&mut self, name: &str, class: Option<Class>) {
        match class {
            Some(Class::Unsettled) => {
                self.waiting.remove(name);
                if !self.unsettled.contains(name) {
                    self.unsettled.insert(name.to_string());
                }
            }
            Some(Class::Waiting) => {
                self.unsettled.remove(name);
                if !self.waiting.contains(name) {
                    self.waiting.insert(name.to_string());
                }
            }
            Some(Class::Settled) | None => {
                self.unsettled.remove(name);
                self.waiting.remove(name);
            }
        }
    }

    fn record(&mut self, index: u64, name: &str) {
        if self
            .touched
            .back()
            .is_some_and(|(i, n)| *i == index && n == name)
        {
            return;
        }
        if self.touched.len() == TOUCHES_KEPT
            && let Some((i, _)) = self.touched.pop_front()
        {
            self.floor = self.floor.max(i);
        }
        self.touched.push_back((index, name.to_string()));
    }
}

/// What changed since a pass at some log index, for the next scoped pass.
pub struct Changes<'s> {
    /// Modules changed since then, and those that may need a step anyway.
    pub modules: BTreeSet<&'s str>,
    /// Whether a change since then may let a waiting module in.
    pub placeable: bool,
}

impl ClusterState {
    /// Files `module`, changed at `index`, in the planner's index (every
    /// transition that changes a module entry calls it), and marks the
    /// directives of the nodes it is placed on (now) as changed.
    pub(super) fn touch(&mut self, module: &str, index: u64) {
        let class = classify(self, module);
        self.attention.record(index, module);
        self.attention.file(module, class);
        let now_on = self.directed_nodes(module);
        self.mark_directed(now_on.into_iter().flatten(), index);
    }

    /// The nodes whose directives `module` enters into: the node it is
    /// placed on and the node of its previous copy, if any. Asked before
    /// a transition changes the module (the nodes it may leave) and by
    /// [`ClusterState::touch`] after (the nodes it may enter).
    pub(super) fn directed_nodes(&self, module: &str) -> [Option<NodeId>; 2] {
        match self.modules.get(module).and_then(|m| m.placement.as_ref()) {
            Some(p) => [Some(p.node.clone()), p.previous.clone()],
            None => [None, None],
        }
    }

    /// Marks the directives of `nodes` as changed at `index`.
    pub(super) fn mark_directed(&mut self, nodes: impl IntoIterator<Item = NodeId>, index: u64) {
        for n in nodes {
            self.attention.directed.insert(n, index);
        }
    }

    /// Marks every node's directives as changed at `index`.
    pub(super) fn mark_all_directed(&mut self, index: u64) {
        self.attention.directed_all = index;
    }

    /// The log index at or after which `node`'s directives
    /// ([`crate::directives::directives_for`], for any module table) last
    /// may have changed: directives computed for it at a later index
    /// still hold, but for the epoch of a `Stop`, which is the state's
    /// last index when computed and only needs to exceed the epochs the
    /// node was given before (every later placement's epoch exceeds it).
    ///
    /// Kept by `apply`: a transition marks the nodes its module was placed
    /// on before and is placed on after (node and previous copy), the node
    /// it names, and all nodes for a change of the quarantines or of the
    /// cluster id. A state without the planner's index
    /// ([`ClusterState::frozen`]) answers its last index.
    pub fn directives_changed_at(&self, node: &str) -> u64 {
        let a = &self.attention;
        if !a.is_built() {
            return self.last_index;
        }
        a.directed
            .get(node)
            .copied()
            .unwrap_or(0)
            .max(a.directed_all)
    }

    /// What a scoped pass after a pass at log index `since` must look at,
    /// or `None` when it must look at every module: a change since then
    /// may concern any module, or the window no longer reaches back.
    pub fn changes_since(&self, since: u64) -> Option<Changes<'_>> {
        let a = &self.attention;
        if a.wide > since || a.floor > since {
            return None;
        }
        let start = a.touched.partition_point(|(i, _)| *i <= since);
        let mut modules: BTreeSet<&str> = a.unsettled.iter().map(String::as_str).collect();
        modules.extend(a.touched.range(start..).map(|(_, n)| n.as_str()));
        Some(Changes {
            modules,
            placeable: a.placeable > since,
        })
    }

    /// Modules waiting for their first placement, by name.
    pub fn waiting(&self) -> impl Iterator<Item = &str> {
        self.attention.waiting.iter().map(String::as_str)
    }

    /// Index of the last applied change that may let a module waiting for
    /// its first placement find a node: any change of a node's record
    /// (registered, relabelled, health, drained, undrained, removed) or of
    /// the package quarantines. A decoded state says its own last index.
    pub fn placeable_changed_at(&self) -> u64 {
        self.attention.placeable
    }

    /// Modules that may need a step with nothing else changing (every
    /// placed module that is not running is among them).
    pub(super) fn attention_unsettled(&self) -> impl Iterator<Item = &str> {
        self.attention.unsettled.iter().map(String::as_str)
    }

    /// Whether the planner's index equals one built afresh (for tests).
    #[cfg(test)]
    pub(crate) fn attention_is_exact(&self) -> bool {
        let fresh = Attention::of(self);
        fresh.unsettled == self.attention.unsettled && fresh.waiting == self.attention.waiting
    }
}
