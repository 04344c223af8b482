//! Versions: a module's revisions, the rollout that moves it from one to
//! another, and the package versions the cluster stopped using.
//!
//! ## Revisions and rollouts
//! A deploy is revision 1 of a module. An update ([`Update`]) commits a new
//! revision (the next number) with the new spec and starts a rollout; a
//! rollback ([`Rollback`]) makes an earlier revision current again and
//! starts a rollout to it. Either way the module's spec is the current
//! revision's from then on, and the module moves to it under a new epoch:
//! the planner places it (`Place` with [`PlaceCause::Rollout`]), and the
//! `Place` records that epoch in the rollout. The rollout is health-gated:
//! - the placement running the new revision is `Healthy` (it ran for
//!   `min_healthy_ms`) → the rollout is `completed`, the revision `good`;
//! - its install fails, it goes down before it was healthy, or its
//!   restores run out → the planner reverts ([`Revert`]) to the last good
//!   revision (newest first) whose package is not quarantined: that
//!   revision is current again, the rollout `reverted` with the reason, and
//!   the planner places the module again under a new epoch. A module with
//!   no good revision to go back to keeps the ordinary failover path.
//!
//! Each revision keeps its outcome (`active`, `superseded` by an update,
//! `reverted` by an operator's rollback, `failed` when its rollout was
//! reverted) and its own counters (restores ordered, failovers) while it was
//! current. The last [`REVISIONS_KEPT`] revisions are kept.
//!
//! ## Quarantine
//! A failed install, or a placement that went down before it was ever
//! healthy, is recorded against its package version and node
//! ([`Packages::failures`]). When one version failed on
//! `--quarantine-nodes` distinct nodes within `--quarantine-window-ms`,
//! across any modules, the planner quarantines it
//! ([`QuarantinePackage`]): no deploy, update, rollback or rollout to it is
//! accepted; modules on it that have a good revision of another version go
//! back to it; modules without one that are not running wait for it to be
//! lifted ([`HoldQuarantined`]) instead of failing over from node to node.
//! An operator lifts it ([`LiftQuarantine`]); the waiting modules are then
//! placed again.
//!
//! ## Storage
//! The revisions live beside the module records
//! ([`ClusterState::versions`]), so a module record encodes as it always
//! did; a module deployed before revisions existed has no entry and is
//! revision 1 ([`Versions::implicit`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::manifest::PackageRef;
use proto::record::EventKind;
use proto::spec::ModuleSpec;
use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{ClusterState, ModuleRecord, ModuleState, Rejection, not_found};

/// Revisions kept per module (the current one is never dropped).
pub const REVISIONS_KEPT: usize = 10;
/// Failure records kept per package version (the newest nodes).
pub const FAILURES_KEPT_PER_PACKAGE: usize = 32;
/// Package versions with failure records kept (the oldest are dropped).
pub const FAILING_PACKAGES_KEPT: usize = 1024;

/// One module's revisions and its rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The current revision (its spec is the module's spec).
    pub revision: u32,
    /// The highest revision number given so far.
    pub last_revision: u32,
    /// The kept revisions, by number.
    pub history: Vec<Revision>,
    pub rollout: Option<Rollout>,
    /// The quarantined package version the module waits for, if any.
    pub held: Option<PackageRef>,
}

/// One revision of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u32,
    /// The current revision's is the module record's (`Arc` shared).
    pub spec: Arc<ModuleSpec>,
    /// When it last became the current revision (leader's clock, ms).
    pub at_ms: u64,
    pub outcome: RevisionOutcome,
    /// It ran healthy at least once.
    pub good: bool,
    /// Restores ordered while it was current.
    pub restores: u32,
    /// Failovers (and moves off lost nodes) while it was current.
    pub failovers: u32,
}

/// What became of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevisionOutcome {
    /// The current revision.
    Active,
    /// An update replaced it.
    Superseded,
    /// An operator rolled back from it.
    Reverted,
    /// Its rollout failed and the module went back to a good revision.
    Failed,
}

impl RevisionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionOutcome::Active => "active",
            RevisionOutcome::Superseded => "superseded",
            RevisionOutcome::Reverted => "reverted",
            RevisionOutcome::Failed => "failed",
        }
    }
}

/// A move from one revision to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub from: u32,
    pub to: u32,
    pub state: RolloutState,
    /// Why it was reverted.
    pub reason: Option<String>,
    /// The epoch of the first placement running `to` (None: not placed
    /// under it yet; the planner places it).
    pub epoch: Option<Epoch>,
    pub started_ms: u64,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    InProgress,
    Completed,
    /// The new revision failed; the module went back to `to`, a good
    /// revision (the rollout's `from` is the failed one).
    Reverted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "in_progress",
            RolloutState::Completed => "completed",
            RolloutState::Reverted => "reverted",
        }
    }
}

