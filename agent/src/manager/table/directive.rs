//! The directive rules and what an executed directive changes.
//!
//! ## Directive rules ([`decide`])
//! A directive whose module name breaks the name rules
//! ([`proto::names::check`], as the supervisor checks a spec) is refused
//! before any rule: logged once and shown among the status API's refusals.
//! Directives are level-triggered (the leader repeats one until heartbeats
//! show it took effect), so every rule makes a repeat a no-op:
//! - Any directive whose epoch is below the highest epoch accepted for the
//!   module is refused (logged and reported as `StaleDirective`).
//! - Install: a new module, or a newer epoch than the installed one →
//!   install (replacing the old placement). The same epoch again → no-op,
//!   whatever became of the first install. An epoch at or below the last
//!   stop executed for the module → refused: the stop superseded it.
//! - Restore: executed when its `seq` is above the last executed one for
//!   the installed epoch; otherwise a no-op. A restore for a module that is
//!   not installed here (or for another epoch) cannot be executed: ignored
//!   with a warning, the missing table entry tells the leader.
//! - Stop: stops and forgets the module; a repeat while stopping, or a stop
//!   for an unknown module, is a no-op.
//! - Prefetch (pre-staging): fences nothing and changes no module or epoch
//!   record (its epoch is the module's placement on another node): it
//!   becomes [`Effect::Prefetch`], which fills the cache in the background
//!   (see `super::super::prefetch`); a repeat is a no-op there.
//!
//! ## A reply as a whole
//! A reply's directives are decided together before any executes
//! ([`Table::plan_reply`]): the epoch records of those that execute are
//! raised and one snapshot holds them. The edge saves it, then
//! [`Table::execute_reply`] executes them, each decided again (only one
//! decided `Execute` both times runs). A failed save executes nothing;
//! each planned directive is reported as not executed (`cannot persist the
//! epoch record: <error>`), once per directive and error until a save
//! succeeds.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use proto::Epoch;
use proto::heartbeat::{Directive, Install, ModuleStatus, ReportKind, Restore, Stop};

use super::{Effect, MAX_LOGGED, MAX_MODULES, MAX_REFUSALS_SHOWN, Slot, Snapshot, Table, Task};
use crate::state::EpochRecord;

/// A heartbeat reply decided as a whole ([`Table::plan_reply`]), to
/// execute once its snapshot is saved ([`Table::execute_reply`]).
#[derive(Debug)]
pub struct ReplyPlan {
    /// The durable state the reply's executed directives need: the epoch
    /// records they raise, the restore orders they record, and the module
    /// list without the placements their installs replace. Saved before
    /// any of them executes; `None` when none executes (only repeats and
    /// refusals), so nothing needs saving.
    pub snapshot: Option<Snapshot>,
    /// Each directive, and whether it was decided `Execute` when planned.
    directives: Vec<(Directive, bool)>,
}

impl ReplyPlan {
    /// How many directives were decided `Execute`.
    pub fn executing(&self) -> usize {
        self.directives.iter().filter(|(_, e)| *e).count()
    }
}

/// What [`Table::directive`] may do with a directive decided `Execute`.
enum Allowed<'a> {
    /// Planned, and its state is durable: execute it.
    Yes,
    /// Not decided `Execute` when planned (the table changed since): leave
    /// it to the leader's repeat, which the next reply plans.
    NotPlanned,
    /// Planned, but the snapshot could not be saved (the error).
    Unsaved(&'a str),
}

