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
//! - `version` grows whenever the table or a status changes; directives
//!   cached at a state index and a version are reused while the version
//!   stays and no change after that index concerns the node
//!   ([`ClusterState::directives_changed_at`]), so a commit elsewhere in
//!   the fleet does not make every node's next reply look its modules up
//!   again.
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
    /// The directives of [`directives_for`] last computed for this node:
    /// the state index and observation version they were computed at,
    /// and the directives.
    pub directives: Option<(u64, u64, Vec<Directive>)>,
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
        for r in &hb.reports {
            if r.kind == ReportKind::Prestaged {
                if self.prestaged.get(&r.module) != Some(&r.epoch) {
                    if self.prestaged.len() >= MAX_PRESTAGED {
                        self.prestaged.clear();
                    }
                    self.prestaged.insert(r.module.clone(), r.epoch);
                    self.newly_prestaged.push((r.module.clone(), r.epoch));
                }
                continue;
            }
            self.messages
                .insert(r.module.clone(), (r.epoch, r.kind, r.message.clone()));
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

    /// The directives for this node. Those of [`directives_for`] are
    /// computed again only when the observation changed or a change to
    /// the state after their computation concerns this node
    /// ([`ClusterState::directives_changed_at`]); with `prestage` (the
    /// modules that would fail over to this node next, with their epochs,
    /// [`crate::prestage::Targets`]), the `Prefetch` directives of
    /// pre-staging follow ([`prefetches_for`], which looks up in the state
    /// only what is not pre-staged yet).
    pub fn directives(
        &mut self,
        state: &ClusterState,
        node: &str,
        depmgr: &str,
        prestage: Option<&[(ModuleName, Epoch)]>,
    ) -> Vec<Directive> {
        let Some(table) = &self.table else {
            return vec![];
        };
        let mut d = match &self.directives {
            Some((index, version, d))
                if state.directives_changed_at(node) <= *index && *version == self.version =>
            {
                d.clone()
            }
            _ => {
                let d = directives_for(state, node, table, depmgr);
                self.directives = Some((state.last_index, self.version, d.clone()));
                d
            }
        };
        if let Some(targets) = prestage {
            d.extend(prefetches_for(
                state,
                table,
                targets,
                &self.prestaged,
                depmgr,
            ));
        }
        d
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

    /// A node's directives are computed again after a change that concerns
    /// the node (its module placed, retrieved, restored), and reused after
    /// a change elsewhere in the fleet: the cache says which.
    #[test]
    fn directives_are_reused_until_a_change_concerns_the_node() {
        use crate::state::{Deploy, Place, PlaceCause, RegisterNode, RestoreOrdered, Transition};
        let spec = |name: &str| -> proto::spec::ModuleSpec {
            serde_json::from_value(serde_json::json!({
                "name": name, "package": {"name": "p", "version": "1.0.0"}
            }))
            .expect("spec")
        };
        let mut s = ClusterState::default();
        let apply = |s: &mut ClusterState, t: Transition| s.apply_next(t);
        for n in ["a", "b"] {
            apply(
                &mut s,
                Transition::RegisterNode(RegisterNode {
                    node: n.into(),
                    addr: format!("{n}:1"),
                    labels: BTreeMap::new(),
                }),
            );
        }
        for (m, n) in [("x", "a"), ("y", "b")] {
            apply(&mut s, Transition::Deploy(Deploy { spec: spec(m) }));
            apply(
                &mut s,
                Transition::Place(Place {
                    module: m.into(),
                    node: n.into(),
                    expect_epoch: None,
                    cause: PlaceCause::Initial,
                }),
            );
            let epoch = s.modules[m].placement.as_ref().expect("placed").epoch;
            apply(
                &mut s,
                Transition::PackageRetrieved(crate::state::PackageRetrieved {
                    module: m.into(),
                    epoch,
                    package: crate::scenarios::package_of(&proto::manifest::PackageRef::new(
                        "p", "1.0.0",
                    )),
                }),
            );
        }
        let x_epoch = s.modules["x"].placement.as_ref().expect("placed").epoch;
        let y_epoch = s.modules["y"].placement.as_ref().expect("placed").epoch;
        // Both run, then crash: restoring.
        for (m, epoch) in [("x", x_epoch), ("y", y_epoch)] {
            apply(
                &mut s,
                Transition::Healthy(crate::state::Healthy {
                    module: m.into(),
                    epoch,
                }),
            );
            apply(
                &mut s,
                Transition::FailureDetected(crate::state::FailureDetected {
                    module: m.into(),
                    epoch,
                    status: ModuleStatus::Failed,
                }),
            );
        }
        let mut o = NodeObservation {
            table: Some(ModuleTable {
                addr: "a:1".into(),
                labels: BTreeMap::new(),
                modules: vec![TableEntry {
                    module: "x".into(),
                    epoch: x_epoch,
                    restore_seq: 0,
                }],
                cluster: 0,
            }),
            ..NodeObservation::default()
        };
        let computed_at = |o: &NodeObservation| o.directives.as_ref().map(|(i, _, _)| *i);
        assert!(o.directives(&s, "a", "d", None).is_empty());
        let first = computed_at(&o);
        assert_eq!(first, Some(s.last_index));
        // A restore of y, on b: a's directives are reused.
        apply(
            &mut s,
            Transition::RestoreOrdered(RestoreOrdered {
                module: "y".into(),
                epoch: y_epoch,
                seq: 1,
            }),
        );
        assert!(o.directives(&s, "a", "d", None).is_empty());
        assert_eq!(computed_at(&o), first, "computed again for a change on b");
        // A restore of x, on a: computed again, and the restore is there.
        apply(
            &mut s,
            Transition::RestoreOrdered(RestoreOrdered {
                module: "x".into(),
                epoch: x_epoch,
                seq: 1,
            }),
        );
        let d = o.directives(&s, "a", "d", None);
        assert_eq!(computed_at(&o), Some(s.last_index));
        assert!(
            matches!(&d[..], [Directive::Restore(r)] if r.module == "x" && r.seq == 1),
            "{d:?}"
        );
    }
}