impl Rollout {
    /// The module still has to be placed under the rollout's revision.
    pub fn needs_placing(&self) -> bool {
        self.epoch.is_none() && self.state != RolloutState::Completed
    }

    /// A rollout whose health gate is still open.
    pub fn in_progress(&self) -> bool {
        self.state == RolloutState::InProgress
    }
}

impl Versions {
    /// Revision 1 of a module deployed with `spec` at `at`.
    pub fn first(spec: &Arc<ModuleSpec>, at: u64) -> Versions {
        Versions {
            revision: 1,
            last_revision: 1,
            history: vec![Revision {
                revision: 1,
                spec: spec.clone(),
                at_ms: at,
                outcome: RevisionOutcome::Active,
                good: false,
                restores: 0,
                failovers: 0,
            }],
            rollout: None,
            held: None,
        }
    }

    /// The entry of a module deployed before revisions existed: revision 1,
    /// good if it runs now.
    pub fn implicit(m: &ModuleRecord) -> Versions {
        let mut v = Versions::first(&m.spec, m.updated_ms);
        v.history[0].good = m.state == ModuleState::Running;
        v
    }

    pub fn get(&self, revision: u32) -> Option<&Revision> {
        self.history.iter().find(|r| r.revision == revision)
    }

    fn get_mut(&mut self, revision: u32) -> Option<&mut Revision> {
        self.history.iter_mut().find(|r| r.revision == revision)
    }

    /// The current revision's record.
    pub fn current_mut(&mut self) -> Option<&mut Revision> {
        let r = self.revision;
        self.get_mut(r)
    }

    /// The rollout whose health gate is open, if any.
    pub fn in_progress(&self) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| r.in_progress())
    }

    /// The revision to go back to when the current one fails: the newest
    /// good revision other than the current one whose package is not
    /// quarantined.
    pub fn last_good(&self, packages: &Packages) -> Option<&Revision> {
        self.history.iter().rev().find(|r| {
            r.revision != self.revision && r.good && !packages.is_quarantined(&r.spec.package)
        })
    }

    /// Makes `revision` (kept) current with `spec`, marking the one it
    /// replaces `outcome`.
    fn switch(&mut self, revision: u32, outcome: RevisionOutcome, at: u64) {
        if let Some(cur) = self.current_mut() {
            cur.outcome = outcome;
        }
        self.revision = revision;
        if let Some(r) = self.current_mut() {
            r.outcome = RevisionOutcome::Active;
            r.at_ms = at;
        }
    }

    /// Adds a new revision with `spec` (the next number), dropping the
    /// oldest beyond [`REVISIONS_KEPT`] (never the current one).
    fn push(&mut self, spec: &ModuleSpec, at: u64) -> u32 {
        self.last_revision += 1;
        let n = self.last_revision;
        self.history.push(Revision {
            revision: n,
            spec: Arc::new(spec.clone()),
            at_ms: at,
            outcome: RevisionOutcome::Superseded,
            good: false,
            restores: 0,
            failovers: 0,
        });
        while self.history.len() > REVISIONS_KEPT {
            let current = self.revision;
            match self.history.iter().position(|r| r.revision != current) {
                Some(i) => {
                    self.history.remove(i);
                }
                None => break,
            }
        }
        n
    }
}

/// Package versions that failed, and those the cluster stopped using.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packages {
    pub quarantined: BTreeMap<PackageRef, Quarantine>,
    /// Per package version, the nodes where it failed to install or start,
    /// with the time of the latest failure there (leader's clock, ms).
    pub failures: BTreeMap<PackageRef, BTreeMap<NodeId, u64>>,
}

/// Why and since when a package version is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub since_ms: u64,
    /// The nodes it failed on.
    pub nodes: Vec<NodeId>,
    pub reason: String,
}

impl Packages {
    pub fn is_quarantined(&self, package: &PackageRef) -> bool {
        self.quarantined.contains_key(package)
    }

