//! The module table: every module this node holds, and every rule that
//! changes it, as a planner. No clock, no I/O: each method takes what was
//! observed (a directive, the end of an install, an exit, `now`) and returns
//! [`Effect`]s, values describing what the edge must do next (persist,
//! wake the heartbeat, run a task, stop a process, start one). The only
//! side effect a method has is a log line.
//!
//! ## Data flow
//! ```text
//! directive ──► directive() ──► [Persist, Notify, Spawn(task)]
//! task step (installed, restored, stopped) ──► install_done() / ... ──► effects
//! process events (launched, exited, probe) ──► launched() / exited() / ... ──► effects
//! ```
//! [`super::Agent::execute`] is the one place effects turn into I/O.
//!
//! ## Directive rules ([`decide`])
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
//!
//! ## Invariants
//! - Each operation on a module (install, restore, stop) gets a fresh `op`
//!   number and cancellation token; a step of a task changes the table only
//!   while the module's `op` is still its own, so a superseded operation
//!   can never overwrite a newer one.
//! - A slot holds a process handle only while that process is *expected* to
//!   run. Whoever stops a process takes the handle out first; an exit is
//!   reported as a failure only when the handle is still there. So an
//!   intended stop is never reported as a crash, and every crash is.
//! - The epoch record of a module (highest epoch, last stop) is in the
//!   [`Effect::Persist`] that precedes the task of the directive that raised
//!   it, and outlives the module, so a stale directive is refused even after
//!   a restart.
//! - An `at-most-one` module is never launched while the lease fences it
//!   (checked before the launch and again once the process exists).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use proto::heartbeat::{Directive, Install, ModuleStatus, Report, ReportKind, Restore, Stop};
use proto::manifest::{ConfigPackage, HealthCheck, Manifest};
use proto::spec::Fencing;
use proto::{Epoch, ModuleName};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fence;
use crate::Error;
use crate::process::{Launch, ProcessHandle};
use crate::state::{EpochRecord, InstalledModule, PersistedState};

/// Most modules one node holds (the packed status count is a u16).
pub const MAX_MODULES: usize = 10_000;
/// Most unacknowledged reports kept; the oldest go first.
pub(super) const MAX_REPORTS: usize = 1000;
/// Refusals shown in the status API.
pub(super) const MAX_REFUSALS_SHOWN: usize = 20;
/// Directives remembered for log-once; the memory is cleared past it.
const MAX_LOGGED: usize = 10_000;

/// A revision of the durable part of the table, to save in order.
pub type Snapshot = (u64, PersistedState);

/// What the edge must do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Save this snapshot (durable before anything that follows).
    Persist(Snapshot),
    /// Send a heartbeat at once: a status, a report or the table changed.
    Notify,
    /// The lease changed: the fence plans again.
    LeaseChanged,
    /// Run an operation's task in the background.
    Spawn(Task),
    /// Stop a process no longer expected to run (SIGTERM, grace, SIGKILL),
    /// and wait for it.
    Stop(ProcessHandle),
    /// Start the module's process for `op`, if the table still allows it
    /// then ([`Table::start`]).
    Start {
        module: ModuleName,
        op: u64,
        after_install: bool,
    },
    /// Launch the process, then report the outcome ([`Table::launched`]).
    Launch(LaunchPlan),
    /// Run the health probe of a started process until `cancel`.
    Probe(ProbePlan),
    /// Stop these `at-most-one` processes at once, then record them fenced
    /// ([`Table::fenced`]).
    Fence(Vec<Victim>),
    /// Stop every process at once (shutdown), then mark every module
    /// stopped ([`Table::all_stopped`]).
    StopAll(Vec<ProcessHandle>),
    /// Remove the placement directory of a failed install.
    RemovePlacement { module: ModuleName, epoch: Epoch },
    /// Remove every placement directory of the module but `keep`'s.
    KeepOnlyPlacement { module: ModuleName, keep: Epoch },
    /// Remove every placement directory of a forgotten module (its
    /// output log stays).
    ForgetFiles { module: ModuleName },
}

/// The background work of a directive, run after its state change was
/// persisted.
#[derive(Debug)]
pub enum Task {
    Install {
        op: u64,
        /// The process of the placement being replaced.
        old: Option<ProcessHandle>,
        install: Box<Install>,
        cancel: CancellationToken,
    },
    Restore {
        module: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        backoff: Duration,
        cancel: CancellationToken,
    },
    Stop {
        module: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
    },
}

