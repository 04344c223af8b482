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

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, ModuleName, NodeId};

/// An event's details, by key: a map kept as one sorted vector (a few
/// entries each), encoded exactly as a `BTreeMap<String, String>` is (a
/// map, in key order), so stored events decode unchanged.
pub type Detail = litemap::LiteMap<String, String>;

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
    pub detail: Detail,
    /// The index of the event that led to this one (see [`Event::cause`]'s
    /// rules in the supervisor's `state::why`), `None` for an operator's
    /// request that starts a chain (a deploy) and for events recorded
    /// before causes were. Not part of [`StoredEvent`]: the event ring
    /// stores causes beside the events, so its old encoding is unchanged.
    #[serde(default)]
    pub cause: Option<u64>,
}

/// An [`Event`] as the supervisor's event ring has stored it since the
/// first format: every field but [`Event::cause`], in order. Decoding one
/// gives an event without a cause; [`StoredEvent::of`] encodes an event
/// to exactly these bytes without copying it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredEvent {
    pub index: u64,
    pub log_index: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    pub module: Option<ModuleName>,
    pub node: Option<NodeId>,
    pub detail: Detail,
}

impl StoredEvent {
    /// A view of `event` that serializes as a [`StoredEvent`].
    pub fn of(event: &Event) -> StoredEventRef<'_> {
        StoredEventRef(event)
    }
}

impl From<StoredEvent> for Event {
    fn from(s: StoredEvent) -> Event {
        Event {
            index: s.index,
            log_index: s.log_index,
            at_ms: s.at_ms,
            kind: s.kind,
            module: s.module,
            node: s.node,
            detail: s.detail,
            cause: None,
        }
    }
}

/// See [`StoredEvent::of`].
pub struct StoredEventRef<'a>(&'a Event);

impl Serialize for StoredEventRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.0;
        let mut st = s.serialize_struct("Event", 7)?;
        st.serialize_field("index", &e.index)?;
        st.serialize_field("log_index", &e.log_index)?;
        st.serialize_field("at_ms", &e.at_ms)?;
        st.serialize_field("kind", &e.kind)?;
        st.serialize_field("module", &e.module)?;
        st.serialize_field("node", &e.node)?;
        st.serialize_field("detail", &e.detail)?;
        st.end()
    }
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

/// An event's details by key, as the supervisor keeps them ([`Detail`])
/// or as a client decodes them (a `BTreeMap`).
pub trait Details {
    /// The detail under `key`.
    fn detail(&self, key: &str) -> Option<&str>;
}