impl Table {
    /// Decides a whole reply before anything of it executes: each directive
    /// in order (against the table as the directives before it leave it),
    /// raising the epoch records of those that execute. Records only grow
    /// (highest epoch seen, last stop), so raising them before the save is
    /// safe: a directive they refuse is older than one the leader sent.
    /// Nothing else changes: no slot, no process, no task.
    ///
    /// `cluster` is the id of the leader's cluster the reply came from
    /// (0: not chosen yet). When it is another cluster than the one whose
    /// epochs the table holds, the table adopts it first
    /// ([`Table::adopt_cluster`]) and the snapshot carries the change.
    pub fn plan_reply(&mut self, cluster: u64, directives: Vec<Directive>) -> ReplyPlan {
        // The module as the directives before this one leave it.
        let mut views: BTreeMap<String, Option<ModuleView>> = BTreeMap::new();
        let mut replaced: HashSet<String> = HashSet::new();
        let mut restored: BTreeMap<String, u32> = BTreeMap::new();
        let mut planned = Vec::with_capacity(directives.len());
        // Slots the planned installs add, and whether anything needs saving.
        let mut added = 0;
        let mut save = self.adopt_cluster(cluster);
        for d in directives {
            if matches!(d, Directive::Prefetch(_)) {
                // A prefetch changes no module and no epoch record: nothing
                // to plan or save for it (see `Table::directive`).
                planned.push((d, false));
                continue;
            }
            let name = d.module().to_string();
            let execute = proto::names::check("module name", &name).is_ok() && {
                let view = match views.get(&name) {
                    Some(v) => *v,
                    None => self.slot(&name).map(Slot::view),
                };
                let record = self.epochs.get(&name).copied();
                let execute = decide(view.as_ref(), record.as_ref(), &d) == Decision::Execute;
                // A new module on a full node: refused when executed
                // (`begin_install`), so nothing to raise or save.
                let full = matches!(d, Directive::Install(_))
                    && view.is_none()
                    && self.slots.len() + added >= MAX_MODULES;
                if execute && !full {
                    save = true;
                    if view.is_none() && matches!(d, Directive::Install(_)) {
                        added += 1;
                    }
                    let record = self.epochs.entry(name.clone()).or_default();
                    record.highest = record.highest.max(d.epoch());
                    let next = match &d {
                        Directive::Install(i) => {
                            replaced.insert(name.clone());
                            restored.remove(&name);
                            Some(ModuleView {
                                epoch: i.epoch,
                                status: ModuleStatus::Installing,
                                restore_seq: 0,
                                installed: false,
                                stopping: false,
                            })
                        }
                        Directive::Restore(r) => {
                            restored.insert(name.clone(), r.seq);
                            view.map(|v| ModuleView {
                                restore_seq: r.seq,
                                status: ModuleStatus::Restoring,
                                ..v
                            })
                        }
                        Directive::Stop(s) => {
                            record.stopped_at = Some(record.stopped_at.unwrap_or(0).max(s.epoch));
                            view.map(|v| ModuleView {
                                stopping: true,
                                ..v
                            })
                        }
                        Directive::Prefetch(_) => view,
                    };
                    views.insert(name.clone(), next);
                }
                execute
            };
            planned.push((d, execute));
        }
        let snapshot = save.then(|| {
            let (rev, mut state) = self.snapshot();
            state.modules.retain(|m| !replaced.contains(&m.name));
            for m in &mut state.modules {
                if let Some(seq) = restored.get(&m.name) {
                    m.restore_seq = *seq;
                }
            }
            (rev, state)
        });
        ReplyPlan {
            snapshot,
            directives: planned,
        }
    }

    /// Records the supervisor cluster this agent serves, from an accepted
    /// reply; true when that changed the durable state. Epochs are log
    /// indexes of one cluster: when the reply names another cluster than
    /// the recorded one (both non-zero, e.g. the supervisors were
    /// re-created from scratch), the old cluster's epoch records are
    /// dropped, and each module still held is relabelled epoch 0 (placed by
    /// no cluster this agent knows), so the new leader's stop or install
    /// for it, at any epoch of its own, executes. The caller saves the
    /// snapshot before any directive of the reply executes. A first id
    /// (none recorded, e.g. a state file of an older agent) is only
    /// recorded: the records are that cluster's, as far as anyone knows.
    pub fn adopt_cluster(&mut self, cluster: u64) -> bool {
        if cluster == 0 || cluster == self.cluster {
            return false;
        }
        if self.cluster != 0 {
            tracing::warn!(
                old_cluster = self.cluster,
                new_cluster = cluster,
                dropped_epoch_records = self.epochs.len(),
                relabelled_modules = self.slots.len(),
                "the leader serves supervisor cluster {cluster}, not cluster {} this agent served: adopting it, dropping the old cluster's epoch records (its epochs mean nothing to the new cluster) and leaving the modules held to the new leader (epoch 0)",
                self.cluster
            );
            self.epochs.clear();
            for slot in &mut self.slots {
                slot.epoch = 0;
            }
        } else {
            tracing::info!(cluster, "serving supervisor cluster {cluster}");
        }
        self.cluster = cluster;
        // The table names the cluster: the leader gets it again, and directs
        // this node once it shows the leader's cluster.
        self.table_version += 1;
        true
    }

