//! The heartbeat between a node manager (agent) and the supervisor leader.
//!
//! ## Heartbeat
//! Every `--heartbeat-ms`, and at once when a module's status changes, the
//! agent sends a [`Heartbeat`]: each module's status as a 3-bit
//! [`ModuleStatus`] code, packed ([`PackedStatuses`]), in the order of the
//! agent's [`ModuleTable`]. The table (node address, labels, and for each
//! position the module, its epoch and the restore order it last executed) is
//! sent only when it changed since the last table the leader acknowledged
//! (`table_version`), or when the leader asks for it (`need_table`, e.g.
//! after a leader change). A steady-state heartbeat for 64 modules is about
//! 45 bytes.
//!
//! `incarnation` is new on every agent start and `seq` grows with every
//! heartbeat, so a leader can drop stale or replayed heartbeats.
//!
//! ## Reply
//! The leader answers with a [`HeartbeatReply`]: whether it took the
//! heartbeat (or a hint where the leader is), a lease renewal, and
//! [`Directive`]s. Every directive carries the module's epoch; an agent
//! refuses a directive older than the highest epoch it has seen for the
//! module. Directives are level-triggered: the leader repeats one until the
//! agent's heartbeats show it took effect, so the agent must treat repeats
//! as no-ops.
//!
//! ## Cluster identity
//! Epochs are Raft log indexes, so they only compare within one cluster: a
//! cluster re-created from scratch starts its log at 1 again. An accepted
//! reply carries the leader's cluster id (chosen once, replicated); the
//! agent records the id it serves, and when a reply names another one it
//! adopts that cluster and drops the old cluster's epoch records first.
//! The module table carries the id the agent last served, so the new
//! cluster's leader can record that the node came from another cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::ConfigPackage;
use crate::spec::Fencing;
use crate::{Epoch, ModuleName, NodeId};

/// Most modules one node holds (the packed status count is a u16; the
/// agent refuses an install beyond it).
pub const MAX_MODULES: usize = 10_000;
/// Most reports one heartbeat carries: the oldest unacknowledged ones; the
/// rest follow in the next heartbeats.
pub const MAX_REPORTS_PER_HEARTBEAT: usize = 100;
/// Longest report message, in bytes; the agent cuts a longer one (at a
/// character boundary).
pub const MAX_REPORT_MESSAGE: usize = 1024;
/// Longest node address (`ModuleTable::addr`, the agent's `--listen`), in
/// bytes: a 253-byte DNS name, `:` and a port fit.
pub const MAX_ADDR_LEN: usize = 260;

/// Bytes of a bincode varint length prefix for a length of `n`.
const fn len_prefix(n: usize) -> usize {
    if n < 251 {
        1
    } else if n < 1 << 16 {
        3
    } else if n < 1 << 32 {
        5
    } else {
        9
    }
}

/// Most bytes of a string of at most `n` bytes.
const fn string_max(n: usize) -> usize {
    len_prefix(n) + n
}

/// Most bytes of a varint u64 (tag byte and 8 bytes), and of a u32.
const VARINT_U64: usize = 9;
const VARINT_U32: usize = 5;
/// A module or node name, its length prefix included: 1 + 64.
const NAME_MAX: usize = string_max(crate::names::MAX_NAME_LEN);
/// A [`TableEntry`]: name, epoch, restore_seq = 65 + 9 + 5 = 79.
const TABLE_ENTRY_MAX: usize = NAME_MAX + VARINT_U64 + VARINT_U32;
/// A [`Report`]: name, epoch, kind (variant index, 1 byte), message
/// = 65 + 9 + 1 + (3 + 1024) = 1102.
const REPORT_MAX: usize = NAME_MAX + VARINT_U64 + 1 + string_max(MAX_REPORT_MESSAGE);
/// A [`ModuleTable`]: addr (3 + 260), labels (count prefix 1, then key
/// and value of at most 1 + 64 each: 64 × 130 = 8,320), modules (3 +
/// 10,000 × 79 = 790,000), cluster (9) = 798,596.
const TABLE_MAX: usize = string_max(MAX_ADDR_LEN)
    + len_prefix(crate::spec::MAX_LABELS)
    + crate::spec::MAX_LABELS * 2 * NAME_MAX
    + len_prefix(MAX_MODULES)
    + MAX_MODULES * TABLE_ENTRY_MAX
    + VARINT_U64;