impl Details for Detail {
    fn detail(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Details for std::collections::BTreeMap<String, String> {
    fn detail(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// One line an operator reads at 3 a.m.: what an event of `kind` about
/// `module` on `node` with `detail` means. Shared by the supervisor (the
/// `text` of `GET /v1/modules/{name}/why`) and clients, so every place says
/// it the same way. Unknown detail is left out, never guessed.
pub fn explain(
    kind: EventKind,
    module: Option<&str>,
    node: Option<&str>,
    detail: &impl Details,
) -> String {
    use EventKind as K;
    let d = |key: &str| detail.detail(key).unwrap_or("");
    let m = module.unwrap_or("?");
    let n = node.unwrap_or("?");
    let on = |text: String| match node {
        Some(n) => format!("{text} on {n}"),
        None => text,
    };
    let because = |key: &str| match detail.detail(key) {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    };
    match kind {
        K::ModuleDeployed => format!("an operator deployed {m} (package {})", d("package")),
        K::ModuleRemoved => format!("an operator removed {m}; it is gone"),
        K::Placed if detail.detail("revision").is_some() => format!(
            "{m} placed on {n} to run revision {} (epoch {})",
            d("revision"),
            d("epoch")
        ),
        K::Placed => format!("{m} placed on {n} (epoch {})", d("epoch")),
        K::PackageRetrieved => on(format!(
            "package {m} {} retrieved from depmgr for the install",
            d("version")
        )),
        K::Installed => on(format!("{m} installed and running healthy")),
        K::FailureDetected => on(format!(
            "a heartbeat showed {m} {}",
            match d("status") {
                "" => "down",
                s => s,
            }
        )),
        K::RestoreOrdered => on(format!(
            "restore {} of {} ordered for {m}",
            d("attempt"),
            d("of")
        )),
        K::Restored => on(format!("{m} restored: running healthy again")),
        K::FailoverStarted => format!(
            "{m} failing over from {} to {n}{}",
            match d("from") {
                "" => "nowhere",
                f => f,
            },
            because("reason")
        ),
        K::PreviousReleased => {
            format!("the old copy of {m} on {n} is known stopped: the new placement may start")
        }
        K::InstallFailed => on(format!("installing {m} failed{}", because("reason"))),
        K::StartFailed => on(format!(
            "{m} went down before it was healthy{}",
            because("reason")
        )),
        K::FailoverFailed => on(format!(
            "the failover node failed {m} too{}",
            because("reason")
        )),
        K::FailoverCompleted => on(format!("failover of {m} completed: running healthy")),
        K::ModuleFailed => format!(
            "{m} failed for good (`supctl reset {m}` once the cause is fixed){}",
            because("reason")
        ),
        K::NodeRegistered => format!("node {n} registered (agent at {})", d("addr")),
        K::NodeUpdated => format!("node {n} changed its address or labels"),
        K::NodeSuspect => format!("node {n} suspect{}", because("detail")),
        K::NodeDown => format!("node {n} down{}", because("detail")),
        K::NodeReady => format!("node {n} heard again: ready"),
        K::NodeDraining => format!("an operator drained node {n}"),
        K::DrainMoved => format!(
            "{m} moved from draining node {} to {n}",
            match d("from") {
                "" => "?",
                f => f,
            }
        ),
        K::FailoverWaiting => format!("{m} waits for a node{}", because("reason")),
        K::LeaseTerms => format!(
            "lease terms changed to {} ms (+{} ms drift)",
            d("lease_ms"),
            d("drift_ms")
        ),
        K::NodeFromOtherCluster => {
            format!(
                "node {n} last served another supervisor cluster ({})",
                d("from_cluster")
            )
        }
        K::RolloutStarted if d("rollback") == "true" => format!(
            "an operator rolled {m} back from revision {} to {}",
            d("from"),
            d("to")
        ),
        K::RolloutStarted => format!(
            "{m} rolling out from revision {} to {} ({})",
            d("from"),
            d("to"),
            d("package")
        ),
        K::RolloutCompleted => format!("{m} rollout to revision {} completed", d("to")),
        K::RolloutReverted => format!(
            "{m} reverted from revision {} to {}{}",
            d("from"),
            d("to"),
            because("reason")
        ),
        K::PackageQuarantined => format!(
            "package {} quarantined after failing on {}",
            d("package"),
            d("nodes")
        ),
        K::PackagePrestaged => on(format!("package {} pre-staged", d("package"))),
        K::QuarantineLifted => format!("an operator lifted the quarantine of {}", d("package")),
        K::FleetRolloutStarted => {
            format!("fleet rollout {} of {} started", d("rollout"), d("package"))
        }
        K::FleetRolloutPaused => {
            format!("fleet rollout {} paused{}", d("rollout"), because("reason"))
        }
        K::FleetRolloutResumed => format!("fleet rollout {} resumed", d("rollout")),
        K::FleetRolloutCompleted => format!("fleet rollout {} completed", d("rollout")),
        K::FleetRolloutCancelled => format!("fleet rollout {} cancelled", d("rollout")),
        K::NodeUndrained => format!("an operator undrained node {n}: it takes modules again"),
        K::ModuleReset => {
            format!("an operator reset {m}: counters and tried nodes cleared, to be placed again")
        }
        K::NodeRemoved => format!("an operator removed down node {n}"),
        K::ModuleStopping => format!(
            "{m} stopping (removed): waiting for its copy on {} to stop",
            d("waiting_for")
        ),
    }
}

impl Event {
    /// [`explain`] for this event.
    pub fn explain(&self) -> String {
        explain(
            self.kind,
            self.module.as_deref(),
            self.node.as_deref(),
            &self.detail,
        )
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
    use std::collections::BTreeMap;

    /// An event's details encode as the `BTreeMap` they were, in the
    /// stored encoding and in JSON, whatever order they were added in,
    /// and decode back from its bytes.
    #[test]
    fn details_encode_as_the_btreemap_they_were() {
        let pairs = [("tried", "a,b"), ("epoch", "41"), ("reason", "crashed")];
        let tree: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let detail: Detail = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            encode(&detail).expect("encode"),
            encode(&tree).expect("encode")
        );
        assert_eq!(
            serde_json::to_string(&detail).expect("json"),
            serde_json::to_string(&tree).expect("json")
        );
        let back: Detail = decode(&encode(&tree).expect("encode")).expect("decode");
        assert_eq!(back, detail);
        let from_json: Detail = serde_json::from_str(r#"{"b":"2","a":"1"}"#).expect("json");
        assert_eq!(from_json.get("a").map(String::as_str), Some("1"));
        assert_eq!(from_json.len(), 2);
    }

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
            let event: Event = decode::<StoredEvent>(&stored)
                .expect("old bytes decode as the new type")
                .into();
            assert_eq!(event.cause, None);
            assert_eq!(event.kind, kind);
            assert_eq!(
                (event.index, event.log_index, event.at_ms),
                (7, 42, 1_700_000_000_000)
            );
            assert_eq!(
                (&event.module, &event.node, &event.detail),
                (
                    &before.module,
                    &before.node,
                    &before.detail.clone().into_iter().collect::<Detail>()
                )
            );
            assert_eq!(
                encode(&StoredEvent::of(&event)).expect("encode new"),
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
            matches!(decode::<StoredEvent>(&stored), Err(Error::Decode(m)) if m.contains("module_exploded")),
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
    fn event_json_is_unchanged_but_for_the_added_cause() {
        let mut event: Event =
            decode::<StoredEvent>(&encode(&old("failover_started")).expect("encode"))
                .expect("decode")
                .into();
        let mut want = serde_json::to_value(old("failover_started")).expect("json");
        want["cause"] = serde_json::Value::Null;
        assert_eq!(serde_json::to_value(&event).expect("json"), want);
        // A client of an older supervisor (no `cause`) reads it as none.
        let without: Event =
            serde_json::from_value(serde_json::to_value(old("failover_started")).expect("json"))
                .expect("json without cause");
        assert_eq!(without, event);
        event.cause = Some(5);
        want["cause"] = serde_json::json!(5);
        assert_eq!(serde_json::to_value(&event).expect("json"), want);
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
