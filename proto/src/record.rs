//! Records of the supervisor's replicated state that the admin API shows.
//!
//! The supervisor keeps these inside its replicated state (Raft log and
//! snapshots, in [`crate::codec`]'s bincode) and answers them as JSON on the
//! admin API. They live here, not in the supervisor, so that a client of the
//! admin API (supctl, tests, a dashboard) can read them without linking
//! openraft and RocksDB.
//!
//! - [`Event`]: one recorded decision (`GET /v1/events`).
//! - [`EventKind`]: what was decided, one of a closed set of names.
//! - [`ModuleState`]: a module's life-cycle state (`state` of its view).
//!
//! ## Storage format (invariants)
//! Stored records are bincode, which is not self-describing, so their
//! encoding never changes shape:
//! - an [`EventKind`] is encoded as its name (a string, exactly as `kind`
//!   was encoded when it was a `String`), so logs and snapshots written
//!   before the enum existed decode unchanged, and new ones encode to the
//!   same bytes. An unknown name is a decode error, never a panic;
//! - [`EventKind`] and [`ModuleState`] variants are only ever added at the
//!   end ([`ModuleState`] is encoded by variant index).
//!
//! On the JSON side both are their snake_case names (`"failure_detected"`,
//! `"failing_over"`), the names the outside contract lists.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, ModuleName, NodeId};

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Event number, strictly increasing.
    pub index: u64,
    /// Raft log index of the entry that recorded it.
    pub log_index: u64,
    /// Leader clock (ms since the Unix epoch) stamped on that entry.
    pub at_ms: u64,
    pub kind: EventKind,
    pub module: Option<ModuleName>,
    pub node: Option<NodeId>,
    pub detail: BTreeMap<String, String>,
}

/// Declares [`EventKind`] with its names in one table, so the variant, its
/// name, [`EventKind::ALL`] and parsing cannot drift apart.
macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// What an [`Event`] records. Only ever appended to; each kind's
        /// name is part of the outside contract and of the storage format
        /// (see the module docs), so a name never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "&'static str", try_from = "String")]
        pub enum EventKind {
            $( $(#[$doc])* $variant, )*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The kind's name, as stored and as the admin API shows it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( EventKind::$variant => $name, )*
                }
            }
        }

        impl FromStr for EventKind {
            type Err = Error;

            fn from_str(name: &str) -> Result<EventKind, Error> {
                match name {
                    $( $name => Ok(EventKind::$variant), )*
                    _ => Err(Error::Unknown {
                        what: "event kind",
                        value: name.to_string(),
                    }),
                }
            }
        }
    };
}

event_kinds! {
    /// An operator deployed a module.
    ModuleDeployed = "module_deployed",
    /// An operator removed a module.
    ModuleRemoved = "module_removed",
    /// A module got its first node.
    Placed = "placed",
    /// The configuration package for a placement was retrieved from depmgr.
    PackageRetrieved = "package_retrieved",
    /// A placement's install ran healthy for `min_healthy_ms`.
    Installed = "installed",
    /// A heartbeat showed a running module down.
    FailureDetected = "failure_detected",
    /// A restore was ordered on the module's node.
    RestoreOrdered = "restore_ordered",
    /// A restore worked: the module ran healthy again.
    Restored = "restored",
    /// The module was placed on another node (failover, or its node lost).
    FailoverStarted = "failover_started",
    /// The previous node's copy is known stopped; the new one may start.
    PreviousReleased = "previous_released",
    /// Fetching, verifying or unpacking the package failed on the node.
    InstallFailed = "install_failed",
    /// The module went down on a new placement before it was healthy.
    StartFailed = "start_failed",
    /// The failover node failed the module too (claim 2).
    FailoverFailed = "failover_failed",
    /// The failover node runs the module healthy.
    FailoverCompleted = "failover_completed",
    /// No way left to run the module: it is failed.
    ModuleFailed = "module_failed",
    /// A node's agent was heard for the first time.
    NodeRegistered = "node_registered",
    /// A node's agent changed its address or labels.
    NodeUpdated = "node_updated",
    /// A node was silent for the heartbeat TTL.
    NodeSuspect = "node_suspect",
    /// A node was silent for the lease plus the drift margin.
    NodeDown = "node_down",
    /// A node is heard again.
    NodeReady = "node_ready",
    /// An operator drained a node.
    NodeDraining = "node_draining",
    /// A module was moved off a draining node.
    DrainMoved = "drain_moved",
    /// A module must leave its node but no eligible node is ready: it waits.
    FailoverWaiting = "failover_waiting",
    /// The replicated lease terms changed (a leader with other
    /// `--lease-ms` / `--lease-drift-ms`).
    LeaseTerms = "lease_terms",
    /// A node registered for the first time whose agent last served another
    /// supervisor cluster (the supervisors were re-created from scratch).
    NodeFromOtherCluster = "node_from_other_cluster",
    /// An update or a rollback started moving a module to another revision.
    RolloutStarted = "rollout_started",
    /// The new revision ran healthy for `min_healthy_ms`: the rollout is done.
    RolloutCompleted = "rollout_completed",
    /// The new revision failed (install, start, or its restores ran out, or
    /// its package was quarantined): the module went back to its last good
    /// revision.
    RolloutReverted = "rollout_reverted",
    /// A package version failed on several nodes: the cluster stopped using it.
    PackageQuarantined = "package_quarantined",
    /// A module's configuration package was downloaded and verified into the
    /// cache of the node its next failover would go to.
    PackagePrestaged = "package_prestaged",
    /// An operator lifted a package version's quarantine.
    QuarantineLifted = "quarantine_lifted",
    /// An operator started rolling a package version out to every module
    /// using the package (`rollout`, `package`, `modules`).
    FleetRolloutStarted = "fleet_rollout_started",
    /// A fleet rollout stopped starting modules: too many failed, its
    /// version was quarantined, or an operator paused it (`reason`).
    FleetRolloutPaused = "fleet_rollout_paused",
    /// An operator resumed a paused fleet rollout.
    FleetRolloutResumed = "fleet_rollout_resumed",
    /// Every module of a fleet rollout settled (`completed`, `failed`,
    /// `skipped` counts).
    FleetRolloutCompleted = "fleet_rollout_completed",
    /// An operator cancelled a fleet rollout: nothing more starts.
    FleetRolloutCancelled = "fleet_rollout_cancelled",
    /// An operator undrained a node: it takes modules again.
    NodeUndrained = "node_undrained",
    /// An operator reset a failed module: counters and tried nodes cleared,
    /// it is placed again.
    ModuleReset = "module_reset",
    /// An operator removed a down node: the cluster forgot it.
    NodeRemoved = "node_removed",
    /// An operator removed a module whose copy may still run: it is
    /// `stopped` until its copy is known stopped, then `module_removed`.
    ModuleStopping = "module_stopping",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<EventKind> for &'static str {
    fn from(kind: EventKind) -> &'static str {
        kind.as_str()
    }
}

