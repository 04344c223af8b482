//! Bringing a placement up and keeping it up (patent claims 1 and 2): the
//! package retrieved for it ([`PackageRetrieved`]), a failure seen in a
//! heartbeat ([`FailureDetected`]), restore orders ([`RestoreOrdered`]), the
//! module healthy again ([`Healthy`]) and a failed install or first start
//! ([`InstallFailed`]).
//!
//! ## Life of a placement
//! - `PackageRetrieved`: the placement's package is known, so the install
//!   directive can go out (once only per placement);
//! - `installing` or `failing_over` ─Healthy→ `running` (events
//!   `installed`, and `failover_completed` after a failover);
//! - `running` or `installing` ─FailureDetected→ `restoring`
//!   ─RestoreOrdered (at most `restart.attempts`)→ … ─Healthy→ `running`
//!   (event `restored`);
//! - `installing` or `failing_over` ─InstallFailed→ unchanged state with
//!   the reason recorded; the planner follows with a failover (`Place`) or
//!   `GiveUp`.
//!
//! Every transition here names the placement's epoch and is rejected once
//! the module has moved on. `restore_seq` numbers restore orders over the
//! placement (the agent echoes the last one it executed, so a restore is
//! repeated, never counted twice); `restore_attempts` counts them since the
//! module was last healthy, up to `restart.attempts`. Healthy ends the
//! failure episode: attempts, tried nodes and episode failovers reset.

use std::sync::Arc;

use proto::heartbeat::ModuleStatus;
use proto::manifest::ConfigPackage;
use proto::{Epoch, ModuleName};
use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, ModuleState, Rejection};

/// The configuration package (manifest + dependency closure) retrieved from
/// depmgr for a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRetrieved {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub package: ConfigPackage,
}

impl PackageRetrieved {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        if m.package.is_some() {
            return Err(Rejection::Conflict("package already retrieved".into()));
        }
        let version = self.package.manifest.version.clone();
        let artifacts = self.package.artifacts.len().to_string();
        m.package = Some(Arc::new(self.package.clone()));
        m.updated_ms = at;
        state.module_event(
            index,
            at,
            EventKind::PackageRetrieved,
            &self.module,
            &[
                ("version", version),
                ("artifacts", artifacts),
                ("epoch", self.epoch.to_string()),
            ],
        );
        Ok(())
    }
}

/// A heartbeat showed the module down on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetected {
    pub module: ModuleName,
    pub epoch: Epoch,
    /// The status the heartbeat showed. Stored as its name ("failed"), as
    /// when this field was a string (see `status_as_name` below).
    #[serde(with = "status_as_name")]
    pub status: ModuleStatus,
}

impl FailureDetected {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        if !matches!(m.state, ModuleState::Running | ModuleState::Installing) {
            return Err(Rejection::Conflict(format!(
                "module {:?} is {}, not running",
                self.module,
                m.state.as_str()
            )));
        }
        let never_healthy = m.state == ModuleState::Installing;
        let node = m.placement.as_ref().map(|p| p.node.clone());
        m.state = ModuleState::Restoring;
        m.updated_ms = at;
        if never_healthy && let Some(node) = node {
            state.record_package_failure(&self.module, &node, at);
        }
        state.module_event(
            index,
            at,
            EventKind::FailureDetected,
            &self.module,
            &[
                ("status", self.status.as_str().to_string()),
                ("epoch", self.epoch.to_string()),
            ],
        );
        Ok(())
    }
}

/// A [`ModuleStatus`] stored as its name (`ModuleStatus::as_str`), so that
/// log entries written while [`FailureDetected::status`] was a `String`
/// decode unchanged, and new ones encode to the same bytes. A name that is
/// no status is a decode error.
mod status_as_name {
    use proto::heartbeat::ModuleStatus;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(status: &ModuleStatus, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(status.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ModuleStatus, D::Error> {
        let name = String::deserialize(d)?;
        (0..=u8::MAX)
            .map_while(ModuleStatus::from_code)
            .find(|s| s.as_str() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown module status {name:?}")))
    }
}

/// A restore order for restore number `seq` of the placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOrdered {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub seq: u32,
}

impl RestoreOrdered {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        if m.state != ModuleState::Restoring {
            return Err(Rejection::Conflict(format!(
                "module {:?} is not restoring",
                self.module
            )));
        }
        if self.seq != m.restore_seq + 1 {
            return Err(Rejection::Conflict(format!(
                "restore {} already ordered (next is {})",
                self.seq,
                m.restore_seq + 1
            )));
        }
        if m.restore_attempts >= m.spec.restart.attempts {
            return Err(Rejection::Conflict(format!(
                "module {:?} has used its {} restore attempts",
                self.module, m.spec.restart.attempts
            )));
        }
        m.restore_seq = self.seq;
        m.restore_attempts += 1;
        m.updated_ms = at;
        let attempt = m.restore_attempts.to_string();
        let of = m.spec.restart.attempts.to_string();
        state.count_on_revision(&self.module, true);
        state.module_event(
            index,
            at,
            EventKind::RestoreOrdered,
            &self.module,
            &[
                ("attempt", attempt),
                ("of", of),
                ("epoch", self.epoch.to_string()),
            ],
        );
        Ok(())
    }
}

/// The module ran healthy for `min_healthy_ms` (after an install, a
/// restore or a failover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthy {
    pub module: ModuleName,
    pub epoch: Epoch,
}

