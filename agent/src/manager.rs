//! The node manager's core: the modules this node holds, and everything
//! that changes them.
//!
//! ## Data flow
//! ```text
//! heartbeat reply ──► Agent::apply ──► decide() ──► state change ──► persist
//!                                                     │
//!             install / restore / stop tasks ◄────────┘
//!                     │ spawn (spawner thread), stop (SIGTERM→grace→SIGKILL)
//!   exit watcher, probe task, lease fence ──► status change ──► `changed`
//!                                                        │
//!                    heartbeat loop ◄─── Agent::heartbeat ◄┘ (at once)
//! ```
//! All module state sits behind one mutex ([`State`]), held only for short,
//! non-blocking sections; waiting (downloads, backoff, grace periods) happens
//! in tasks outside it. Every status change wakes the heartbeat loop
//! (`changed`), which is how an exit reaches the leader within one round trip.
//!
//! ## Invariants
//! - Each operation on a module (install, restore, stop) gets a fresh,
//!   globally unique `op` number and cancellation token; a task only writes
//!   its result while the module's `op` is still its own, so a superseded
//!   operation can never overwrite a newer one.
//! - A slot holds a process handle only while that process is *expected* to
//!   run. Whoever stops a process takes the handle out first; the exit
//!   watcher reports a failure only when it finds the handle still there.
//!   So an intended stop is never reported as a crash, and every crash is.
//! - The epoch record of a module (highest epoch, last stop) is persisted
//!   before the directive that raised it takes effect, and outlives the
//!   module, so a stale directive is refused even after a restart.
//! - An `at-most-one` module is never started while the lease fences it,
//!   and is stopped (SIGKILL at the latest) before its lease ends.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::heartbeat::{
    Directive, Heartbeat, Install, ModuleStatus, ModuleTable, PackedStatuses, Report, ReportKind,
    Restore, Stop, TableEntry,
};
use proto::manifest::ConfigPackage;
use proto::spec::Fencing;
use proto::{Epoch, ModuleName};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::{self, Fetcher};
use crate::decide::{self, Decision, ModuleView};
use crate::probe::{self, ProbeTracker, Verdict};
use crate::process::{self, Launch, ProcessHandle};
use crate::spawner::Spawner;
use crate::state::{DataDir, EpochRecord, InstalledModule, PersistedState, StateFile};

/// Most modules one node holds (the packed status count is a u16).
pub const MAX_MODULES: usize = 10_000;
/// Most unacknowledged reports kept; the oldest go first.
const MAX_REPORTS: usize = 1000;
/// Refusals shown in the status API.
const MAX_REFUSALS_SHOWN: usize = 20;

/// What the agent is told at start-up.
#[derive(Debug)]
pub struct AgentOptions {
    pub node: String,
    /// The `--listen` address, announced in the module table.
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub stop_grace: Duration,
    pub fetch_timeout: Duration,
    /// depmgr to use when an install directive names none.
    pub default_depmgr: Option<String>,
    pub state_file: StateFile,
    pub persisted: PersistedState,
}

/// The node manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    sh: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node: String,
    addr: String,
    labels: BTreeMap<String, String>,
    incarnation: u64,
    stop_grace: Duration,
    default_depmgr: Option<String>,
    dirs: DataDir,
    state_file: Arc<StateFile>,
    fetcher: Fetcher,
    spawner: Spawner,
    probe_client: reqwest::Client,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Woken on every status or table change: the heartbeat goes at once.
    changed: Notify,
    /// Woken when the lease changes.
    lease_changed: Notify,
    st: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// In table order.
    slots: Vec<Slot>,
    epochs: BTreeMap<ModuleName, EpochRecord>,
    table_version: u64,
    reports: Vec<Report>,
    /// End of the lease (monotonic); `None` until one is granted.
    lease: Option<Instant>,
    leader: Option<String>,
    next_op: u64,
    /// Revision of the persisted part, for ordered saves.
    rev: u64,
    /// Directives already logged as refused or unusable (log once).
    logged: HashSet<String>,
    refusals: VecDeque<String>,
    warned_short_lease: bool,
}