/// What a launch needs to know of the module.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub module: ModuleName,
    pub op: u64,
    pub epoch: Epoch,
    pub restore_seq: u32,
    pub manifest: Manifest,
    pub after_install: bool,
}

/// A probe to run for a started process.
#[derive(Debug)]
pub struct ProbePlan {
    pub module: ModuleName,
    pub op: u64,
    pub check: HealthCheck,
    /// The process's directory and environment, for an exec probe.
    pub launch: Launch,
    pub cancel: CancellationToken,
}

/// A process the fence stops.
#[derive(Debug, Clone)]
pub struct Victim {
    pub module: ModuleName,
    pub op: u64,
    pub handle: ProcessHandle,
}

/// What [`Table::restore_target`] hands the restore task.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub epoch: Epoch,
    pub package: ConfigPackage,
    pub depmgr: String,
}

/// What the table is told at start-up.
#[derive(Debug, Clone)]
pub struct TableConfig {
    pub incarnation: u64,
    /// SIGTERM → SIGKILL grace; the fence starts this long before the lease
    /// ends.
    pub stop_grace: Duration,
    /// depmgr to use when an install directive names none.
    pub default_depmgr: Option<String>,
    /// Parent of every operation's cancellation token.
    pub shutdown: CancellationToken,
}

/// The module table. Lives behind the agent's mutex; every method is short
/// and never blocks.
#[derive(Debug)]
pub struct Table {
    pub(super) cfg: TableConfig,
    /// In table order.
    pub(super) slots: Vec<Slot>,
    pub(super) epochs: BTreeMap<ModuleName, EpochRecord>,
    pub(super) table_version: u64,
    pub(super) reports: Vec<Report>,
    /// End of the lease (monotonic); `None` until one is granted.
    pub(super) lease: Option<Instant>,
    pub(super) leader: Option<String>,
    next_op: u64,
    /// Revision of the persisted part, for ordered saves.
    rev: u64,
    /// Directives already logged as refused or unusable (log once).
    logged: HashSet<String>,
    pub(super) refusals: VecDeque<String>,
    warned_short_lease: bool,
}

/// One module held by this node.
#[derive(Debug)]
pub(super) struct Slot {
    pub name: ModuleName,
    pub epoch: Epoch,
    pub fencing: Fencing,
    pub package: ConfigPackage,
    pub depmgr: String,
    pub status: ModuleStatus,
    pub restore_seq: u32,
    pub starts: u64,
    /// The package of this placement is unpacked and recorded.
    pub installed: bool,
    pub stopping: bool,
    pub op: u64,
    /// Cancels the tasks of the current operation.
    pub cancel: CancellationToken,
    pub proc: Option<Proc>,
    pub last_error: Option<String>,
}

/// The process a slot expects to be running.
#[derive(Debug)]
pub(super) struct Proc {
    pub handle: ProcessHandle,
    /// Cancels the probe task of this process.
    pub cancel: CancellationToken,
}

impl Slot {
    fn view(&self) -> ModuleView {
        ModuleView {
            epoch: self.epoch,
            status: self.status,
            restore_seq: self.restore_seq,
            installed: self.installed,
            stopping: self.stopping,
        }
    }

    /// Takes the process out (it is no longer expected to run) and stops
    /// its probe; the caller stops the process.
    pub(super) fn take_proc(&mut self) -> Option<ProcessHandle> {
        self.proc.take().map(|p| {
            p.cancel.cancel();
            p.handle
        })
    }

    fn persisted(&self) -> InstalledModule {
        InstalledModule {
            name: self.name.clone(),
            epoch: self.epoch,
            fencing: self.fencing,
            package: self.package.clone(),
            depmgr: self.depmgr.clone(),
            restore_seq: self.restore_seq,
            starts: self.starts,
        }
    }
}

