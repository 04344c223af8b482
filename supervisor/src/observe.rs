//! Heartbeat ingestion: what the leader knows of each node from its
//! agent's heartbeats, in memory only (never in the Raft log).
//!
//! ## Data flow
//! ```text
//!  heartbeat ──► NodeObservation::ingest(hb, now) ──► Ingest (stale? changed? need the table?)
//!                       │ table, status per position, since when
//!                       ├──► plan(state, observed, now)        (the reconciler reads it)
//!                       └──► NodeObservation::directives(...)  (the heartbeat reply)
//! ```
//! The agent sends each module's status positionally, in the order of its
//! module table; the table itself only when it changed. Ingesting keeps,
//! for each position, the status and the leader-clock time since which it
//! has held (the planner's "healthy for `min_healthy_ms`" and the failure
//! detector's silence are measured on it).
//!
//! ## Invariants
//! - Pure: the time is passed in; nothing here does I/O.
//! - A heartbeat older than one taken (same incarnation, lower or equal
//!   `seq`, or an older incarnation) changes nothing.
//! - `table`, `positions`, `statuses` and `since_ms` describe the same
//!   positions, or are all empty (the table is unknown and the leader asks
//!   the agent for it).
//! - `version` grows whenever the table, a status or what the node
//!   reported pre-staged changes, so directives cached for a (state index,
//!   version) pair are never stale.
//! - A new leader starts with an empty [`Observed`]: every node gets a grace
//!   window from `leader_since_ms`.

use std::collections::BTreeMap;

use proto::heartbeat::{Directive, Heartbeat, ModuleStatus, ModuleTable, ReportKind, TableEntry};
use proto::{Epoch, ModuleName, NodeId};

use crate::directives::directives_for;
use crate::prestage::prefetches_for;
use crate::state::ClusterState;

/// Most modules kept as pre-staged per node (the heartbeat's module bound).
pub const MAX_PRESTAGED: usize = proto::heartbeat::MAX_MODULES;

/// What the leader knows of one node from its heartbeats (memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeObservation {
    /// A heartbeat was taken.
    pub heard: bool,
    /// Leader clock (ms) of the last accepted heartbeat.
    pub last_seen_ms: u64,
    /// Agent incarnation and heartbeat number last accepted.
    pub incarnation: u64,
    pub seq: u64,
    /// Version of `table`.
    pub table_version: u64,
    /// The agent's module table, once received.
    pub table: Option<ModuleTable>,
    /// Status of each table position.
    pub statuses: Vec<ModuleStatus>,
    /// Leader clock (ms) since which each position has had its current
    /// entry and status.
    pub since_ms: Vec<u64>,
    /// Latest failure message per module (install failures and the like).
    pub messages: BTreeMap<ModuleName, (Epoch, ReportKind, String)>,
    /// Modules whose package the agent reported pre-staged in its cache
    /// (report `prestaged`), with the epoch of the placement it came
    /// from; at most [`MAX_PRESTAGED`] (cleared when full: the agent
    /// reports again on the next prefetch).
    pub prestaged: BTreeMap<ModuleName, Epoch>,
    /// Pre-stagings first reported by the last heartbeat taken, for the
    /// leader to record (`RecordPrestaged`); taken by the leader.
    pub newly_prestaged: Vec<(ModuleName, Epoch)>,
    /// Position of each module in `table`.
    positions: BTreeMap<ModuleName, usize>,
    /// Grows whenever the table or a status changes.
    pub version: u64,
    /// The directives last computed for this node: (state index,
    /// observation version) they were computed at, and the directives.
    pub directives: Option<(u64, u64, Option<u64>, Vec<Directive>)>,
}

/// What became of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Older than one already taken (incarnation, seq): ignored.
    Stale,
    /// Taken. `changed`: a module's entry or status changed (the reconciler
    /// should look at once). `need_table`: statuses could not be read
    /// without the agent's table; ask for it.
    Accepted { changed: bool, need_table: bool },
}