    /// Records that `package` failed to install or start on `node` at `at`.
    pub(super) fn record_failure(&mut self, package: &PackageRef, node: &str, at: u64) {
        let nodes = self.failures.entry(package.clone()).or_default();
        nodes.insert(node.to_string(), at);
        while nodes.len() > FAILURES_KEPT_PER_PACKAGE {
            let oldest = nodes
                .iter()
                .min_by_key(|(n, t)| (**t, (*n).clone()))
                .map(|(n, _)| n.clone());
            match oldest {
                Some(n) => nodes.remove(&n),
                None => break,
            };
        }
        while self.failures.len() > FAILING_PACKAGES_KEPT {
            let oldest = self
                .failures
                .iter()
                .map(|(p, nodes)| (nodes.values().max().copied().unwrap_or(0), p.clone()))
                .min();
            match oldest {
                Some((_, p)) => self.failures.remove(&p),
                None => break,
            };
        }
    }

    /// The nodes `package` failed on at or after `since` (ms), by name.
    pub fn failed_nodes_since(&self, package: &PackageRef, since: u64) -> Vec<&NodeId> {
        self.failures
            .get(package)
            .into_iter()
            .flatten()
            .filter(|(_, t)| **t >= since)
            .map(|(n, _)| n)
            .collect()
    }
}

impl ClusterState {
    /// The revisions of `module` (its implicit revision 1 when it has no
    /// entry yet), for reading.
    pub fn versions_of(&self, module: &str) -> Option<std::borrow::Cow<'_, Versions>> {
        match self.versions.get(module) {
            Some(v) => Some(std::borrow::Cow::Borrowed(v)),
            None => self
                .modules
                .get(module)
                .map(|m| std::borrow::Cow::Owned(Versions::implicit(m))),
        }
    }

    /// The revisions of `module`, created as revision 1 if it has none yet.
    pub(super) fn versions_mut(&mut self, module: &str) -> Option<&mut Versions> {
        let m = self.modules.get(module)?;
        if !self.versions.contains_key(module) {
            let v = Versions::implicit(m);
            self.versions.insert(module.to_string(), v);
        }
        self.versions.get_mut(module)
    }

    /// Records a failed install or start of the package of `module`'s
    /// current spec on `node`.
    pub(super) fn record_package_failure(&mut self, module: &str, node: &str, at: u64) {
        if let Some(m) = self.modules.get(module) {
            let package = m.spec.package.clone();
            self.packages.record_failure(&package, node, at);
        }
    }

    /// Refuses a package version that is quarantined.
    pub(super) fn check_not_quarantined(&self, package: &PackageRef) -> Result<(), Rejection> {
        match self.packages.quarantined.get(package) {
            Some(q) => Err(Rejection::Conflict(format!(
                "package {package} is quarantined: {} (lift it with DELETE /v1/packages/quarantined/{}/{})",
                q.reason, package.name, package.version
            ))),
            None => Ok(()),
        }
    }

    /// The current revision of `module` ran healthy: it is good, and a
    /// rollout to it whose placement this is completes.
    pub(super) fn revision_healthy(&mut self, module: &str, epoch: Epoch, index: u64, at: u64) {
        let Some(v) = self.versions_mut(module) else {
            return;
        };
        if let Some(r) = v.current_mut() {
            r.good = true;
        }
        let done = match &mut v.rollout {
            Some(r) if r.in_progress() && r.epoch.is_some_and(|e| e <= epoch) => {
                r.state = RolloutState::Completed;
                Some((r.from, r.to))
            }
            _ => None,
        };
        if let Some((from, to)) = done {
            self.module_event(
                index,
                at,
                EventKind::RolloutCompleted,
                module,
                &[("from", from.to_string()), ("to", to.to_string())],
            );
        }
    }

    /// Counts a restore ordered, or a failover, against the current
    /// revision of `module`.
    pub(super) fn count_on_revision(&mut self, module: &str, restore: bool) {
        if let Some(r) = self.versions_mut(module).and_then(Versions::current_mut) {
            if restore {
                r.restores += 1;
            } else {
                r.failovers += 1;
            }
        }
    }

    /// A placement of `module` at `epoch` was made: the rollout waiting to
    /// be placed runs under it, and a module held for a quarantine is no
    /// longer held.
    pub(super) fn revision_placed(&mut self, module: &str, epoch: Epoch) {
        if let Some(v) = self.versions.get_mut(module) {
            if let Some(r) = &mut v.rollout
                && r.needs_placing()
            {
                r.epoch = Some(epoch);
            }
            v.held = None;
        }
    }

    /// Refuses a rollout of `module` when it is unknown, stopped, or one of
    /// its rollouts is still in progress.
    fn check_may_roll_out(&self, module: &str) -> Result<(), Rejection> {
        let m = self
            .modules
            .get(module)
            .ok_or_else(|| not_found("module", module))?;
        if m.state == ModuleState::Stopped {
            return Err(Rejection::Conflict(format!("module {module:?} is stopped")));
        }
        if let Some(v) = self.versions.get(module)
            && let Some(r) = v.in_progress()
        {
            return Err(Rejection::Conflict(format!(
                "a rollout of module {module:?} from revision {} to {} is in progress; wait for it to complete or revert",
                r.from, r.to
            )));
        }
        Ok(())
    }

    /// An operator's rollout (update or rollback) of `module` to the kept
    /// revision `to`, the current one becoming `replaced`; records
    /// `rollout_started`.
    fn operator_rollout(
        &mut self,
        module: &str,
        to: u32,
        replaced: RevisionOutcome,
        rollback: bool,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let (from, spec) =
            self.start_rollout(module, to, replaced, RolloutState::InProgress, None, at)?;
        let mut detail = vec![
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("package", spec.package.to_string()),
        ];
        if rollback {
            detail.push(("rollback", "true".into()));
        }
        self.module_event(index, at, EventKind::RolloutStarted, module, &detail);
        Ok(())
    }

    /// Starts a rollout of `module` from its current revision to `to`
    /// (made current with its spec), recording `event`.
    fn start_rollout(
        &mut self,
        module: &str,
        to: u32,
        replaced: RevisionOutcome,
        state: RolloutState,
        reason: Option<String>,
        at: u64,
    ) -> Result<(u32, Arc<ModuleSpec>), Rejection> {
        let v = self
            .versions_mut(module)
            .ok_or_else(|| not_found("module", module))?;
        let from = v.revision;
        v.switch(to, replaced, at);
        let spec = v
            .get(to)
            .map(|r| r.spec.clone())
            .ok_or_else(|| Rejection::Conflict(format!("revision {to} is not kept")))?;
        v.rollout = Some(Rollout {
            from,
            to,
            state,
            reason,
            epoch: None,
            started_ms: at,
        });
        v.held = None;
        let m = self
            .modules
            .get_mut(module)
            .ok_or_else(|| not_found("module", module))?;
        m.spec = spec.clone();
        m.updated_ms = at;
        Ok((from, spec))
    }
}