impl Healthy {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        let prior = m.state;
        let kinds: &[EventKind] = match prior {
            ModuleState::Installing => &[EventKind::Installed],
            ModuleState::Restoring => &[EventKind::Restored],
            ModuleState::FailingOver => &[EventKind::Installed, EventKind::FailoverCompleted],
            _ => {
                return Err(Rejection::Conflict(format!(
                    "module {:?} is {}",
                    self.module,
                    prior.as_str()
                )));
            }
        };
        let attempts = m.restore_attempts.to_string();
        m.state = ModuleState::Running;
        m.restore_attempts = 0;
        m.tried_nodes.clear();
        m.episode_failovers = 0;
        m.reason = None;
        m.updated_ms = at;
        for &kind in kinds {
            state.module_event(
                index,
                at,
                kind,
                &self.module,
                &[
                    ("epoch", self.epoch.to_string()),
                    ("restore_attempts", attempts.clone()),
                ],
            );
        }
        state.revision_healthy(&self.module, self.epoch, index, at);
        Ok(())
    }
}

/// The install, or the first start, on the placement's node failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallFailed {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub stage: FailStage,
    pub reason: String,
}

/// Which step of bringing a placement up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailStage {
    /// Fetching, verifying or unpacking the package.
    Install,
    /// The module started but went down before it was healthy.
    Start,
}

impl InstallFailed {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state.placed_module(&self.module, self.epoch)?;
        if !matches!(m.state, ModuleState::Installing | ModuleState::FailingOver) {
            return Err(Rejection::Conflict(format!(
                "module {:?} is not installing",
                self.module
            )));
        }
        m.reason = Some(self.reason.clone());
        m.updated_ms = at;
        let failover = m.state == ModuleState::FailingOver;
        let node = m.placement.as_ref().map(|p| p.node.clone());
        if let Some(node) = node {
            state.record_package_failure(&self.module, &node, at);
        }
        let kind = match self.stage {
            FailStage::Install => EventKind::InstallFailed,
            FailStage::Start => EventKind::StartFailed,
        };
        state.module_event(
            index,
            at,
            kind,
            &self.module,
            &[
                ("reason", self.reason.clone()),
                ("epoch", self.epoch.to_string()),
            ],
        );
        if failover {
            state.module_event(
                index,
                at,
                EventKind::FailoverFailed,
                &self.module,
                &[("reason", self.reason.clone())],
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{decode, encode};

    /// `FailureDetected` as it was stored before its status was typed.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct OldFailureDetected {
        module: String,
        epoch: u64,
        status: String,
    }

    fn all_statuses() -> Vec<ModuleStatus> {
        (0..=7)
            .map(|c| ModuleStatus::from_code(c).expect("a 3-bit code"))
            .collect()
    }

    #[test]
    fn failure_detected_status_encodes_as_the_string_it_was() {
        for status in all_statuses() {
            let old = OldFailureDetected {
                module: "web".into(),
                epoch: 17,
                status: status.as_str().to_string(),
            };
            let stored = encode(&old).expect("encode old");
            let new: FailureDetected = decode(&stored).expect("old bytes decode as the new type");
            assert_eq!(
                new,
                FailureDetected {
                    module: "web".into(),
                    epoch: 17,
                    status
                }
            );
            assert_eq!(encode(&new).expect("encode new"), stored, "identical bytes");
            assert_eq!(
                decode::<OldFailureDetected>(&stored).expect("and back"),
                old
            );
        }
    }

    #[test]
    fn unknown_status_is_a_decode_error() {
        let old = OldFailureDetected {
            module: "web".into(),
            epoch: 17,
            status: "on_fire".into(),
        };
        let stored = encode(&old).expect("encode");
        assert!(
            matches!(decode::<FailureDetected>(&stored), Err(proto::Error::Decode(m)) if m.contains("on_fire"))
        );
    }
}