#[derive(Debug)]
struct Slot {
    name: ModuleName,
    epoch: Epoch,
    fencing: Fencing,
    package: ConfigPackage,
    depmgr: String,
    status: ModuleStatus,
    restore_seq: u32,
    starts: u64,
    /// The package of this placement is unpacked and recorded.
    installed: bool,
    stopping: bool,
    op: u64,
    /// Cancels the tasks of the current operation.
    cancel: CancellationToken,
    proc: Option<Proc>,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Proc {
    handle: ProcessHandle,
    /// Cancels the probe task of this process.
    cancel: CancellationToken,
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
    fn take_proc(&mut self) -> Option<ProcessHandle> {
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

impl State {
    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
    fn slot_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.name == name)
    }
    /// The slot, if `op` is still its current operation.
    fn slot_op(&mut self, name: &str, op: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.name == name && s.op == op)
    }
    fn op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op
    }
    fn report(&mut self, module: &str, epoch: Epoch, kind: ReportKind, message: String) {
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
    fn snapshot(&mut self, incarnation: u64) -> (u64, PersistedState) {
        self.rev += 1;
        let mut p = PersistedState::new(incarnation);
        p.epochs = self.epochs.clone();
        p.modules = self
            .slots
            .iter()
            .filter(|s| s.installed)
            .map(Slot::persisted)
            .collect();
        (self.rev, p)
    }
}

/// Follow-up work of a directive, run after the state change is persisted.
enum Follow {
    Install {
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        install: Box<Install>,
        cancel: CancellationToken,
    },
    Restore {
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        backoff: Duration,
        cancel: CancellationToken,
    },
    Stop {
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
    },
}

/// One module in the status API.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatusView {
    pub name: String,
    pub epoch: Epoch,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub fencing: Fencing,
    pub restore_seq: u32,
    pub package: String,
    pub last_error: Option<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub node: String,
    pub leader: Option<String>,
    pub lease_ms_left: u64,
    pub incarnation: u64,
    pub table_version: u64,
    pub modules: Vec<ModuleStatusView>,
    /// Recent directives refused as stale (newest last).
    pub refused: Vec<String>,
    pub pending_reports: usize,
}

