//! Fleet rollouts: one package version rolled out to every module that
//! uses the package, a few modules at a time, each behind its own health
//! gate, paused when too many fail.
//!
//! An operator starts one ([`StartFleetRollout`]): the modules whose
//! current spec uses the package at another version are recorded, in name
//! order, as `pending`. From then on the planner advances it
//! ([`AdvanceFleetRollout`]) whenever [`FleetRollout::can_advance`] says
//! that an advance would change something; the advance itself decides from
//! the replicated state alone, so a new leader carries the rollout on from
//! the log exactly where the old one left it:
//! 1. each `active` module whose own rollout settled moves to `completed`
//!    (its new revision ran healthy), or `failed` (reverted, refused, the
//!    module failed), or `skipped` (removed or stopped meanwhile);
//! 2. more than `max_failures` failed, or the version got quarantined: the
//!    rollout is `paused` with the reason, and starts nothing more until an
//!    operator resumes it ([`SetFleetRollout`]);
//! 3. while fewer than `max_parallel` modules are active, the next pending
//!    module is updated to the version (a module's [`Update`], its own
//!    health-gated rollout); a module that is busy (a rollout of it still
//!    in progress) stays pending, the next one is taken;
//! 4. nothing pending or active: `completed`.
//!
//! A cancelled rollout starts nothing more; the modules it already
//! updated keep their own rollouts. The last [`FLEET_ROLLOUTS_KEPT`]
//! rollouts are kept (finished ones are dropped oldest first).

use std::collections::BTreeMap;

use proto::ModuleName;
use proto::manifest::PackageRef;
use proto::record::EventKind;
use serde::{Deserialize, Serialize};

use super::versions::{RolloutState, Update};
use super::{ClusterState, ModuleState, Rejection, Transition};

/// Fleet rollouts kept (running or paused ones are never dropped).
pub const FLEET_ROLLOUTS_KEPT: usize = 32;

/// Every fleet rollout kept, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRollouts {
    /// The last id given (ids start at 1).
    pub last_id: u64,
    pub rollouts: BTreeMap<u64, FleetRollout>,
}

/// One fleet rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRollout {
    pub id: u64,
    pub package: PackageRef,
    pub max_parallel: u32,
    pub max_failures: u32,
    pub state: FleetState,
    /// Why it paused or was cancelled.
    pub reason: Option<String>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Not started yet, in the order they will be.
    pub pending: Vec<ModuleName>,
    /// Updated, their health gate still open: the revision each was
    /// updated to.
    pub active: BTreeMap<ModuleName, u32>,
    pub completed: Vec<ModuleName>,
    /// Reverted, refused or failed, with the reason.
    pub failed: Vec<(ModuleName, String)>,
    /// Failures an operator's resume forgave (the threshold counts those
    /// after it).
    pub forgiven: u32,
    /// Removed, stopped or already at the version, with the reason.
    pub skipped: Vec<(ModuleName, String)>,
}

/// Where a fleet rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetState {
    Running,
    /// Too many failures, the version quarantined, or an operator: nothing
    /// more starts until it is resumed.
    Paused,
    Completed,
    /// An operator cancelled it: nothing more starts.
    Cancelled,
}

impl FleetState {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetState::Running => "running",
            FleetState::Paused => "paused",
            FleetState::Completed => "completed",
            FleetState::Cancelled => "cancelled",
        }
    }

    /// Running or paused: it may still start modules.
    pub fn is_open(self) -> bool {
        matches!(self, FleetState::Running | FleetState::Paused)
    }
}

/// How an active module's own rollout ended.
enum Settled {
    Completed,
    Failed(String),
    Skipped(String),
}

/// Whether `module`, updated to `revision` by a fleet rollout, has
/// settled, and how.
fn settled(state: &ClusterState, module: &str, revision: u32) -> Option<Settled> {
    let Some(m) = state.modules.get(module) else {
        return Some(Settled::Skipped("removed".into()));
    };
    if m.state == ModuleState::Stopped {
        return Some(Settled::Skipped("stopped".into()));
    }
    let v = state.versions_of(module)?;
    match &v.rollout {
        Some(r) if r.to == revision && r.state == RolloutState::Completed => {
            return Some(Settled::Completed);
        }
        Some(r) if r.from == revision && r.state == RolloutState::Reverted => {
            let why = r.reason.clone().unwrap_or_else(|| "reverted".into());
            return Some(Settled::Failed(format!(
                "revision {revision} reverted to {}: {why}",
                r.to
            )));
        }
        _ => {}
    }
    if m.state == ModuleState::Failed {
        let why = m.reason.clone().unwrap_or_else(|| "failed".into());
        return Some(Settled::Failed(format!("module failed: {why}")));
    }
    if v.revision != revision && v.in_progress().is_none() {
        return Some(Settled::Failed(format!(
            "module moved to revision {} meanwhile",
            v.revision
        )));
    }
    None
}