impl TryFrom<String> for EventKind {
    type Error = Error;

    fn try_from(name: String) -> Result<EventKind, Error> {
        name.parse()
    }
}

/// The life-cycle state of a module (the `state` field of its view).
/// Stored by variant index: variants are only ever added at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    /// Deployed, waiting for a node.
    Pending,
    /// Placed; the package is being retrieved, installed and started.
    Installing,
    /// Running and healthy.
    Running,
    /// Failed on its node; restores ordered there.
    Restoring,
    /// Moving to a failover node (installing there).
    FailingOver,
    /// Given up; `reason` says why.
    Failed,
    /// Stopped by an operator.
    Stopped,
}

impl ModuleState {
    /// The state's name, as the admin API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Pending => "pending",
            ModuleState::Installing => "installing",
            ModuleState::Running => "running",
            ModuleState::Restoring => "restoring",
            ModuleState::FailingOver => "failing_over",
            ModuleState::Failed => "failed",
            ModuleState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    /// `Event` as it was stored before `EventKind` existed.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct OldEvent {
        index: u64,
        log_index: u64,
        at_ms: u64,
        kind: String,
        module: Option<String>,
        node: Option<String>,
        detail: BTreeMap<String, String>,
    }

    fn old(kind: &str) -> OldEvent {
        OldEvent {
            index: 7,
            log_index: 42,
            at_ms: 1_700_000_000_000,
            kind: kind.to_string(),
            module: Some("web".into()),
            node: None,
            detail: BTreeMap::from([("epoch".to_string(), "41".to_string())]),
        }
    }

    #[test]
    fn every_kind_encodes_as_the_string_it_was() {
        for &kind in EventKind::ALL {
            let before = old(kind.as_str());
            let stored = encode(&before).expect("encode old");
            let event: Event = decode(&stored).expect("old bytes decode as the new type");
            assert_eq!(event.kind, kind);
            assert_eq!(
                (event.index, event.log_index, event.at_ms),
                (7, 42, 1_700_000_000_000)
            );
            assert_eq!(
                (&event.module, &event.node, &event.detail),
                (&before.module, &before.node, &before.detail)
            );
            assert_eq!(
                encode(&event).expect("encode new"),
                stored,
                "new encodes to identical bytes"
            );
            let back: OldEvent = decode(&stored).expect("and back");
            assert_eq!(back, before);
        }
    }

    #[test]
    fn unknown_kind_is_a_decode_error() {
        let stored = encode(&old("module_exploded")).expect("encode");
        assert!(
            matches!(decode::<Event>(&stored), Err(Error::Decode(m)) if m.contains("module_exploded")),
        );
        assert_eq!(
            "Placed".parse::<EventKind>(),
            Err(Error::Unknown {
                what: "event kind",
                value: "Placed".into()
            })
        );
    }

    #[test]
    fn names_are_distinct_snake_case_and_round_trip() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 40);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len(), "names are distinct");
        for &kind in EventKind::ALL {
            let name = kind.as_str();
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(name.parse::<EventKind>(), Ok(kind));
            assert_eq!(kind.to_string(), name);
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::json!(name)
            );
            assert_eq!(
                serde_json::from_value::<EventKind>(serde_json::json!(name)).expect("json"),
                kind
            );
        }
    }

    #[test]
    fn event_json_is_unchanged() {
        let event: Event =
            decode(&encode(&old("failover_started")).expect("encode")).expect("decode");
        assert_eq!(
            serde_json::to_value(&event).expect("json"),
            serde_json::to_value(old("failover_started")).expect("json")
        );
    }

    #[test]
    fn module_state_json_names() {
        for (state, name) in [
            (ModuleState::Pending, "pending"),
            (ModuleState::FailingOver, "failing_over"),
            (ModuleState::Stopped, "stopped"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(
                serde_json::to_value(state).expect("json"),
                serde_json::json!(name)
            );
        }
    }
}
