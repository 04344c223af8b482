//! Process life-cycle of a module: launch, watch (exit and health probe),
//! stop, forget.
//!
//! ## Data flow
//! ```text
//! Effect::Start ─► Table::start ─► Effect::Launch ─► process::launch (spawner thread)
//!                                                    │
//!                       Table::launched ◄────────────┘ ─► Effect::Probe ─► probe loop
//!   exit watcher ─► Table::exited          probe verdicts ─► Table::probe_passed / probe_failed
//! ```
//! A launched process runs in `MODULE_DIR` with the contract environment
//! ([`launch_for`]); its exit is known the moment it happens (the exit
//! watcher of [`process::launch`]) and goes to the table at once.
//!
//! ## Invariants
//! - The lease is checked by the table twice per start: before the launch
//!   and once the process exists, since the fence may have run in between.
//! - A probe loop ends when its process's token is cancelled (the process
//!   was taken out of its slot) or when it failed the module.

use std::time::Duration;

use proto::ModuleName;
use tokio::time::Instant;

use super::Agent;
use super::install::command_path;
use super::table::{LaunchPlan, ProbePlan, Task};
use crate::Error;
use crate::probe::{self, ProbeTracker, Verdict};
use crate::process::{self, Launch, ProcessHandle};
use crate::state::DataDir;

/// How the module of `plan` is run on node `node`: program, arguments,
/// directory, environment (the manifest's `[env]` plus the contract's
/// `MODULE_*` variables) and output log.
pub fn launch_for(
    dirs: &DataDir,
    node: &str,
    rotation: crate::logs::Rotation,
    plan: &LaunchPlan,
) -> Launch {
    let m = &plan.manifest;
    let dir = dirs.package_dir(&plan.module, plan.epoch, &m.name, &m.version);
    let mut env: Vec<(String, String)> =
        m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("MODULE_NAME".to_string(), plan.module.clone()),
        ("MODULE_EPOCH".to_string(), plan.epoch.to_string()),
        ("MODULE_NODE".to_string(), node.to_string()),
        ("MODULE_DIR".to_string(), dir.display().to_string()),
        (
            "MODULE_PACKAGES_DIR".to_string(),
            dirs.placement_dir(&plan.module, plan.epoch)
                .display()
                .to_string(),
        ),
        (
            "MODULE_RESTORE_SEQ".to_string(),
            plan.restore_seq.to_string(),
        ),
    ]);
    Launch {
        program: command_path(&dir, &m.command),
        args: m.args.clone(),
        dir,
        env,
        log: dirs.output_log(&plan.module),
        rotation,
    }
}

impl Agent {
    /// Runs an operation's task (executes [`super::Effect::Spawn`]).
    pub(super) async fn run_task(self, task: Task) {
        match task {
            Task::Install {
                op,
                old,
                install,
                cancel,
            } => self.run_install(op, old, install, cancel).await,
            Task::Restore {
                module,
                op,
                old,
                backoff,
                cancel,
            } => self.run_restore(module, op, old, backoff, cancel).await,
            Task::Stop { module, op, old } => self.run_stop(module, op, old).await,
        }
    }

    /// Executes [`super::Effect::Start`].
    pub(super) async fn start(&self, name: &str, op: u64, after_install: bool) {
        let effects = self.lock().start(name, op, after_install, Instant::now());
        self.execute(effects).await;
    }

    /// Executes [`super::Effect::Launch`]: spawns the process with its exit
    /// watcher and hands the outcome to the table.
    pub(super) async fn launch(&self, plan: LaunchPlan) {
        let launch = launch_for(&self.sh.dirs, &self.sh.node, self.sh.log_rotation, &plan);
        let agent = self.clone();
        let (name, op) = (plan.module.clone(), plan.op);
        let deadline = self.lock().shim_deadline_of(&plan.module, Instant::now());
        let launched = process::launch(&self.sh.spawner, &launch, deadline, move |how| {
            let effects = agent.lock().exited(&name, op, &how);
            agent.execute(effects)
        })
        .await
        .map_err(|source| Error::Launch {
            program: launch.program.display().to_string(),
            source,
        });
        let handle = launched.as_ref().ok().cloned();
        let effects = self
            .lock()
            .launched(&plan, &launch, launched, Instant::now());
        // A renewal between the launch and now reached only the older
        // processes: this one gets the current deadline too.
        if let Some(h) = handle {
            h.set_deadline(self.lock().shim_deadline_of(&plan.module, Instant::now()));
        }
        self.execute(effects).await;
    }

    /// Executes [`super::Effect::Probe`]: probes every `interval_ms` until
    /// the process is taken out of its slot or the probe fails it.
    pub(super) async fn probe_loop(self, p: ProbePlan) {
        let check = &p.check;
        let every = Duration::from_millis(check.interval_ms);
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = ProbeTracker::new(check.failure_threshold);
        loop {
            tokio::select! {
                _ = p.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = tokio::select! {
                _ = p.cancel.cancelled() => return,
                r = probe::probe_once(check, &p.launch.dir, &p.launch.env, &self.sh.probe_client) => r,
            };
            let ok = result.is_ok();
            match tracker.observe(ok) {
                Verdict::Same => {}
                Verdict::Passing => {
                    let effects = self.lock().probe_passed(&p.module, p.op);
                    self.execute(effects).await;
                }
                Verdict::Failing => {
                    let why = format!(
                        "health probe failed {} times in a row: {}",
                        check.failure_threshold,
                        result.err().map(|e| e.to_string()).unwrap_or_default()
                    );
                    let effects = self.lock().probe_failed(&p.module, p.op, why);
                    self.execute(effects).await;
                    return;
                }
            }
        }
    }

    /// The stop task of `op`: stop the process, then forget the module.
    pub(super) async fn run_stop(self, name: ModuleName, op: u64, old: Option<ProcessHandle>) {
        if let Some(h) = old {
            let how = h.stop(self.sh.stop_grace).await;
            tracing::info!(module = %name, pid = h.pid, "stopped: {how}");
        }
        let effects = self.lock().forget(&name, op);
        self.execute(effects).await;
    }

    /// Stops every module (shutdown): SIGTERM, grace, SIGKILL, all at once;
    /// every module ends `Stopped`.
    pub async fn stop_all(&self) {
        let effects = self.lock().stop_all();
        self.execute(effects).await;
    }

    /// Executes [`super::Effect::StopAll`].
    pub(super) async fn stop_processes(&self, handles: Vec<ProcessHandle>) {
        let grace = self.sh.stop_grace;
        futures::future::join_all(handles.iter().map(|h| h.stop(grace))).await;
        let effects = self.lock().all_stopped();
        self.execute(effects).await;
    }
}