impl Table {
    /// The table of a fresh start: every installed module is `Stopped`
    /// until the supervisor orders a restore.
    pub fn new(cfg: TableConfig, persisted: &PersistedState) -> Table {
        let mut next_op = 0;
        let slots = persisted
            .modules
            .iter()
            .map(|m| {
                next_op += 1;
                Slot {
                    name: m.name.clone(),
                    epoch: m.epoch,
                    fencing: m.fencing,
                    package: m.package.clone(),
                    depmgr: m.depmgr.clone(),
                    status: ModuleStatus::Stopped,
                    restore_seq: m.restore_seq,
                    starts: m.starts,
                    installed: true,
                    stopping: false,
                    op: next_op,
                    cancel: cfg.shutdown.child_token(),
                    proc: None,
                    last_error: None,
                }
            })
            .collect();
        Table {
            cfg,
            slots,
            epochs: persisted.epochs.clone(),
            table_version: 1,
            reports: Vec::new(),
            lease: None,
            leader: None,
            next_op,
            rev: 1,
            logged: HashSet::new(),
            refusals: VecDeque::new(),
            warned_short_lease: false,
        }
    }

    pub(super) fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
    fn slot_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.name == name)
    }
    /// The slot, if `op` is still its current operation.
    pub(super) fn slot_op(&mut self, name: &str, op: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.name == name && s.op == op)
    }
    fn op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op
    }

    /// Queues a report for the next heartbeats (until accepted); an equal
    /// report already queued is not repeated.
    pub(super) fn report(&mut self, module: &str, epoch: Epoch, kind: ReportKind, message: String) {
        let r = Report {
            module: module.to_string(),
            epoch,
            kind,
            message,
        };
        if self.reports.contains(&r) {
            return;
        }
        if self.reports.len() >= MAX_REPORTS {
            self.reports.remove(0);
        }
        self.reports.push(r);
    }

    /// The persisted part, with a new revision.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        self.rev += 1;
        let mut p = PersistedState::new(self.cfg.incarnation);
        p.epochs = self.epochs.clone();
        p.modules = self
            .slots
            .iter()
            .filter(|s| s.installed)
            .map(Slot::persisted)
            .collect();
        (self.rev, p)
    }

    // ------------------------------------------------------------ leader

    /// A heartbeat carrying `sent_reports` reports, sent at `sent_at` to
    /// `leader`, was accepted with a lease of `lease_ms`.
    pub fn accepted(
        &mut self,
        sent_reports: usize,
        sent_at: Instant,
        lease_ms: u64,
        leader: &str,
    ) -> Vec<Effect> {
        let n = sent_reports.min(self.reports.len());
        self.reports.drain(..n);
        self.lease = fence::renew(self.lease, sent_at, lease_ms);
        let grace = self.cfg.stop_grace;
        if lease_ms > 0
            && Duration::from_millis(lease_ms) <= grace + fence::FENCE_MARGIN
            && !self.warned_short_lease
        {
            self.warned_short_lease = true;
            tracing::warn!(
                lease_ms,
                stop_grace_ms = grace.as_millis() as u64,
                "the granted lease is not longer than the stop grace: at-most-one modules are fenced at once"
            );
        }
        if self.leader.as_deref() != Some(leader) {
            tracing::info!(leader, "heartbeats accepted by the leader");
            self.leader = Some(leader.to_string());
        }
        vec![Effect::LeaseChanged]
    }

    /// No leader is known (unreachable, or no hint).
    pub fn lost_leader(&mut self) {
        self.leader = None;
    }

    // -------------------------------------------------------- directives

    /// One directive of an accepted reply: decided, then (when executed)
    /// the state change, its persistence and its task.
    pub fn directive(&mut self, d: Directive) -> Vec<Effect> {
        let name = d.module().to_string();
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
                if self.refusals.len() >= MAX_REFUSALS_SHOWN {
                    self.refusals.pop_front();
                }
                self.refusals.push_back(format!("{name}: {why}"));
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
        };
        self.table_version += 1;
        vec![
            Effect::Persist(self.snapshot()),
            Effect::Notify,
            Effect::Spawn(task),
        ]
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

    // -------------------------------------------------------- task steps

    /// The install task of `op` prepared the package (or failed to).
    pub fn install_done(&mut self, name: &str, op: u64, result: Result<(), Error>) -> Vec<Effect> {
        let Some(slot) = self.slot_op(name, op) else {
            return vec![];
        };
        let epoch = slot.epoch;
        match result {
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(module = %name, epoch, "install failed: {why}");
                slot.status = ModuleStatus::InstallFailed;
                slot.last_error = Some(why.clone());
                self.report(name, epoch, ReportKind::InstallFailed, why);
                vec![
                    Effect::Notify,
                    Effect::RemovePlacement {
                        module: name.to_string(),
                        epoch,
                    },
                ]
            }
            Ok(()) => {
                tracing::info!(module = %name, epoch, "installed");
                slot.installed = true;
                vec![
                    Effect::Persist(self.snapshot()),
                    Effect::KeepOnlyPlacement {
                        module: name.to_string(),
                        keep: epoch,
                    },
                    Effect::Start {
                        module: name.to_string(),
                        op,
                        after_install: true,
                    },
                ]
            }
        }
    }

    /// What the restore task of `op` prepares, if `op` is still current.
    pub fn restore_target(&mut self, name: &str, op: u64) -> Option<RestoreTarget> {
        self.slot_op(name, op).map(|s| RestoreTarget {
            epoch: s.epoch,
            package: s.package.clone(),
            depmgr: s.depmgr.clone(),
        })
    }

    /// The restore task of `op` prepared the package again (or failed to).
    pub fn restore_done(&mut self, name: &str, op: u64, result: Result<(), Error>) -> Vec<Effect> {
        let Some(slot) = self.slot_op(name, op) else {
            return vec![];
        };
        let epoch = slot.epoch;
        match result {
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(module = %name, epoch, "restore failed: {why}");
                slot.status = ModuleStatus::Failed;
                slot.last_error = Some(why.clone());
                self.report(name, epoch, ReportKind::Failed, format!("restore: {why}"));
                vec![Effect::Notify]
            }
            Ok(()) => vec![Effect::Start {
                module: name.to_string(),
                op,
                after_install: false,
            }],
        }
    }

    /// The stop task of `op` stopped the process: the module leaves the
    /// table (its epoch record stays).
    pub fn forget(&mut self, name: &str, op: u64) -> Vec<Effect> {
        if self.slot_op(name, op).is_none() {
            return vec![];
        }
        self.slots.retain(|s| s.name != name);
        self.table_version += 1;
        vec![
            Effect::Persist(self.snapshot()),
            Effect::Notify,
            Effect::ForgetFiles {
                module: name.to_string(),
            },
        ]
    }

    // --------------------------------------------------------- processes

    /// Starting the process of `op` at `now`: a launch, or a refusal when
    /// the lease fences the module.
    pub fn start(&mut self, name: &str, op: u64, after_install: bool, now: Instant) -> Vec<Effect> {
        let lease = self.lease;
        let grace = self.cfg.stop_grace;
        let Some(slot) = self.slot_op(name, op) else {
            return vec![];
        };
        if !fence::may_start(slot.fencing, lease, grace, now) {
            let epoch = slot.epoch;
            slot.status = ModuleStatus::Fenced;
            tracing::warn!(module = %name, "not starting: the lease does not cover an at-most-one module");
            self.report(
                name,
                epoch,
                ReportKind::Fenced,
                "not started: lease expired".into(),
            );
            return vec![Effect::Notify];
        }
        slot.starts += 1;
        vec![Effect::Launch(LaunchPlan {
            module: name.to_string(),
            op,
            epoch: slot.epoch,
            restore_seq: slot.restore_seq,
            manifest: slot.package.manifest.clone(),
            after_install,
        })]
    }

    /// The launch of `plan` ended: a running process (or one to stop at
    /// once), or an error that fails the module.
    pub fn launched(
        &mut self,
        plan: &LaunchPlan,
        launch: &Launch,
        result: Result<ProcessHandle, Error>,
        now: Instant,
    ) -> Vec<Effect> {
        let name = plan.module.as_str();
        let lease = self.lease;
        let grace = self.cfg.stop_grace;
        let handle = match result {
            Ok(h) => h,
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(module = %name, "{why}");
                let Some(slot) = self.slot_op(name, plan.op) else {
                    return vec![];
                };
                let epoch = slot.epoch;
                slot.last_error = Some(why.clone());
                let kind = if plan.after_install {
                    slot.status = ModuleStatus::InstallFailed;
                    ReportKind::InstallFailed
                } else {
                    slot.status = ModuleStatus::Failed;
                    ReportKind::Failed
                };
                self.report(name, epoch, kind, why);
                return vec![Effect::Notify];
            }
        };
        let Some(slot) = self.slot_op(name, plan.op) else {
            // Superseded while it was being spawned.
            return vec![Effect::Notify, Effect::Stop(handle)];
        };
        let epoch = slot.epoch;
        if !fence::may_start(slot.fencing, lease, grace, now) {
            // The fence ran while the process was being spawned.
            slot.status = ModuleStatus::Fenced;
            self.report(
                name,
                epoch,
                ReportKind::Fenced,
                "stopped at start: lease expired".into(),
            );
            return vec![Effect::Notify, Effect::Stop(handle)];
        }
        let exited = handle.exited().borrow().clone();
        let mut effects = vec![Effect::Notify];
        if let Some(how) = exited {
            slot.status = ModuleStatus::Failed;
            slot.last_error = Some(how.clone());
            self.report(name, epoch, ReportKind::Failed, format!("process {how}"));
        } else {
            let cancel = slot.cancel.child_token();
            if let Some(check) = slot.package.manifest.health.clone() {
                slot.status = ModuleStatus::Starting;
                effects.push(Effect::Probe(ProbePlan {
                    module: name.to_string(),
                    op: plan.op,
                    check,
                    launch: launch.clone(),
                    cancel: cancel.clone(),
                }));
            } else {
                slot.status = ModuleStatus::Running;
            }
            slot.last_error = None;
            tracing::info!(module = %name, epoch, pid = handle.pid, "started");
            slot.proc = Some(Proc { handle, cancel });
        }
        effects.push(Effect::Persist(self.snapshot()));
        effects
    }

    /// The process of `op` exited: a failure, unless nobody expected it to
    /// run any more.
    pub fn exited(&mut self, name: &str, op: u64, how: &str) -> Vec<Effect> {
        let Some(slot) = self.slot_op(name, op) else {
            return vec![];
        };
        let Some(handle) = slot.take_proc() else {
            return vec![];
        };
        let epoch = slot.epoch;
        let why = format!("process {} {how}", handle.pid);
        slot.status = ModuleStatus::Failed;
        slot.last_error = Some(why.clone());
        self.report(name, epoch, ReportKind::Failed, why);
        tracing::warn!(module = %name, "module failed: {how}");
        vec![Effect::Notify]
    }

    /// The probe of `op` passed for the first time.
    pub fn probe_passed(&mut self, name: &str, op: u64) -> Vec<Effect> {
        match self.slot_op(name, op) {
            Some(slot) if slot.status == ModuleStatus::Starting => {
                slot.status = ModuleStatus::Running;
                tracing::info!(module = %name, "health probe passes");
                vec![Effect::Notify]
            }
            _ => vec![],
        }
    }

    /// The probe of `op` failed `failure_threshold` times in a row: the
    /// module failed and its process is stopped.
    pub fn probe_failed(&mut self, name: &str, op: u64, why: String) -> Vec<Effect> {
        let Some(slot) = self.slot_op(name, op) else {
            return vec![];
        };
        let Some(handle) = slot.take_proc() else {
            return vec![];
        };
        let epoch = slot.epoch;
        slot.status = ModuleStatus::Failed;
        slot.last_error = Some(why.clone());
        tracing::warn!(module = %name, "module failed: {why}; stopping it");
        self.report(name, epoch, ReportKind::Failed, why);
        vec![Effect::Notify, Effect::Stop(handle)]
    }

    /// Shutdown: every operation is cancelled and every process stopped.
    pub fn stop_all(&mut self) -> Vec<Effect> {
        let victims: Vec<ProcessHandle> = self
            .slots
            .iter_mut()
            .filter_map(|s| {
                s.cancel.cancel();
                s.take_proc()
            })
            .collect();
        if !victims.is_empty() {
            tracing::info!(modules = victims.len(), "stopping modules");
        }
        vec![Effect::StopAll(victims)]
    }

    /// Every process of [`Table::stop_all`] is gone.
    pub fn all_stopped(&mut self) -> Vec<Effect> {
        for s in self.slots.iter_mut() {
            s.status = ModuleStatus::Stopped;
        }
        vec![Effect::Notify]
    }
}

// ---------------------------------------------------------- directive rules

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
    }
}

/// Key of a directive for log-once bookkeeping.
fn directive_key(d: &Directive) -> String {
    match d {
        Directive::Restore(r) => format!("restore/{}/{}/{}", r.module, r.epoch, r.seq),
        Directive::Install(i) => format!("install/{}/{}", i.module, i.epoch),
        Directive::Stop(s) => format!("stop/{}/{}", s.module, s.epoch),
    }
}

#[cfg(test)]
mod tests;