impl NodeObservation {
    /// Takes a heartbeat received at leader clock `now`. Pure.
    ///
    /// Steady state (no table in the heartbeat, same table version) costs a
    /// positional comparison of the status codes; a new table re-indexes
    /// and keeps `since` for every (entry, status) that did not change.
    pub fn ingest(&mut self, hb: &Heartbeat, now: u64) -> Ingest {
        if self.heard
            && (hb.incarnation < self.incarnation
                || (hb.incarnation == self.incarnation && hb.seq <= self.seq))
        {
            return Ingest::Stale;
        }
        let new_incarnation = !self.heard || hb.incarnation != self.incarnation;
        if new_incarnation {
            self.messages.clear();
            self.prestaged.clear();
        }
        self.newly_prestaged.clear();
        self.heard = true;
        self.last_seen_ms = now;
        self.seq = hb.seq;
        self.incarnation = hb.incarnation;
        let mut prestaged = false;
        for r in &hb.reports {
            if r.kind == ReportKind::Prestaged {
                if self.prestaged.get(&r.module) != Some(&r.epoch) {
                    if self.prestaged.len() >= MAX_PRESTAGED {
                        self.prestaged.clear();
                    }
                    self.prestaged.insert(r.module.clone(), r.epoch);
                    self.newly_prestaged.push((r.module.clone(), r.epoch));
                    prestaged = true;
                }
                continue;
            }
            self.messages
                .insert(r.module.clone(), (r.epoch, r.kind, r.message.clone()));
        }
        if prestaged {
            // The directives cached for this node are out of date.
            self.version += 1;
        }
        let Some(statuses) = hb.statuses.to_statuses() else {
            return self.forget_table();
        };
        match &hb.table {
            Some(table) => {
                if table.modules.len() != statuses.len() {
                    return self.forget_table();
                }
                let old_table = if new_incarnation {
                    None
                } else {
                    self.table.take()
                };
                let mut changed = old_table.is_none();
                let since = table
                    .modules
                    .iter()
                    .zip(&statuses)
                    .map(|(entry, status)| {
                        let old = old_table.as_ref().and_then(|t| {
                            let pos = *self.positions.get(&entry.module)?;
                            (t.modules.get(pos)? == entry).then_some(pos)
                        });
                        match old {
                            Some(pos) if self.statuses.get(pos) == Some(status) => {
                                self.since_ms[pos]
                            }
                            _ => {
                                changed = true;
                                now
                            }
                        }
                    })
                    .collect();
                changed |= old_table.is_some_and(|t| t.modules.len() != table.modules.len());
                self.positions = table
                    .modules
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.module.clone(), i))
                    .collect();
                self.table = Some(table.clone());
                self.table_version = hb.table_version;
                self.statuses = statuses;
                self.since_ms = since;
                self.version += 1;
                Ingest::Accepted {
                    changed,
                    need_table: false,
                }
            }
            None => {
                if new_incarnation
                    || self.table.is_none()
                    || hb.table_version != self.table_version
                    || statuses.len() != self.statuses.len()
                {
                    return self.forget_table();
                }
                let mut changed = false;
                for (i, status) in statuses.iter().enumerate() {
                    if self.statuses[i] != *status {
                        self.statuses[i] = *status;
                        self.since_ms[i] = now;
                        changed = true;
                    }
                }
                if changed {
                    self.version += 1;
                }
                Ingest::Accepted {
                    changed,
                    need_table: false,
                }
            }
        }
    }

    fn forget_table(&mut self) -> Ingest {
        self.version += 1;
        self.table = None;
        self.positions.clear();
        self.statuses.clear();
        self.since_ms.clear();
        Ingest::Accepted {
            changed: false,
            need_table: true,
        }
    }

    /// The directives for this node, computed once per (state, observation,
    /// targets) and reused while none changes; with `prestage` (the state
    /// index the pre-staging targets were computed at, and the modules
    /// that would fail over to this node next, [`crate::prestage::Targets`]),
    /// the `Prefetch` directives of pre-staging too ([`prefetches_for`]).
    pub fn directives(
        &mut self,
        state: &ClusterState,
        node: &str,
        depmgr: &str,
        prestage: Option<(u64, &[ModuleName])>,
    ) -> Vec<Directive> {
        let Some(table) = &self.table else {
            return vec![];
        };
        match &self.directives {
            Some((index, version, targets, d))
                if *index == state.last_index
                    && *version == self.version
                    && *targets == prestage.map(|(at, _)| at) =>
            {
                d.clone()
            }
            _ => {
                let mut d = directives_for(state, node, table, depmgr);
                if let Some((_, targets)) = prestage {
                    d.extend(prefetches_for(
                        state,
                        table,
                        targets,
                        &self.prestaged,
                        depmgr,
                    ));
                }
                self.directives = Some((
                    state.last_index,
                    self.version,
                    prestage.map(|(at, _)| at),
                    d.clone(),
                ));
                d
            }
        }
    }

    /// The table entry of `module`, with its status and since when.
    pub fn module(&self, module: &str) -> Option<(&TableEntry, ModuleStatus, u64)> {
        let table = self.table.as_ref()?;
        let pos = *self.positions.get(module)?;
        Some((
            &table.modules[pos],
            *self.statuses.get(pos)?,
            *self.since_ms.get(pos)?,
        ))
    }
}