/// [`PackedStatuses`]: count (u16, 3) + bits (3 + 3,750) = 3,756.
const STATUSES_MAX: usize = 3
    + len_prefix((MAX_MODULES * ModuleStatus::BITS).div_ceil(8))
    + (MAX_MODULES * ModuleStatus::BITS).div_ceil(8);

/// The most bytes a [`Heartbeat`] an agent sends can encode to (format
/// byte included), from the bounds above: format 1 + node 65 + three u64
/// 27 + table (option tag 1 + 798,596) + statuses 3,756 + reports (1 +
/// 100 × 1,102 = 110,201) = 912,647 bytes.
pub const MAX_HEARTBEAT_ENCODED: usize = 1
    + NAME_MAX
    + 3 * VARINT_U64
    + 1
    + TABLE_MAX
    + STATUSES_MAX
    + len_prefix(MAX_REPORTS_PER_HEARTBEAT)
    + MAX_REPORTS_PER_HEARTBEAT * REPORT_MAX;

/// The body limit of `POST /v1/agent/heartbeat`: 1 MiB, the largest
/// legitimate heartbeat ([`MAX_HEARTBEAT_ENCODED`], 912,647 bytes) with
/// about 15 % to spare. A steady-state heartbeat is tens of bytes.
pub const MAX_HEARTBEAT_BYTES: usize = 1 << 20;
const _: () = assert!(MAX_HEARTBEAT_ENCODED <= MAX_HEARTBEAT_BYTES);
const _: () = assert!(MAX_HEARTBEAT_ENCODED == 912_647);

/// A module's status on its node, 3 bits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ModuleStatus {
    /// Not running and not being started (e.g. after an agent restart, or
    /// stopped on a stop directive).
    Stopped = 0,
    /// Process started; its health probe has not passed yet.
    Starting = 1,
    /// Process alive, probe (if any) passing.
    Running = 2,
    /// Process exited, or is alive but failing its probe.
    Failed = 3,
    /// Fetching, verifying or unpacking the configuration package.
    Installing = 4,
    /// The install did not work (see the heartbeat's reports for why).
    InstallFailed = 5,
    /// A restore directive was accepted; waiting its backoff, then starting.
    Restoring = 6,
    /// Stopped by the agent itself because its lease ran out (fencing).
    Fenced = 7,
}

impl ModuleStatus {
    /// Bits per module in [`PackedStatuses`].
    pub const BITS: usize = 3;

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<ModuleStatus> {
        use ModuleStatus::*;
        Some(match code {
            0 => Stopped,
            1 => Starting,
            2 => Running,
            3 => Failed,
            4 => Installing,
            5 => InstallFailed,
            6 => Restoring,
            7 => Fenced,
            _ => return None,
        })
    }

    /// True when the module is not running and nothing on the node is about
    /// to start it: the supervisor has to act.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            ModuleStatus::Stopped
                | ModuleStatus::Failed
                | ModuleStatus::InstallFailed
                | ModuleStatus::Fenced
        )
    }

    pub fn as_str(self) -> &'static str {
        use ModuleStatus::*;
        match self {
            Stopped => "stopped",
            Starting => "starting",
            Running => "running",
            Failed => "failed",
            Installing => "installing",
            InstallFailed => "install_failed",
            Restoring => "restoring",
            Fenced => "fenced",
        }
    }
}

/// Module status codes packed [`ModuleStatus::BITS`] bits each,
/// least-significant bits first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedStatuses {
    /// Number of modules packed.
    pub count: u16,
    pub bits: Vec<u8>,
}

impl PackedStatuses {
    pub fn pack(statuses: &[ModuleStatus]) -> PackedStatuses {
        let count = u16::try_from(statuses.len()).expect("a node runs fewer than 65536 modules");
        let mut bits = vec![0u8; (statuses.len() * ModuleStatus::BITS).div_ceil(8)];
        for (i, s) in statuses.iter().enumerate() {
            let bit = i * ModuleStatus::BITS;
            let word = u16::from(s.code()) << (bit % 8);
            bits[bit / 8] |= word as u8;
            if let Some(next) = bits.get_mut(bit / 8 + 1) {
                *next |= (word >> 8) as u8;
            }
        }
        PackedStatuses { count, bits }
    }