/// Operator: replace a module's spec; a rollout to the new revision. The
/// spec is valid (checked at the edge). The same spec again is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub spec: ModuleSpec,
}

impl Update {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let name = &self.spec.name;
        let m = state
            .modules
            .get(name)
            .ok_or_else(|| not_found("module", name))?;
        if *m.spec == self.spec {
            return Ok(());
        }
        state.check_may_roll_out(name)?;
        if let Some(node) = &self.spec.placement.node
            && !state.nodes.contains_key(node)
        {
            return Err(Rejection::NotFound(format!(
                "placement.node: unknown node {node:?}"
            )));
        }
        state.check_not_quarantined(&self.spec.package)?;
        let v = state
            .versions_mut(name)
            .ok_or_else(|| not_found("module", name))?;
        let to = v.push(&self.spec, at);
        state.operator_rollout(name, to, RevisionOutcome::Superseded, false, index, at)
    }
}

/// Operator: make an earlier revision current again (the previous good
/// one when `revision` is None); a rollout to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub module: ModuleName,
    pub revision: Option<u32>,
}

impl Rollback {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let name = &self.module;
        state.check_may_roll_out(name)?;
        let v = state
            .versions_of(name)
            .ok_or_else(|| not_found("module", name))?;
        let target = match self.revision {
            Some(n) if n == v.revision => {
                return Err(Rejection::Conflict(format!(
                    "revision {n} is already the current revision of module {name:?}"
                )));
            }
            Some(n) => v.get(n).ok_or_else(|| {
                let kept: Vec<String> = v.history.iter().map(|r| r.revision.to_string()).collect();
                Rejection::Conflict(format!(
                    "module {name:?} has no revision {n} (kept: {})",
                    kept.join(", ")
                ))
            })?,
            None => v
                .history
                .iter()
                .rev()
                .find(|r| r.revision != v.revision && r.good)
                .or_else(|| {
                    v.history
                        .iter()
                        .rev()
                        .find(|r| r.revision < v.revision)
                })
                .ok_or_else(|| {
                    Rejection::Conflict(format!(
                        "module {name:?} has no earlier revision to roll back to (it is at revision {})",
                        v.revision
                    ))
                })?,
        };
        let (to, package) = (target.revision, target.spec.package.clone());
        drop(v);
        state.check_not_quarantined(&package)?;
        state.operator_rollout(name, to, RevisionOutcome::Reverted, true, index, at)
    }
}