/// Everything the leader observed since it became leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Leader clock (ms) when this replica became leader: every node's
    /// grace window starts here.
    pub leader_since_ms: u64,
    pub nodes: BTreeMap<NodeId, NodeObservation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::heartbeat::PackedStatuses;

    #[test]
    fn steady_heartbeats_without_table_update_statuses_in_place() {
        let entry = |m: &str| TableEntry {
            module: m.into(),
            epoch: 3,
            restore_seq: 0,
        };
        let table = ModuleTable {
            addr: "a:1".into(),
            labels: BTreeMap::new(),
            modules: vec![entry("x"), entry("y")],
            cluster: 0,
        };
        let hb = |seq: u64, table: Option<ModuleTable>, s: [ModuleStatus; 2]| Heartbeat {
            node: "a".into(),
            incarnation: 7,
            seq,
            table_version: 4,
            table,
            statuses: PackedStatuses::pack(&s),
            reports: vec![],
        };
        let (run, fail) = (ModuleStatus::Running, ModuleStatus::Failed);
        let mut o = NodeObservation::default();
        assert_eq!(
            o.ingest(&hb(1, Some(table.clone()), [run, run]), 10),
            Ingest::Accepted {
                changed: true,
                need_table: false
            }
        );
        assert_eq!(
            o.ingest(&hb(2, None, [run, run]), 20),
            Ingest::Accepted {
                changed: false,
                need_table: false
            }
        );
        assert_eq!(o.module("y").map(|(_, s, t)| (s, t)), Some((run, 10)));
        assert_eq!(
            o.ingest(&hb(3, None, [run, fail]), 30),
            Ingest::Accepted {
                changed: true,
                need_table: false
            }
        );
        assert_eq!(o.module("y").map(|(_, s, t)| (s, t)), Some((fail, 30)));
        assert_eq!(o.module("x").map(|(_, s, t)| (s, t)), Some((run, 10)));
        assert_eq!(
            o.ingest(&hb(3, None, [run, run]), 40),
            Ingest::Stale,
            "replayed seq"
        );
        // The same table again keeps `since` of unchanged positions.
        assert_eq!(
            o.ingest(&hb(4, Some(table.clone()), [run, fail]), 50),
            Ingest::Accepted {
                changed: false,
                need_table: false
            }
        );
        assert_eq!(o.module("y").map(|(_, _, t)| t), Some(30));
        // Another table version without a table: the leader asks for it.
        let mut other = hb(5, None, [run, run]);
        other.table_version = 5;
        assert_eq!(
            o.ingest(&other, 60),
            Ingest::Accepted {
                changed: false,
                need_table: true
            }
        );
        assert!(o.module("x").is_none());
    }
}