    /// Executes a planned reply once its snapshot was saved (`saved` is
    /// `Ok`), each directive decided again against the table as it is now
    /// (a task step may have changed it since the plan): only a directive
    /// decided `Execute` both times executes. When the save failed
    /// (`saved` is the error) nothing executes: each planned directive is
    /// refused, logged once, shown among the status API's refusals and
    /// reported to the leader, which repeats it; once the state can be
    /// saved again, the repeat executes. Refusals of stale directives
    /// happen either way.
    pub fn execute_reply(&mut self, plan: ReplyPlan, saved: Result<(), String>) -> Vec<Effect> {
        if saved.is_ok() {
            self.unsaved.clear();
        }
        let mut effects = Vec::new();
        for (d, planned) in plan.directives {
            let allowed = match (&saved, planned) {
                (_, false) => Allowed::NotPlanned,
                (Ok(()), true) => Allowed::Yes,
                (Err(e), true) => Allowed::Unsaved(e),
            };
            effects.extend(self.directive(d, allowed));
        }
        effects
    }

    /// One directive of a planned reply: decided, then (when executed and
    /// `allowed`) the state change and its task.
    fn directive(&mut self, d: Directive, allowed: Allowed<'_>) -> Vec<Effect> {
        let name = d.module().to_string();
        if let Err(why) = proto::names::check("module name", &name) {
            return self.bad_name(&d, why);
        }
        if let Directive::Prefetch(mut p) = d {
            // Pre-staging: the cache only, never a module or an epoch
            // record; the agent runs it in the background (a repeat of one
            // in flight or done is a no-op there).
            if p.depmgr.is_empty()
                && let Some(d) = &self.cfg.default_depmgr
            {
                p.depmgr = d.clone();
            }
            return vec![Effect::Prefetch(Box::new(p))];
        }
        let view = self.slot(&name).map(Slot::view);
        let record = self.epochs.get(&name).copied();
        match decide(view.as_ref(), record.as_ref(), &d) {
            Decision::Repeat => return vec![],
            Decision::Stale(why) => {
                if !self.logged.insert(directive_key(&d)) {
                    return vec![];
                }
                tracing::warn!(module = %name, "refused directive: {why}");
                self.report(&name, d.epoch(), ReportKind::StaleDirective, why.clone());
                self.refused(format!("{name}: {why}"));
                return vec![Effect::Notify];
            }
            Decision::Unusable(why) => {
                if self.logged.insert(directive_key(&d)) {
                    tracing::warn!(module = %name, "cannot execute directive: {why}");
                }
                return vec![];
            }
            Decision::Execute => {}
        }
        match allowed {
            Allowed::Yes => {}
            Allowed::NotPlanned => return vec![],
            Allowed::Unsaved(error) => return self.not_saved(&d, error),
        }
        if self.logged.len() > MAX_LOGGED {
            self.logged.clear();
        }
        let task = match d {
            Directive::Install(i) => match self.begin_install(i) {
                Some(t) => t,
                None => return vec![Effect::Notify],
            },
            Directive::Restore(r) => self.begin_restore(r),
            Directive::Stop(s) => self.begin_stop(s),
            Directive::Prefetch(_) => return vec![],
        };
        self.table_version += 1;
        vec![Effect::Notify, Effect::Spawn(task)]
    }