    /// Unpacks; `None` when the byte count does not match `count`.
    pub fn to_statuses(&self) -> Option<Vec<ModuleStatus>> {
        let n = usize::from(self.count);
        if self.bits.len() != (n * ModuleStatus::BITS).div_ceil(8) {
            return None;
        }
        (0..n)
            .map(|i| {
                let bit = i * ModuleStatus::BITS;
                let lo = u16::from(self.bits[bit / 8]);
                let hi = u16::from(self.bits.get(bit / 8 + 1).copied().unwrap_or(0));
                let word = (lo | hi << 8) >> (bit % 8);
                ModuleStatus::from_code((word & 0b111) as u8)
            })
            .collect()
    }
}

/// One position of the module table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub module: ModuleName,
    /// Epoch of the placement the agent runs the module under.
    pub epoch: Epoch,
    /// The restore order (`Restore::seq`) the current process came from;
    /// 0 for the start after an install.
    pub restore_seq: u32,
}

/// What a node is and runs: sent only when it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleTable {
    /// The agent's `--listen` address.
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub modules: Vec<TableEntry>,
    /// Id of the supervisor cluster the agent last served (0: none yet);
    /// a leader of another cluster records that the node came from it.
    pub cluster: u64,
}

/// Something the agent wants the supervisor (and the operator) to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub kind: ReportKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The install failed; the message says why.
    InstallFailed,
    /// The module exited or failed its probe; the message says how.
    Failed,
    /// A directive was refused because its epoch is older than one seen.
    StaleDirective,
    /// The agent stopped the module because its lease ran out.
    Fenced,
    /// Answer to a [`Directive::Prefetch`]: every archive of the module's
    /// configuration package at `epoch` is in this node's cache, verified
    /// against its digest (the message says how many and how large). Sent
    /// again when a prefetch is repeated (e.g. to a new leader).
    Prestaged,
}

/// The node manager's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    /// New on every agent start.
    pub incarnation: u64,
    /// Grows with every heartbeat of one incarnation.
    pub seq: u64,
    /// Version of the agent's module table; grows when the table changes.
    pub table_version: u64,
    /// The table, when it changed since the version the leader acknowledged.
    pub table: Option<ModuleTable>,
    /// Status code of each module, in table order.
    pub statuses: PackedStatuses,
    /// Reports not yet acknowledged (usually none).
    pub reports: Vec<Report>,
}

/// The leader's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub outcome: ReplyOutcome,
    /// The leader lacks this node's table (new leader, or a version it has
    /// not seen): send it with the next heartbeat, at once.
    pub need_table: bool,
    /// Lease granted from the moment the heartbeat was sent; 0 = not renewed.
    pub lease_ms: u64,
    pub directives: Vec<Directive>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyOutcome {
    /// Taken (its table version and reports are acknowledged). `cluster`
    /// is the id of the leader's cluster (0: not chosen yet); an agent that
    /// served another cluster adopts it and forgets that cluster's epochs.
    Accepted { table_version: u64, cluster: u64 },
    /// This supervisor is not the leader; the hint is the leader's address
    /// when known.
    NotLeader { leader: Option<String> },
    /// Older than a heartbeat already seen (incarnation or seq); ignored.
    Stale,
}

/// An order for a node manager, fenced by the module's epoch.
// Install is large (it carries the package), but directives are few and
// short-lived; boxing it would only complicate every match on them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Directive {
    Restore(Restore),
    Install(Install),
    Stop(Stop),
    /// Added after the first three: see [`Prefetch`].
    Prefetch(Prefetch),
}

impl Directive {
    pub fn module(&self) -> &str {
        match self {
            Directive::Restore(d) => &d.module,
            Directive::Install(d) => &d.module,
            Directive::Stop(d) => &d.module,
            Directive::Prefetch(d) => &d.module,
        }
    }

    pub fn epoch(&self) -> Epoch {
        match self {
            Directive::Restore(d) => d.epoch,
            Directive::Install(d) => d.epoch,
            Directive::Stop(d) => d.epoch,
            Directive::Prefetch(d) => d.epoch,
        }
    }
}