impl Agent {
    /// Builds the agent from its persisted state: every installed module is
    /// `Stopped` until the supervisor orders a restore.
    pub fn new(
        opts: AgentOptions,
        spawner: Spawner,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Agent, crate::Error> {
        let dirs = opts.state_file.dir().clone();
        let fetcher = Fetcher::new(dirs.clone(), opts.fetch_timeout)?;
        let probe_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| crate::Error::Internal(format!("http client: {e}")))?;
        let mut next_op = 0;
        let slots = opts
            .persisted
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
                    cancel: shutdown.child_token(),
                    proc: None,
                    last_error: None,
                }
            })
            .collect();
        let st = State {
            slots,
            epochs: opts.persisted.epochs.clone(),
            table_version: 1,
            reports: Vec::new(),
            lease: None,
            leader: None,
            next_op,
            rev: 1,
            logged: HashSet::new(),
            refusals: VecDeque::new(),
            warned_short_lease: false,
        };
        Ok(Agent {
            sh: Arc::new(Shared {
                node: opts.node,
                addr: opts.addr,
                labels: opts.labels,
                incarnation: opts.persisted.incarnation,
                stop_grace: opts.stop_grace,
                default_depmgr: opts.default_depmgr,
                dirs,
                state_file: Arc::new(opts.state_file),
                fetcher,
                spawner,
                probe_client,
                tasks,
                shutdown,
                changed: Notify::new(),
                lease_changed: Notify::new(),
                st: Mutex::new(st),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.sh.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn incarnation(&self) -> u64 {
        self.sh.incarnation
    }

    pub fn node(&self) -> &str {
        &self.sh.node
    }

    /// Woken whenever the heartbeat should go out at once.
    pub fn changed(&self) -> &Notify {
        &self.sh.changed
    }

    fn notify(&self) {
        self.sh.changed.notify_one();
    }

    /// The heartbeat with sequence number `seq`; the table is included
    /// unless the leader acknowledged the current version (`acked`).
    /// Also returns how many reports it carries (to drop once accepted).
    pub fn heartbeat(&self, seq: u64, acked: Option<u64>) -> (Heartbeat, usize) {
        let st = self.lock();
        let statuses: Vec<ModuleStatus> = st.slots.iter().map(|s| s.status).collect();
        let table = (acked != Some(st.table_version)).then(|| ModuleTable {
            addr: self.sh.addr.clone(),
            labels: self.sh.labels.clone(),
            modules: st
                .slots
                .iter()
                .map(|s| TableEntry {
                    module: s.name.clone(),
                    epoch: s.epoch,
                    restore_seq: s.restore_seq,
                })
                .collect(),
        });
        let hb = Heartbeat {
            node: self.sh.node.clone(),
            incarnation: self.sh.incarnation,
            seq,
            table_version: st.table_version,
            table,
            statuses: PackedStatuses::pack(&statuses),
            reports: st.reports.clone(),
        };
        (hb, st.reports.len())
    }

    /// A heartbeat carrying `sent_reports` reports, sent at `sent_at` to
    /// `leader`, was accepted with a lease of `lease_ms`.
    pub fn accepted(&self, sent_reports: usize, sent_at: Instant, lease_ms: u64, leader: &str) {
        let mut st = self.lock();
        let n = sent_reports.min(st.reports.len());
        st.reports.drain(..n);
        st.lease = decide::renew(st.lease, sent_at, lease_ms);
        let floor = self.sh.stop_grace + decide::FENCE_MARGIN;
        if lease_ms > 0 && Duration::from_millis(lease_ms) <= floor && !st.warned_short_lease {
            st.warned_short_lease = true;
            tracing::warn!(
                lease_ms,
                stop_grace_ms = self.sh.stop_grace.as_millis() as u64,
                "the granted lease is not longer than the stop grace: at-most-one modules are fenced at once"
            );
        }
        if st.leader.as_deref() != Some(leader) {
            tracing::info!(leader, "heartbeats accepted by the leader");
            st.leader = Some(leader.to_string());
        }
        drop(st);
        self.sh.lease_changed.notify_one();
    }

    /// No leader is known (unreachable, or no hint).
    pub fn lost_leader(&self) {
        self.lock().leader = None;
    }

    /// The status API's view.
    pub fn status(&self) -> StatusView {
        let st = self.lock();
        let now = Instant::now();
        StatusView {
            node: self.sh.node.clone(),
            leader: st.leader.clone(),
            lease_ms_left: st
                .lease
                .map(|d| d.saturating_duration_since(now).as_millis() as u64)
                .unwrap_or(0),
            incarnation: self.sh.incarnation,
            table_version: st.table_version,
            modules: st
                .slots
                .iter()
                .map(|s| ModuleStatusView {
                    name: s.name.clone(),
                    epoch: s.epoch,
                    state: s.status.as_str(),
                    pid: s.proc.as_ref().map(|p| p.handle.pid),
                    restarts: s.starts.saturating_sub(1),
                    fencing: s.fencing,
                    restore_seq: s.restore_seq,
                    package: s.package.manifest.package_ref().to_string(),
                    last_error: s.last_error.clone(),
                })
                .collect(),
            refused: st.refusals.iter().cloned().collect(),
            pending_reports: st.reports.len(),
        }
    }

    async fn persist(&self, snap: (u64, PersistedState)) {
        let file = self.sh.state_file.clone();
        let res = tokio::task::spawn_blocking(move || file.save(snap.0, &snap.1)).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot persist the agent state: {e}"),
            Err(e) => tracing::error!("state persist task failed: {e}"),
        }
    }

    /// Executes the directives of an accepted heartbeat reply, in order.
    /// Returns once each is decided, persisted and its work started.
    pub async fn apply(&self, directives: Vec<Directive>) {
        for d in directives {
            self.apply_one(d).await;
        }
    }

    async fn apply_one(&self, d: Directive) {
        let name = d.module().to_string();
        let (follow, snap) = {
            let mut st = self.lock();
            let view = st.slot(&name).map(Slot::view);
            let record = st.epochs.get(&name).copied();
            match decide::decide(view.as_ref(), record.as_ref(), &d) {
                Decision::Repeat => return,
                Decision::Stale(why) => {
                    let key = directive_key(&d);
                    if st.logged.insert(key) {
                        tracing::warn!(module = %name, "refused directive: {why}");
                        st.report(&name, d.epoch(), ReportKind::StaleDirective, why.clone());
                        if st.refusals.len() >= MAX_REFUSALS_SHOWN {
                            st.refusals.pop_front();
                        }
                        st.refusals.push_back(format!("{name}: {why}"));
                        drop(st);
                        self.notify();
                    }
                    return;
                }
                Decision::Unusable(why) => {
                    if st.logged.insert(directive_key(&d)) {
                        tracing::warn!(module = %name, "cannot execute directive: {why}");
                    }
                    return;
                }
                Decision::Execute => {}
            }
            if st.logged.len() > 10_000 {
                st.logged.clear();
            }
            let follow = match d {
                Directive::Install(i) => match self.begin_install(&mut st, i) {
                    Some(f) => f,
                    None => {
                        drop(st);
                        self.notify();
                        return;
                    }
                },
                Directive::Restore(r) => self.begin_restore(&mut st, r),
                Directive::Stop(s) => self.begin_stop(&mut st, s),
            };
            st.table_version += 1;
            (follow, st.snapshot(self.sh.incarnation))
        };
        // Durable before it takes effect (and before the next heartbeat).
        self.persist(snap).await;
        self.notify();
        let agent = self.clone();
        match follow {
            Follow::Install {
                name,
                op,
                old,
                install,
                cancel,
            } => {
                self.sh
                    .tasks
                    .spawn(async move { agent.run_install(name, op, old, install, cancel).await });
            }
            Follow::Restore {
                name,
                op,
                old,
                backoff,
                cancel,
            } => {
                self.sh
                    .tasks
                    .spawn(async move { agent.run_restore(name, op, old, backoff, cancel).await });
            }
            Follow::Stop { name, op, old } => {
                self.sh
                    .tasks
                    .spawn(async move { agent.run_stop(name, op, old).await });
            }
        }
    }

    fn begin_install(&self, st: &mut State, mut i: Install) -> Option<Follow> {
        let record = st.epochs.entry(i.module.clone()).or_default();
        record.highest = record.highest.max(i.epoch);
        if i.depmgr.is_empty()
            && let Some(d) = &self.sh.default_depmgr
        {
            i.depmgr = d.clone();
        }
        let op = st.op();
        let cancel = self.sh.shutdown.child_token();
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
        if st.slot(&i.module).is_none() && st.slots.len() >= MAX_MODULES {
            let why = format!("this node already holds {MAX_MODULES} modules");
            tracing::warn!(module = %i.module, "install refused: {why}");
            st.report(&i.module, i.epoch, ReportKind::InstallFailed, why);
            return None;
        }
        let old = match st.slot_mut(&i.module) {
            Some(slot) => {
                tracing::info!(module = %i.module, from = slot.epoch, to = i.epoch, "replacing placement");
                slot.cancel.cancel();
                let old = slot.take_proc();
                *slot = fresh;
                old
            }
            None => {
                st.slots.push(fresh);
                None
            }
        };
        tracing::info!(module = %i.module, epoch = i.epoch, package = %i.package.manifest.package_ref(), "installing");
        Some(Follow::Install {
            name: i.module.clone(),
            op,
            old,
            install: Box::new(i),
            cancel,
        })
    }

    fn begin_restore(&self, st: &mut State, r: Restore) -> Follow {
        let op = st.op();
        let cancel = self.sh.shutdown.child_token();
        let mut old = None;
        if let Some(slot) = st.slot_mut(&r.module) {
            slot.cancel.cancel();
            old = slot.take_proc();
            slot.cancel = cancel.clone();
            slot.op = op;
            slot.restore_seq = r.seq;
            slot.status = ModuleStatus::Restoring;
            tracing::info!(module = %r.module, epoch = r.epoch, seq = r.seq, backoff_ms = r.backoff_ms, "restoring");
        }
        Follow::Restore {
            name: r.module,
            op,
            old,
            backoff: Duration::from_millis(r.backoff_ms),
            cancel,
        }
    }

    fn begin_stop(&self, st: &mut State, s: Stop) -> Follow {
        let record = st.epochs.entry(s.module.clone()).or_default();
        record.highest = record.highest.max(s.epoch);
        record.stopped_at = Some(record.stopped_at.unwrap_or(0).max(s.epoch));
        let op = st.op();
        let mut old = None;
        if let Some(slot) = st.slot_mut(&s.module) {
            slot.cancel.cancel();
            old = slot.take_proc();
            slot.op = op;
            slot.stopping = true;
            tracing::info!(module = %s.module, epoch = s.epoch, "stopping and forgetting");
        }
        Follow::Stop {
            name: s.module,
            op,
            old,
        }
    }

    async fn run_install(
        self,
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        i: Box<Install>,
        cancel: CancellationToken,
    ) {
        if let Some(h) = old {
            h.stop(self.sh.stop_grace).await;
        }
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return,
            r = self.prepare(&name, i.epoch, &i.package, &i.depmgr, true) => r,
        };
        if let Err(why) = prepared {
            tracing::warn!(module = %name, epoch = i.epoch, "install failed: {why}");
            {
                let mut st = self.lock();
                let Some(slot) = st.slot_op(&name, op) else {
                    return;
                };
                slot.status = ModuleStatus::InstallFailed;
                slot.last_error = Some(why.clone());
                st.report(&name, i.epoch, ReportKind::InstallFailed, why);
            }
            self.notify();
            let placement = self.sh.dirs.placement_dir(&name, i.epoch);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(placement)).await;
            return;
        }
        let snap = {
            let mut st = self.lock();
            let Some(slot) = st.slot_op(&name, op) else {
                return;
            };
            slot.installed = true;
            st.snapshot(self.sh.incarnation)
        };
        self.persist(snap).await;
        self.remove_other_placements(&name, i.epoch).await;
        tracing::info!(module = %name, epoch = i.epoch, "installed");
        self.start(&name, op, true).await;
    }

    async fn run_restore(
        self,
        name: ModuleName,
        op: u64,
        old: Option<ProcessHandle>,
        backoff: Duration,
        cancel: CancellationToken,
    ) {
        if let Some(h) = old {
            h.stop(self.sh.stop_grace).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        let Some((epoch, package, depmgr)) = self
            .lock()
            .slot_op(&name, op)
            .map(|s| (s.epoch, s.package.clone(), s.depmgr.clone()))
        else {
            return;
        };
        // After an agent restart or a lost directory: unpack from the cache.
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return,
            r = self.prepare(&name, epoch, &package, &depmgr, false) => r,
        };
        if let Err(why) = prepared {
            tracing::warn!(module = %name, epoch, "restore failed: {why}");
            {
                let mut st = self.lock();
                let Some(slot) = st.slot_op(&name, op) else {
                    return;
                };
                slot.status = ModuleStatus::Failed;
                slot.last_error = Some(why.clone());
                st.report(&name, epoch, ReportKind::Failed, format!("restore: {why}"));
            }
            self.notify();
            return;
        }
        self.start(&name, op, false).await;
    }

    async fn run_stop(self, name: ModuleName, op: u64, old: Option<ProcessHandle>) {
        if let Some(h) = old {
            let how = h.stop(self.sh.stop_grace).await;
            tracing::info!(module = %name, pid = h.pid, "stopped: {how}");
        }
        let snap = {
            let mut st = self.lock();
            if st.slot_op(&name, op).is_none() {
                return;
            }
            st.slots.retain(|s| s.name != name);
            st.table_version += 1;
            st.snapshot(self.sh.incarnation)
        };
        self.persist(snap).await;
        self.notify();
        // Forget its files; keep output.log for the operator.
        let root = self.sh.dirs.module_root(&name);
        let _ = tokio::task::spawn_blocking(move || remove_placements(&root, None)).await;
    }

    async fn remove_other_placements(&self, name: &str, keep: Epoch) {
        let root = self.sh.dirs.module_root(name);
        let _ = tokio::task::spawn_blocking(move || remove_placements(&root, Some(keep))).await;
    }

    /// Fetches (or takes from the cache), verifies and unpacks every
    /// artifact of the package, then checks the command. With `fresh`
    /// everything is unpacked anew; otherwise packages already unpacked
    /// (marker present) are kept. The error is the reason for the report.
    async fn prepare(
        &self,
        name: &str,
        epoch: Epoch,
        package: &ConfigPackage,
        depmgr: &str,
        fresh: bool,
    ) -> Result<(), String> {
        let manifest = &package.manifest;
        manifest.validate().map_err(|e| e.to_string())?;
        if manifest.command.is_empty() {
            return Err(format!(
                "manifest of {} has no command to run",
                manifest.package_ref()
            ));
        }
        let own = package
            .own_artifact()
            .ok_or_else(|| "configuration package lists no artifact".to_string())?;
        if own.name != manifest.name || own.version != manifest.version {
            return Err(format!(
                "last artifact {}@{} is not the module's package {}",
                own.name,
                own.version,
                manifest.package_ref()
            ));
        }
        let dirs = &self.sh.dirs;
        let placement = dirs.placement_dir(name, epoch);
        {
            let dir = placement.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if fresh {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                std::fs::create_dir_all(&dir)
            })
            .await
            .map_err(|e| format!("unpack task: {e}"))?
            .map_err(|e| format!("cannot prepare {}: {e}", placement.display()))?;
        }
        for a in &package.artifacts {
            let what = format!("artifact {}@{}", a.name, a.version);
            proto::manifest::PackageRef::new(&a.name, &a.version)
                .validate()
                .map_err(|e| format!("{what}: {e}"))?;
            let dir = dirs.package_dir(name, epoch, &a.name, &a.version);
            let marker = dirs.unpacked_marker(name, epoch, &a.name, &a.version);
            if !fresh
                && dir.is_dir()
                && std::fs::read_to_string(&marker).is_ok_and(|d| d == a.digest)
            {
                continue;
            }
            let bytes = self.sh.fetcher.archive(depmgr, a).await?;
            let digest = a.digest.clone();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let _ = std::fs::remove_file(&marker);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
                }
                if let Err(e) = archive::unpack(&bytes, &dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(format!("{what}: {e}"));
                }
                std::fs::write(&marker, digest)
                    .map_err(|e| format!("cannot write {}: {e}", marker.display()))
            })
            .await
            .map_err(|e| format!("unpack task: {e}"))??;
        }
        let module_dir = dirs.package_dir(name, epoch, &own.name, &own.version);
        check_command(&module_dir, &manifest.command)
    }

    fn launch_for(&self, slot: &Slot) -> Launch {
        let m = &slot.package.manifest;
        let dir = self
            .sh
            .dirs
            .package_dir(&slot.name, slot.epoch, &m.name, &m.version);
        let mut env: Vec<(String, String)> =
            m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.extend([
            ("MODULE_NAME".to_string(), slot.name.clone()),
            ("MODULE_EPOCH".to_string(), slot.epoch.to_string()),
            ("MODULE_NODE".to_string(), self.sh.node.clone()),
            ("MODULE_DIR".to_string(), dir.display().to_string()),
            (
                "MODULE_PACKAGES_DIR".to_string(),
                self.sh
                    .dirs
                    .placement_dir(&slot.name, slot.epoch)
                    .display()
                    .to_string(),
            ),
            (
                "MODULE_RESTORE_SEQ".to_string(),
                slot.restore_seq.to_string(),
            ),
        ]);
        Launch {
            program: command_path(&dir, &m.command),
            args: m.args.clone(),
            dir,
            env,
            log: self.sh.dirs.output_log(&slot.name),
        }
    }

    /// Starts the module's process for operation `op` (if still current and
    /// the lease allows it).
    async fn start(&self, name: &str, op: u64, after_install: bool) {
        let grace = self.sh.stop_grace;
        let launch = {
            let mut st = self.lock();
            let lease = st.lease;
            let Some(slot) = st.slot_op(name, op) else {
                return;
            };
            if !decide::may_start(slot.fencing, lease, grace, Instant::now()) {
                let epoch = slot.epoch;
                slot.status = ModuleStatus::Fenced;
                tracing::warn!(module = %name, "not starting: the lease does not cover an at-most-one module");
                st.report(
                    name,
                    epoch,
                    ReportKind::Fenced,
                    "not started: lease expired".into(),
                );
                drop(st);
                self.notify();
                return;
            }
            slot.starts += 1;
            self.launch_for(slot)
        };
        let agent = self.clone();
        let exit_name = name.to_string();
        let launched = process::launch(&self.sh.spawner, &launch, move |how| {
            agent.on_exit(&exit_name, op, &how)
        })
        .await;
        let handle = match launched {
            Ok(h) => h,
            Err(e) => {
                let why = format!("cannot start {}: {e}", launch.program.display());
                tracing::warn!(module = %name, "{why}");
                {
                    let mut st = self.lock();
                    let Some(slot) = st.slot_op(name, op) else {
                        return;
                    };
                    let epoch = slot.epoch;
                    slot.last_error = Some(why.clone());
                    let kind = if after_install {
                        slot.status = ModuleStatus::InstallFailed;
                        ReportKind::InstallFailed
                    } else {
                        slot.status = ModuleStatus::Failed;
                        ReportKind::Failed
                    };
                    st.report(name, epoch, kind, why);
                }
                self.notify();
                return;
            }
        };
        let mut to_stop = None;
        let mut probe_task = None;
        let snap = {
            let mut st = self.lock();
            let lease = st.lease;
            match st.slot_op(name, op) {
                None => {
                    to_stop = Some(handle.clone());
                    None
                }
                Some(slot) => {
                    let epoch = slot.epoch;
                    if !decide::may_start(slot.fencing, lease, grace, Instant::now()) {
                        // The fence ran while the process was being spawned.
                        slot.status = ModuleStatus::Fenced;
                        to_stop = Some(handle.clone());
                        st.report(
                            name,
                            epoch,
                            ReportKind::Fenced,
                            "stopped at start: lease expired".into(),
                        );
                    } else if let Some(how) = handle.exited().borrow().clone() {
                        slot.status = ModuleStatus::Failed;
                        slot.last_error = Some(how.clone());
                        st.report(name, epoch, ReportKind::Failed, format!("process {}", how));
                    } else {
                        let cancel = slot.cancel.child_token();
                        if let Some(check) = slot.package.manifest.health.clone() {
                            slot.status = ModuleStatus::Starting;
                            probe_task = Some((
                                check,
                                launch.dir.clone(),
                                launch.env.clone(),
                                cancel.clone(),
                            ));
                        } else {
                            slot.status = ModuleStatus::Running;
                        }
                        slot.last_error = None;
                        tracing::info!(module = %name, epoch, pid = handle.pid, "started");
                        slot.proc = Some(Proc {
                            handle: handle.clone(),
                            cancel,
                        });
                    }
                    Some(st.snapshot(self.sh.incarnation))
                }
            }
        };
        self.notify();
        if let Some(h) = to_stop {
            h.stop(grace).await;
            return;
        }
        if let Some((check, dir, env, cancel)) = probe_task {
            let agent = self.clone();
            let name = name.to_string();
            self.sh.tasks.spawn(async move {
                agent.probe_loop(name, op, check, dir, env, cancel).await;
            });
        }
        if let Some(snap) = snap {
            self.persist(snap).await;
        }
    }

    /// The exit watcher's callback: an exit nobody asked for is a failure.
    fn on_exit(&self, name: &str, op: u64, how: &str) {
        {
            let mut st = self.lock();
            let Some(slot) = st.slot_op(name, op) else {
                return;
            };
            let Some(handle) = slot.take_proc() else {
                return;
            };
            let epoch = slot.epoch;
            slot.status = ModuleStatus::Failed;
            slot.last_error = Some(format!("process {} {how}", handle.pid));
            st.report(
                name,
                epoch,
                ReportKind::Failed,
                format!("process {} {how}", handle.pid),
            );
        }
        self.notify();
        tracing::warn!(module = %name, "module failed: {how}");
    }

    async fn probe_loop(
        self,
        name: ModuleName,
        op: u64,
        check: proto::manifest::HealthCheck,
        dir: PathBuf,
        env: Vec<(String, String)>,
        cancel: CancellationToken,
    ) {
        let every = Duration::from_millis(check.interval_ms);
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = ProbeTracker::new(check.failure_threshold);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = probe::probe_once(&check, &dir, &env, &self.sh.probe_client) => r,
            };
            let failure = result.as_ref().err().cloned();
            match tracker.observe(result.is_ok()) {
                Verdict::Same => {}
                Verdict::Passing => {
                    let mut st = self.lock();
                    if let Some(slot) = st.slot_op(&name, op)
                        && slot.status == ModuleStatus::Starting
                    {
                        slot.status = ModuleStatus::Running;
                        drop(st);
                        tracing::info!(module = %name, "health probe passes");
                        self.notify();
                    }
                }
                Verdict::Failing => {
                    let why = format!(
                        "health probe failed {} times in a row: {}",
                        check.failure_threshold,
                        failure.unwrap_or_default()
                    );
                    let handle = {
                        let mut st = self.lock();
                        let Some(slot) = st.slot_op(&name, op) else {
                            return;
                        };
                        let Some(handle) = slot.take_proc() else {
                            return;
                        };
                        let epoch = slot.epoch;
                        slot.status = ModuleStatus::Failed;
                        slot.last_error = Some(why.clone());
                        st.report(&name, epoch, ReportKind::Failed, why.clone());
                        handle
                    };
                    self.notify();
                    tracing::warn!(module = %name, "module failed: {why}; stopping it");
                    handle.stop(self.sh.stop_grace).await;
                    return;
                }
            }
        }
    }

    /// Watches the lease and fences `at-most-one` modules before it ends.
    /// Runs until shutdown.
    pub async fn fence_loop(self) {
        let grace = self.sh.stop_grace;
        let mut fenced_for: Option<Instant> = None;
        loop {
            let lease = self.lock().lease;
            let wake = match lease {
                Some(d) if fenced_for != Some(d) => Some(decide::fence_start(d, grace)),
                _ => None,
            };
            tokio::select! {
                _ = self.sh.shutdown.cancelled() => return,
                _ = self.sh.lease_changed.notified() => continue,
                _ = sleep_until_opt(wake) => {
                    self.fence().await;
                    fenced_for = lease;
                }
            }
        }
    }

    async fn fence(&self) {
        let grace = self.sh.stop_grace;
        let victims: Vec<(ModuleName, u64, ProcessHandle)> = {
            let mut st = self.lock();
            if !decide::lease_fences(st.lease, grace, Instant::now()) {
                return; // renewed meanwhile
            }
            st.slots
                .iter_mut()
                .filter(|s| s.fencing == Fencing::AtMostOne)
                .filter_map(|s| s.take_proc().map(|h| (s.name.clone(), s.op, h)))
                .collect()
        };
        if victims.is_empty() {
            return;
        }
        tracing::warn!(
            modules = victims.len(),
            "lease is running out without renewal: stopping at-most-one modules"
        );
        let stops = victims.iter().map(|(_, _, h)| h.stop(grace));
        let outcomes = futures::future::join_all(stops).await;
        {
            let mut st = self.lock();
            for ((name, op, h), how) in victims.iter().zip(outcomes) {
                let Some(slot) = st.slot_op(name, *op) else {
                    continue;
                };
                let epoch = slot.epoch;
                slot.status = ModuleStatus::Fenced;
                slot.last_error = Some("fenced: lease expired".into());
                tracing::warn!(module = %name, pid = h.pid, "fenced: {how}");
                st.report(
                    name,
                    epoch,
                    ReportKind::Fenced,
                    format!("lease expired; process {} stopped ({how})", h.pid),
                );
            }
        }
        self.notify();
    }

    /// Stops every module (shutdown): SIGTERM, grace, SIGKILL, all at once;
    /// every module ends `Stopped`.
    pub async fn stop_all(&self) {
        let victims: Vec<ProcessHandle> = {
            let mut st = self.lock();
            st.slots
                .iter_mut()
                .filter_map(|s| {
                    s.cancel.cancel();
                    s.take_proc()
                })
                .collect()
        };
        if !victims.is_empty() {
            tracing::info!(modules = victims.len(), "stopping modules");
        }
        futures::future::join_all(victims.iter().map(|h| h.stop(self.sh.stop_grace))).await;
        {
            let mut st = self.lock();
            for s in st.slots.iter_mut() {
                s.status = ModuleStatus::Stopped;
            }
        }
        self.notify();
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The program path of a manifest command: absolute, or under MODULE_DIR.
fn command_path(module_dir: &Path, command: &str) -> PathBuf {
    let p = Path::new(command);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        module_dir.join(p)
    }
}

/// The command must exist, be a file and be executable.
fn check_command(module_dir: &Path, command: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = command_path(module_dir, command);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err(format!("command {command} is not executable")),
        Ok(_) => Err(format!("command {command} is not a file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("command {command} does not exist in the package"))
        }
        Err(e) => Err(format!("command {command}: {e}")),
    }
}

/// Removes a module's placement directories (all, or all but `keep`);
/// leaves files such as output.log.
fn remove_placements(root: &Path, keep: Option<Epoch>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(epoch) = name.to_str().and_then(|n| n.parse::<Epoch>().ok()) else {
            continue;
        };
        if Some(epoch) != keep && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