    /// A directive not executed because the state it needs could not be
    /// saved: logged once per directive and error (until a save succeeds),
    /// shown among the refusals, reported to the leader.
    fn not_saved(&mut self, d: &Directive, error: &str) -> Vec<Effect> {
        let name = d.module();
        let why = format!(
            "{} directive for epoch {} not executed: cannot persist the epoch record: {error}",
            kind(d),
            d.epoch()
        );
        if !self.unsaved.insert(format!("{}/{error}", directive_key(d))) {
            return vec![];
        }
        if self.unsaved.len() > MAX_LOGGED {
            self.unsaved.clear();
        }
        tracing::error!(module = %name, "{why}");
        let report = match d {
            Directive::Install(_) => ReportKind::InstallFailed,
            Directive::Restore(_) | Directive::Stop(_) | Directive::Prefetch(_) => {
                ReportKind::Failed
            }
        };
        self.report(name, d.epoch(), report, why.clone());
        self.refused(format!("{name}: {why}"));
        vec![Effect::Notify]
    }

    /// Shows `why` among the status API's refusals (the newest
    /// [`MAX_REFUSALS_SHOWN`]).
    fn refused(&mut self, why: String) {
        if self.refusals.len() >= MAX_REFUSALS_SHOWN {
            self.refusals.pop_front();
        }
        self.refusals.push_back(why);
    }

    fn begin_install(&mut self, mut i: Install) -> Option<Task> {
        let record = self.epochs.entry(i.module.clone()).or_default();
        record.highest = record.highest.max(i.epoch);
        if i.depmgr.is_empty()
            && let Some(d) = &self.cfg.default_depmgr
        {
            i.depmgr = d.clone();
        }
        if self.slot(&i.module).is_none() && self.slots.len() >= MAX_MODULES {
            let why = format!("this node already holds {MAX_MODULES} modules");
            tracing::warn!(module = %i.module, "install refused: {why}");
            self.report(&i.module, i.epoch, ReportKind::InstallFailed, why);
            return None;
        }
        let op = self.op();
        let cancel = self.cfg.shutdown.child_token();
        let fresh = Slot {
            name: i.module.clone(),
            epoch: i.epoch,
            fencing: i.fencing,
            package: i.package.clone(),
            depmgr: i.depmgr.clone(),
            status: ModuleStatus::Installing,
            restore_seq: 0,
            starts: 0,
            installed: false,
            stopping: false,
            op,
            cancel: cancel.clone(),
            proc: None,
            last_error: None,
        };
        let old = match self.slot_mut(&i.module) {
            Some(slot) => {
                tracing::info!(module = %i.module, from = slot.epoch, to = i.epoch, "replacing placement");
                slot.cancel.cancel();
                let old = slot.take_proc();
                *slot = fresh;
                old
            }
            None => {
                self.slots.push(fresh);
                None
            }
        };
        tracing::info!(module = %i.module, epoch = i.epoch, package = %i.package.manifest.package_ref(), "installing");
        Some(Task::Install {
            op,
            old,
            install: Box::new(i),
            cancel,
        })
    }

    fn begin_restore(&mut self, r: Restore) -> Task {
        let op = self.op();
        let cancel = self.cfg.shutdown.child_token();
        let mut old = None;
        if let Some(slot) = self.slot_mut(&r.module) {
            slot.cancel.cancel();
            old = slot.take_proc();
            slot.cancel = cancel.clone();
            slot.op = op;
            slot.restore_seq = r.seq;
            slot.status = ModuleStatus::Restoring;
            tracing::info!(module = %r.module, epoch = r.epoch, seq = r.seq, backoff_ms = r.backoff_ms, "restoring");
        }
        Task::Restore {
            module: r.module,
            op,
            old,
            backoff: Duration::from_millis(r.backoff_ms),
            cancel,
        }
    }

    fn begin_stop(&mut self, s: Stop) -> Task {
        let record = self.epochs.entry(s.module.clone()).or_default();
        record.highest = record.highest.max(s.epoch);
        record.stopped_at = Some(record.stopped_at.unwrap_or(0).max(s.epoch));
        let op = self.op();
        let mut old = None;
        if let Some(slot) = self.slot_mut(&s.module) {
            slot.cancel.cancel();
            old = slot.take_proc();
            slot.op = op;
            slot.stopping = true;
            tracing::info!(module = %s.module, epoch = s.epoch, "stopping and forgetting");
        }
        Task::Stop {
            module: s.module,
            op,
            old,
        }
    }
}