/// Restart a failed module in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    pub module: ModuleName,
    pub epoch: Epoch,
    /// Number of this restore order for the placement (1, 2, …); the agent
    /// reports it back in its table entry once executed.
    pub seq: u32,
    /// Wait this long before restarting.
    pub backoff_ms: u64,
}

/// Install a configuration package and start the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub fencing: Fencing,
    pub package: ConfigPackage,
    /// Where to fetch the artifacts (`http://host:port` of depmgr).
    pub depmgr: String,
}

/// Download and verify the configuration package of a module placed on
/// another node into this node's cache, without installing or starting
/// anything: this node is the one the module would fail over to next
/// (pre-staging), so that a failover installs from the cache. The agent
/// answers with a [`ReportKind::Prestaged`] report once every archive is
/// cached; the leader stops repeating the directive when it has seen it.
/// `epoch` is the epoch of the module's current placement (on the other
/// node); it fences nothing on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefetch {
    pub module: ModuleName,
    pub epoch: Epoch,
    pub package: ConfigPackage,
    /// Where to fetch the artifacts (`http://host:port` of depmgr).
    pub depmgr: String,
}

/// Stop the module and forget it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub module: ModuleName,
    pub epoch: Epoch,
}

impl Heartbeat {
    /// The largest heartbeat the agent's bounds allow: every name at
    /// [`crate::names::MAX_NAME_LEN`] (valid names), every number at its
    /// widest, a full table with the most labels, a full batch of reports
    /// at the longest message. Its encoding is [`MAX_HEARTBEAT_ENCODED`]
    /// bytes; for bound checks and tests.
    pub fn largest() -> Heartbeat {
        use crate::names::MAX_NAME_LEN;
        use crate::spec::MAX_LABELS;
        let name = |i: usize| format!("n{i:0>w$}", w = MAX_NAME_LEN - 1);
        Heartbeat {
            node: name(0),
            incarnation: u64::MAX,
            seq: u64::MAX,
            table_version: u64::MAX,
            table: Some(ModuleTable {
                addr: "a".repeat(MAX_ADDR_LEN),
                labels: (0..MAX_LABELS).map(|i| (name(i), name(i))).collect(),
                modules: (0..MAX_MODULES)
                    .map(|i| TableEntry {
                        module: name(i),
                        epoch: u64::MAX,
                        restore_seq: u32::MAX,
                    })
                    .collect(),
                cluster: u64::MAX,
            }),
            statuses: PackedStatuses::pack(&vec![ModuleStatus::Fenced; MAX_MODULES]),
            reports: (0..MAX_REPORTS_PER_HEARTBEAT)
                .map(|i| Report {
                    module: name(i),
                    epoch: u64::MAX,
                    kind: ReportKind::Fenced,
                    message: "m".repeat(MAX_REPORT_MESSAGE),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::manifest::{ArtifactRef, Manifest};
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = ModuleStatus> {
        (0u8..8).prop_map(|c| ModuleStatus::from_code(c).expect("3-bit code"))
    }

    fn steady_heartbeat(n: usize) -> Heartbeat {
        let statuses: Vec<_> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    ModuleStatus::Failed
                } else {
                    ModuleStatus::Running
                }
            })
            .collect();
        Heartbeat {
            node: "node-a".into(),
            incarnation: 1_732_700_000_123,
            seq: 1_000_000,
            table_version: 12,
            table: None,
            statuses: PackedStatuses::pack(&statuses),
            reports: vec![],
        }
    }

    #[test]
    fn steady_state_heartbeat_for_64_modules_is_small() {
        let blob = encode(&steady_heartbeat(64)).expect("encode");
        println!("steady-state heartbeat, 64 modules: {} bytes", blob.len());
        assert!(blob.len() < 64, "heartbeat is {} bytes", blob.len());
        assert_eq!(
            decode::<Heartbeat>(&blob).expect("decode"),
            steady_heartbeat(64)
        );
    }

    /// The largest heartbeat the agent's bounds allow encodes to exactly
    /// the computed bound (so the arithmetic matches the codec), under
    /// the body limit.
    #[test]
    fn largest_legitimate_heartbeat_fits_the_bound() {
        let hb = Heartbeat::largest();
        let blob = encode(&hb).expect("encode");
        assert_eq!(blob.len(), MAX_HEARTBEAT_ENCODED);
        assert!(blob.len() <= MAX_HEARTBEAT_BYTES);
    }

    fn sample_directives() -> Vec<Directive> {
        let manifest =
            Manifest::from_toml("name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"")
                .expect("manifest");
        vec![
            Directive::Restore(Restore {
                module: "web".into(),
                epoch: 7,
                seq: 2,
                backoff_ms: 200,
            }),
            Directive::Install(Install {
                module: "web".into(),
                epoch: 9,
                fencing: Fencing::AtLeastOne,
                package: ConfigPackage {
                    manifest,
                    artifacts: vec![ArtifactRef {
                        name: "web".into(),
                        version: "1.0.0".into(),
                        digest: "ab".repeat(32),
                    }],
                },
                depmgr: "http://127.0.0.1:7000".into(),
            }),
            Directive::Stop(Stop {
                module: "web".into(),
                epoch: 11,
            }),
            Directive::Prefetch(Prefetch {
                module: "web".into(),
                epoch: 12,
                package: ConfigPackage {
                    manifest: Manifest::from_toml(
                        "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"",
                    )
                    .expect("manifest"),
                    artifacts: vec![],
                },
                depmgr: "http://127.0.0.1:7000".into(),
            }),
        ]
    }

    /// Variants added later keep the positions the reference names: an
    /// agent or leader of an older build decodes every earlier variant
    /// unchanged.
    #[test]
    fn added_variants_are_appended() {
        let d = sample_directives();
        let index = |v: &Directive| encode(v).expect("encode")[1];
        assert_eq!(d.iter().map(index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(encode(&ReportKind::Fenced).expect("encode")[1], 3);
        assert_eq!(encode(&ReportKind::Prestaged).expect("encode")[1], 4);
    }

    #[test]
    fn reply_round_trips() {
        let reply = HeartbeatReply {
            outcome: ReplyOutcome::NotLeader {
                leader: Some("127.0.0.1:7001".into()),
            },
            need_table: true,
            lease_ms: 3000,
            directives: sample_directives(),
        };
        let blob = encode(&reply).expect("encode");
        assert_eq!(decode::<HeartbeatReply>(&blob).expect("decode"), reply);
        for cut in 0..blob.len() {
            assert!(
                decode::<HeartbeatReply>(&blob[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn packing_round_trips(statuses in proptest::collection::vec(status(), 0..300)) {
            let packed = PackedStatuses::pack(&statuses);
            prop_assert_eq!(packed.bits.len(), (statuses.len() * 3).div_ceil(8));
            prop_assert_eq!(packed.to_statuses(), Some(statuses));
        }

        #[test]
        fn heartbeat_round_trips(
            statuses in proptest::collection::vec(status(), 0..100),
            seq in any::<u64>(),
            incarnation in any::<u64>(),
            with_table in any::<bool>(),
            names in proptest::collection::vec("[a-z]{1,8}", 0..5),
        ) {
            let hb = Heartbeat {
                node: "n1".into(),
                incarnation,
                seq,
                table_version: seq / 2,
                table: with_table.then(|| ModuleTable {
                    addr: "10.0.0.1:7100".into(),
                    labels: BTreeMap::from([("zone".into(), "east".into())]),
                    modules: names.iter().enumerate().map(|(i, m)| TableEntry {
                        module: m.clone(), epoch: i as u64, restore_seq: 0,
                    }).collect(),
                    cluster: seq,
                }),
                statuses: PackedStatuses::pack(&statuses),
                reports: names.iter().map(|m| Report {
                    module: m.clone(), epoch: 3, kind: ReportKind::InstallFailed, message: "digest".into(),
                }).collect(),
            };
            let blob = encode(&hb).expect("encode");
            prop_assert_eq!(decode::<Heartbeat>(&blob).expect("decode"), hb);
            for cut in 0..blob.len() {
                prop_assert!(decode::<Heartbeat>(&blob[..cut]).is_err());
            }
        }

        #[test]
        fn random_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Heartbeat>(&bytes);
            let _ = decode::<HeartbeatReply>(&bytes);
            let _ = PackedStatuses { count: bytes.len() as u16, bits: bytes }.to_statuses();
        }
    }
}