/// Planner: the current revision failed (its rollout's install or start,
/// its restores, or its package was quarantined): go back to the last good
/// revision ([`Versions::last_good`]). `expect` is the revision it failed
/// at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    pub module: ModuleName,
    pub expect: u32,
    pub reason: String,
}

impl Revert {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let name = &self.module;
        let v = state
            .versions_of(name)
            .ok_or_else(|| not_found("module", name))?;
        if v.revision != self.expect {
            return Err(Rejection::Conflict(format!(
                "module {name:?} is at revision {}, not {}",
                v.revision, self.expect
            )));
        }
        let to = v
            .last_good(&state.packages)
            .map(|r| r.revision)
            .ok_or_else(|| {
                Rejection::Conflict(format!(
                    "module {name:?} has no good revision to go back to"
                ))
            })?;
        drop(v);
        let (from, _) = state.start_rollout(
            name,
            to,
            RevisionOutcome::Failed,
            RolloutState::Reverted,
            Some(self.reason.clone()),
            at,
        )?;
        if let Some(m) = state.modules.get_mut(name) {
            m.reason = Some(format!(
                "revision {from} failed, back to revision {to}: {}",
                self.reason
            ));
            if m.state == ModuleState::Failed {
                m.state = ModuleState::FailingOver;
            }
        }
        state.module_event(
            index,
            at,
            EventKind::RolloutReverted,
            name,
            &[
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("reason", self.reason.clone()),
            ],
        );
        Ok(())
    }
}

/// Planner: a package version failed on enough nodes; stop using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinePackage {
    pub package: PackageRef,
    pub nodes: Vec<NodeId>,
    pub reason: String,
}

impl QuarantinePackage {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        if state.packages.is_quarantined(&self.package) {
            return Err(Rejection::Conflict(format!(
                "package {} is already quarantined",
                self.package
            )));
        }
        state.packages.quarantined.insert(
            self.package.clone(),
            Quarantine {
                since_ms: at,
                nodes: self.nodes.clone(),
                reason: self.reason.clone(),
            },
        );
        state.event(
            index,
            at,
            EventKind::PackageQuarantined,
            None,
            None,
            &[
                ("package", self.package.to_string()),
                ("nodes", self.nodes.join(",")),
                ("reason", self.reason.clone()),
            ],
        );
        Ok(())
    }
}

/// Operator: lift a package version's quarantine (and forget its failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftQuarantine {
    pub package: PackageRef,
}

impl LiftQuarantine {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        if state.packages.quarantined.remove(&self.package).is_none() {
            return Err(Rejection::NotFound(format!(
                "package {} is not quarantined",
                self.package
            )));
        }
        state.packages.failures.remove(&self.package);
        state.event(
            index,
            at,
            EventKind::QuarantineLifted,
            None,
            None,
            &[("package", self.package.to_string())],
        );
        Ok(())
    }
}

/// Planner: the module's package version is quarantined and it has no good
/// revision to go back to: it waits (`failing_over`, with the reason) until
/// the quarantine is lifted or an operator updates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldQuarantined {
    pub module: ModuleName,
    pub package: PackageRef,
}

impl HoldQuarantined {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let name = &self.module;
        let m = state
            .modules
            .get(name)
            .ok_or_else(|| not_found("module", name))?;
        if m.spec.package != self.package {
            return Err(Rejection::Conflict(format!(
                "module {name:?} runs package {}, not {}",
                m.spec.package, self.package
            )));
        }
        if !state.packages.is_quarantined(&self.package) {
            return Err(Rejection::Conflict(format!(
                "package {} is not quarantined",
                self.package
            )));
        }
        if matches!(m.state, ModuleState::Stopped) {
            return Err(Rejection::Conflict(format!("module {name:?} is stopped")));
        }
        let v = state
            .versions_mut(name)
            .ok_or_else(|| not_found("module", name))?;
        if v.held.is_some() {
            return Err(Rejection::Conflict(format!(
                "module {name:?} already waits"
            )));
        }
        v.held = Some(self.package.clone());
        let reason = format!(
            "package {} is quarantined and the module has no good revision to go back to: waiting until an operator lifts the quarantine or updates the module",
            self.package
        );
        let m = state
            .modules
            .get_mut(name)
            .ok_or_else(|| not_found("module", name))?;
        m.state = ModuleState::FailingOver;
        m.reason = Some(reason.clone());
        m.updated_ms = at;
        state.module_event(
            index,
            at,
            EventKind::FailoverWaiting,
            name,
            &[("reason", reason)],
        );
        Ok(())
    }
}