/// What the directive rules need to know of a module the agent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleView {
    pub epoch: Epoch,
    pub status: ModuleStatus,
    /// Last restore order executed for this placement (0: none).
    pub restore_seq: u32,
    /// The package of this placement is unpacked and recorded.
    pub installed: bool,
    /// A stop is under way (the module leaves the table once it is dead).
    pub stopping: bool,
}

/// What to do with one directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Execute it.
    Execute,
    /// A repeat of something done or under way: nothing to do.
    Repeat,
    /// Older than what the agent has seen: refuse, log, report.
    Stale(String),
    /// Cannot be executed here; log it (the heartbeat's table shows why).
    Unusable(String),
}

/// Decides about one directive given the module as held (if any) and the
/// module's epoch record (if any). See the module doc for the rules.
pub fn decide(
    module: Option<&ModuleView>,
    record: Option<&EpochRecord>,
    d: &Directive,
) -> Decision {
    if let Directive::Prefetch(_) = d {
        // Fences nothing: its epoch is the placement's on another node.
        return Decision::Execute;
    }
    let epoch = d.epoch();
    if let Some(r) = record
        && epoch < r.highest
    {
        return Decision::Stale(format!(
            "{} directive for epoch {epoch} is older than epoch {} already seen",
            kind(d),
            r.highest
        ));
    }
    match d {
        Directive::Install(_) => {
            if let Some(stopped) = record.and_then(|r| r.stopped_at)
                && epoch <= stopped
            {
                return Decision::Stale(format!(
                    "install for epoch {epoch} was superseded by a stop at epoch {stopped}"
                ));
            }
            match module {
                Some(m) if m.epoch == epoch => Decision::Repeat,
                _ => Decision::Execute,
            }
        }
        Directive::Restore(r) => match module {
            None => Decision::Unusable(format!(
                "restore for epoch {epoch}: module is not installed on this node"
            )),
            Some(m) if m.epoch != epoch => Decision::Unusable(format!(
                "restore for epoch {epoch}: installed placement has epoch {}",
                m.epoch
            )),
            Some(m) if m.stopping || r.seq <= m.restore_seq => Decision::Repeat,
            Some(m) if !m.installed => Decision::Unusable(format!(
                "restore {} for epoch {epoch}: package is not installed (status {})",
                r.seq,
                m.status.as_str()
            )),
            Some(_) => Decision::Execute,
        },
        Directive::Prefetch(_) => Decision::Execute,
        Directive::Stop(_) => match module {
            None => Decision::Repeat,
            Some(m) if epoch < m.epoch => Decision::Stale(format!(
                "stop for epoch {epoch} is older than the installed epoch {}",
                m.epoch
            )),
            Some(m) if m.stopping => Decision::Repeat,
            Some(_) => Decision::Execute,
        },
    }
}

fn kind(d: &Directive) -> &'static str {
    match d {
        Directive::Restore(_) => "restore",
        Directive::Install(_) => "install",
        Directive::Stop(_) => "stop",
        Directive::Prefetch(_) => "prefetch",
    }
}

/// Key of a directive for log-once bookkeeping.
impl Table {
    /// A directive naming a module by a name the supervisor would never
    /// accept: refused, logged once and shown among the refusals of the
    /// status API, not executed and not reported (a report would carry the
    /// bad name back). `why` is cut to 200 characters.
    fn bad_name(&mut self, d: &Directive, why: String) -> Vec<Effect> {
        if !self.logged.insert(directive_key(d)) {
            return vec![];
        }
        let mut why: String = why.chars().take(200).collect();
        why = format!(
            "{} directive for epoch {} refused: {why}",
            kind(d),
            d.epoch()
        );
        tracing::warn!("{why}");
        self.refused(why);
        vec![]
    }
}

fn directive_key(d: &Directive) -> String {
    match d {
        Directive::Restore(r) => format!("restore/{}/{}/{}", r.module, r.epoch, r.seq),
        Directive::Install(i) => format!("install/{}/{}", i.module, i.epoch),
        Directive::Stop(s) => format!("stop/{}/{}", s.module, s.epoch),
        Directive::Prefetch(p) => format!("prefetch/{}/{}", p.module, p.epoch),
    }
}