/// What starting `module` on `package` would do now: `None` when it is
/// busy (a rollout of it in progress: it waits), else whether it is
/// skipped (with the reason) or updated.
fn start_check(state: &ClusterState, module: &str, package: &PackageRef) -> Option<Start> {
    let Some(m) = state.modules.get(module) else {
        return Some(Start::Skip("removed".into()));
    };
    if m.state == ModuleState::Stopped {
        return Some(Start::Skip("stopped".into()));
    }
    if m.spec.package.name != package.name {
        return Some(Start::Skip(format!(
            "it uses package {} now",
            m.spec.package.name
        )));
    }
    if m.spec.package.version == package.version {
        return Some(Start::Skip(format!("already at {}", package.version)));
    }
    let busy = state
        .versions
        .get(module)
        .is_some_and(|v| v.in_progress().is_some());
    if busy { None } else { Some(Start::Update) }
}

enum Start {
    Skip(String),
    Update,
}

impl FleetRollout {
    /// Whether [`AdvanceFleetRollout`] would change anything now (what the
    /// planner asks before proposing one). Pure.
    pub fn can_advance(&self, state: &ClusterState) -> bool {
        if self.state != FleetState::Running {
            return false;
        }
        if self
            .active
            .iter()
            .any(|(m, r)| settled(state, m, *r).is_some())
        {
            return true;
        }
        if state.packages.is_quarantined(&self.package) {
            return true;
        }
        if self.pending.is_empty() && self.active.is_empty() {
            return true;
        }
        self.active.len() < self.max_parallel as usize
            && self
                .pending
                .iter()
                .any(|m| start_check(state, m, &self.package).is_some())
    }

    fn too_many_failures(&self) -> bool {
        self.failed.len().saturating_sub(self.forgiven as usize) > self.max_failures as usize
    }

    fn pause_reason(&self) -> String {
        let recent = &self.failed[(self.forgiven as usize).min(self.failed.len())..];
        let names: Vec<&str> = recent.iter().map(|(m, _)| m.as_str()).collect();
        format!(
            "{} modules failed ({}), more than max_failures {}",
            recent.len(),
            names.join(", "),
            self.max_failures
        )
    }
}

impl ClusterState {
    /// The modules a rollout of `package` would update, in name order.
    pub fn fleet_targets(&self, package: &PackageRef) -> Vec<ModuleName> {
        self.modules
            .iter()
            .filter(|(_, m)| {
                m.state != ModuleState::Stopped
                    && m.spec.package.name == package.name
                    && m.spec.package.version != package.version
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn fleet_event(
        &mut self,
        index: u64,
        at: u64,
        kind: EventKind,
        f: &FleetRollout,
        extra: &[(&str, String)],
    ) {
        let mut detail = vec![
            ("rollout", f.id.to_string()),
            ("package", f.package.to_string()),
        ];
        detail.extend(extra.iter().cloned());
        self.event(index, at, kind, None, None, &detail);
    }

    /// Drops the oldest finished rollouts beyond [`FLEET_ROLLOUTS_KEPT`].
    fn trim_fleet(&mut self) {
        while self.fleet.rollouts.len() > FLEET_ROLLOUTS_KEPT {
            let oldest = self
                .fleet
                .rollouts
                .values()
                .find(|f| !f.state.is_open())
                .map(|f| f.id);
            match oldest {
                Some(id) => self.fleet.rollouts.remove(&id),
                None => break,
            };
        }
    }
}

/// Operator: roll `package` (its version) out to every module using the
/// package at another version. `max_parallel` ≥ 1 (checked at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFleetRollout {
    pub package: PackageRef,
    pub max_parallel: u32,
    pub max_failures: u32,
}

impl StartFleetRollout {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        state.check_not_quarantined(&self.package)?;
        if let Some(open) = state
            .fleet
            .rollouts
            .values()
            .find(|f| f.state.is_open() && f.package.name == self.package.name)
        {
            return Err(Rejection::Conflict(format!(
                "fleet rollout {} of {} is {}; cancel it first (POST /v1/rollouts/{}/cancel)",
                open.id,
                open.package,
                open.state.as_str(),
                open.id
            )));
        }
        let pending = state.fleet_targets(&self.package);
        state.fleet.last_id += 1;
        let id = state.fleet.last_id;
        let done = pending.is_empty();
        let f = FleetRollout {
            id,
            package: self.package.clone(),
            max_parallel: self.max_parallel.max(1),
            max_failures: self.max_failures,
            state: if done {
                FleetState::Completed
            } else {
                FleetState::Running
            },
            reason: None,
            started_ms: at,
            updated_ms: at,
            pending,
            active: BTreeMap::new(),
            completed: Vec::new(),
            failed: Vec::new(),
            forgiven: 0,
            skipped: Vec::new(),
        };
        let modules = f.pending.len().to_string();
        state.fleet_event(
            index,
            at,
            EventKind::FleetRolloutStarted,
            &f,
            &[("modules", modules)],
        );
        if done {
            state.fleet_event(
                index,
                at,
                EventKind::FleetRolloutCompleted,
                &f,
                &[("completed", "0".into())],
            );
        }
        state.fleet.rollouts.insert(id, f);
        state.trim_fleet();
        Ok(())
    }
}

/// Planner: carry fleet rollout `id` on (see the module doc). Rejected
/// when it would change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvanceFleetRollout {
    pub id: u64,
}

