//! The steps of a directive's task (installed, restored, stopped) and the
//! events of a module's process (start, launch, exit, probe verdicts,
//! shutdown), each turned into effects.

use proto::heartbeat::{ModuleStatus, ReportKind};
use tokio::time::Instant;

use super::{Effect, LaunchPlan, ProbePlan, Proc, RestoreTarget, Table};
use crate::Error;
use crate::manager::fence;
use crate::process::{Launch, ProcessHandle};

impl Table {
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
        let grace = self.fence_grace();
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
        let grace = self.fence_grace();
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
