//! The module table: every module this node holds, and every rule that
//! changes it, as a planner. No clock, no I/O: each method takes what was
//! observed (a directive, the end of an install, an exit, `now`) and returns
//! [`Effect`]s, values describing what the edge must do next (persist,
//! wake the heartbeat, run a task, stop a process, start one). The only
//! side effect a method has is a log line.
//!
//! ## Data flow
//! ```text
//! reply ──► plan_reply() ──► snapshot ──► (saved by the edge) ──► execute_reply(saved?)
//!                                                   ──► per directive [Notify, Spawn(task)]
//! task step (installed, restored, stopped) ──► install_done() / ... ──► effects
//! process events (launched, exited, probe) ──► launched() / exited() / ... ──► effects
//! ```
//! [`super::Agent::execute`] is the one place effects turn into I/O.
//!
//! ## Parts
//! - this file: the table's data ([`Table`], its slots), the [`Effect`]s and
//!   [`Task`]s it returns, and the lease grant from the leader;
//! - `directive`: the directive rules ([`decide`]), the plan of a whole
//!   reply ([`ReplyPlan`]) and the state change of an executed directive;
//! - `steps`: the steps of the tasks (installed, restored, stopped) and the
//!   process events (start, launched, exited, probe verdicts, shutdown).
//!
//! Fencing's transitions live with the lease rules in `super::fence`, the
//! views in `super::view`.
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
//! - A reply is decided as a whole before any of it executes
//!   ([`Table::plan_reply`]); the epoch records (highest epoch, last stop)
//!   its executed directives raise are in the one snapshot the edge saves
//!   first, and a directive executes ([`Table::execute_reply`]) only when
//!   that save succeeded and it is still decided `Execute`. A failed save
//!   executes nothing: no slot changes, no process stops, no task starts;
//!   the error is logged, shown among the refusals and reported, and the
//!   leader's repeat executes once the state can be saved. Records outlive
//!   the module, so a stale directive is refused even after a restart.
//! - An `at-most-one` module is never launched while the lease fences it
//!   (checked before the launch and again once the process exists).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use proto::heartbeat::{Install, MAX_REPORT_MESSAGE, ModuleStatus, Prefetch, Report, ReportKind};
use proto::manifest::{ConfigPackage, HealthCheck, Manifest};
use proto::spec::Fencing;
use proto::{Epoch, ModuleName};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fence;
use crate::process::{Launch, ProcessHandle};
use crate::state::{EpochRecord, InstalledModule, PersistedState};

/// Most modules one node holds (the packed status count is a u16); the
/// supervisor's heartbeat body limit is derived from it.
pub use proto::heartbeat::MAX_MODULES;
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
    /// Pre-stage a package in the cache, in the background
    /// (`Agent::prefetch`).
    Prefetch(Box<Prefetch>),
}

/// The background work of a directive, run after the state its reply
/// needs was saved.
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
    /// ends (less under short leases: [`Table::fence_grace`]).
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
    /// The supervisor cluster `epochs` belong to (0: none yet).
    pub(super) cluster: u64,
    pub(super) table_version: u64,
    pub(super) reports: Vec<Report>,
    /// End of the lease (monotonic); `None` until one is granted.
    pub(super) lease: Option<Instant>,
    /// Length of the last lease granted (ms; 0 before the first): sets the
    /// fence's grace ([`Table::fence_grace`]).
    lease_ms: u64,
    pub(super) leader: Option<String>,
    next_op: u64,
    /// Revision of the persisted part, for ordered saves.
    rev: u64,
    /// Directives already logged as refused or unusable (log once).
    logged: HashSet<String>,
    pub(super) refusals: VecDeque<String>,
    /// Directives (key and save error) already logged and reported as not
    /// executed for want of a save; cleared by a successful one.
    unsaved: HashSet<String>,
    warned_short_lease: bool,
    warned_long_lease: bool,
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
            cluster: persisted.cluster,
            table_version: 1,
            reports: Vec::new(),
            lease: None,
            lease_ms: 0,
            leader: None,
            next_op,
            rev: 1,
            logged: HashSet::new(),
            refusals: VecDeque::new(),
            unsaved: HashSet::new(),
            warned_short_lease: false,
            warned_long_lease: false,
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
    /// A message longer than [`MAX_REPORT_MESSAGE`] bytes is cut at a
    /// character boundary (the heartbeat's size bound counts on it).
    pub(super) fn report(&mut self, module: &str, epoch: Epoch, kind: ReportKind, message: String) {
        let message = cut_message(message);
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

    /// The package of `module` at `epoch`, placed on another node, is in
    /// the cache (pre-staged): reported to the leader (again, when the
    /// leader repeats its prefetch).
    pub fn prestaged(&mut self, module: &str, epoch: Epoch, message: String) -> Vec<Effect> {
        self.report(module, epoch, ReportKind::Prestaged, message);
        vec![Effect::Notify]
    }

    /// Every archive digest of every module this node holds: the cache
    /// never evicts them.
    pub fn held_digests(&self) -> std::collections::BTreeSet<String> {
        self.slots
            .iter()
            .flat_map(|s| s.package.artifacts.iter().map(|a| a.digest.clone()))
            .collect()
    }

    /// The persisted part, with a new revision.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        self.rev += 1;
        let mut p = PersistedState::new(self.cfg.incarnation);
        p.epochs = self.epochs.clone();
        p.cluster = self.cluster;
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
        if lease_ms > 0 && lease_ms != self.lease_ms {
            self.lease_ms = lease_ms;
            let grace = self.fence_grace();
            if grace < self.cfg.stop_grace && !self.warned_short_lease {
                self.warned_short_lease = true;
                tracing::warn!(
                    lease_ms,
                    stop_grace_ms = self.cfg.stop_grace.as_millis() as u64,
                    fence_grace_ms = grace.as_millis() as u64,
                    "the granted lease is short for the stop grace: a fence gives at-most-one modules {} ms between SIGTERM and SIGKILL, not {} (--stop-grace-ms), so that it starts halfway through the lease",
                    grace.as_millis(),
                    self.cfg.stop_grace.as_millis()
                );
            }
        }
        if Duration::from_millis(lease_ms) > fence::MAX_LEASE && !self.warned_long_lease {
            self.warned_long_lease = true;
            tracing::warn!(
                lease_ms,
                leader,
                max_lease_ms = fence::MAX_LEASE.as_millis() as u64,
                "the granted lease is over the agent's cap: holding the cap only"
            );
        }
        if self.leader.as_deref() != Some(leader) {
            tracing::info!(leader, "heartbeats accepted by the leader");
            self.leader = Some(leader.to_string());
        }
        vec![Effect::LeaseChanged]
    }

    /// The SIGTERM → SIGKILL grace of a fence under the leases granted so
    /// far ([`fence::fence_grace`]).
    pub fn fence_grace(&self) -> Duration {
        fence::fence_grace(self.cfg.stop_grace, self.lease_ms)
    }

    /// No leader is known (unreachable, or no hint).
    pub fn lost_leader(&mut self) {
        self.leader = None;
    }
}

mod directive;
mod steps;

pub use directive::{Decision, ModuleView, ReplyPlan, decide};

#[cfg(test)]
mod tests;

/// `message`, cut to at most [`MAX_REPORT_MESSAGE`] bytes at a character
/// boundary, ending in `…` when cut.
fn cut_message(mut message: String) -> String {
    if message.len() <= MAX_REPORT_MESSAGE {
        return message;
    }
    const MORE: &str = "…";
    let mut end = MAX_REPORT_MESSAGE - MORE.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(MORE);
    message
}