impl AdvanceFleetRollout {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let Some(mut f) = state.fleet.rollouts.get(&self.id).cloned() else {
            return Err(Rejection::NotFound(format!(
                "unknown fleet rollout {}",
                self.id
            )));
        };
        if !f.can_advance(state) {
            return Err(Rejection::Conflict(format!(
                "fleet rollout {} has nothing to advance",
                self.id
            )));
        }
        // 1. Settle the active modules.
        let active = std::mem::take(&mut f.active);
        for (module, revision) in active {
            match settled(state, &module, revision) {
                None => {
                    f.active.insert(module, revision);
                }
                Some(Settled::Completed) => f.completed.push(module),
                Some(Settled::Failed(why)) => f.failed.push((module, why)),
                Some(Settled::Skipped(why)) => f.skipped.push((module, why)),
            }
        }
        // 2. and 3. Pause, or start more.
        let mut i = 0;
        while f.active.len() < f.max_parallel as usize && i < f.pending.len() {
            if f.too_many_failures() || state.packages.is_quarantined(&f.package) {
                break;
            }
            let module = f.pending[i].clone();
            match start_check(state, &module, &f.package) {
                None => i += 1,
                Some(Start::Skip(why)) => {
                    f.pending.remove(i);
                    f.skipped.push((module, why));
                }
                Some(Start::Update) => {
                    f.pending.remove(i);
                    let mut spec = proto::spec::ModuleSpec::clone(&state.modules[&module].spec);
                    spec.package.version = f.package.version.clone();
                    let update = Transition::Update(Update { spec });
                    match state.apply_one(&update, index, at) {
                        Ok(()) => {
                            let revision = state.versions_of(&module).map_or(1, |v| v.revision);
                            f.active.insert(module, revision);
                        }
                        Err(r) => f.failed.push((module, r.message().to_string())),
                    }
                }
            }
        }
        f.updated_ms = at;
        let quarantined = state.packages.is_quarantined(&f.package);
        if f.too_many_failures() || quarantined {
            f.state = FleetState::Paused;
            let reason = if quarantined {
                format!("package {} is quarantined", f.package)
            } else {
                f.pause_reason()
            };
            f.reason = Some(reason.clone());
            state.fleet_event(
                index,
                at,
                EventKind::FleetRolloutPaused,
                &f,
                &[("reason", reason)],
            );
        } else if f.pending.is_empty() && f.active.is_empty() {
            f.state = FleetState::Completed;
            state.fleet_event(
                index,
                at,
                EventKind::FleetRolloutCompleted,
                &f,
                &[
                    ("completed", f.completed.len().to_string()),
                    ("failed", f.failed.len().to_string()),
                    ("skipped", f.skipped.len().to_string()),
                ],
            );
        }
        state.fleet.rollouts.insert(self.id, f);
        Ok(())
    }
}

/// What an operator does to a fleet rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetAction {
    Pause,
    /// Running again; failures so far are forgiven (the threshold counts
    /// from the resume on).
    Resume,
    Cancel,
}

/// Operator: pause, resume or cancel fleet rollout `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFleetRollout {
    pub id: u64,
    pub action: FleetAction,
}

impl SetFleetRollout {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let quarantined = state.fleet.rollouts.get(&self.id).map(|f| {
            state
                .packages
                .quarantined
                .get(&f.package)
                .map(|q| q.reason.clone())
        });
        let Some(f) = state.fleet.rollouts.get_mut(&self.id) else {
            return Err(Rejection::NotFound(format!(
                "unknown fleet rollout {}",
                self.id
            )));
        };
        let refuse = |what: &str, f: &FleetRollout| {
            Err(Rejection::Conflict(format!(
                "fleet rollout {} is {}: it cannot be {what}",
                f.id,
                f.state.as_str()
            )))
        };
        let kind = match self.action {
            FleetAction::Pause => {
                if f.state != FleetState::Running {
                    return refuse("paused", f);
                }
                f.state = FleetState::Paused;
                f.reason = Some("paused by an operator".into());
                EventKind::FleetRolloutPaused
            }
            FleetAction::Resume => {
                if f.state != FleetState::Paused {
                    return refuse("resumed", f);
                }
                if let Some(Some(why)) = quarantined {
                    return Err(Rejection::Conflict(format!(
                        "package {} is quarantined: {why} (lift it with DELETE /v1/packages/quarantined/{}/{})",
                        f.package, f.package.name, f.package.version
                    )));
                }
                f.state = FleetState::Running;
                f.reason = None;
                // The threshold counts failures from here on.
                f.forgiven = f.failed.len() as u32;
                EventKind::FleetRolloutResumed
            }
            FleetAction::Cancel => {
                if !f.state.is_open() {
                    return refuse("cancelled", f);
                }
                f.state = FleetState::Cancelled;
                f.reason = Some("cancelled by an operator".into());
                EventKind::FleetRolloutCancelled
            }
        };
        f.updated_ms = at;
        let f = f.clone();
        state.fleet_event(index, at, kind, &f, &[]);
        Ok(())
    }
}
