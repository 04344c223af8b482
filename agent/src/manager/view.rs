//! What the agent shows of its module table: the status API's view
//! (`GET /v1/status`, see CONTRACT.md) and the heartbeat the leader reads.
//! Both are pure functions of the [`Table`] (and `now`), taken under the
//! agent's lock; nothing here changes state.
//!
//! The heartbeat carries one 3-bit status per module, in table order, and
//! the table itself (module, epoch, restore order, plus the node's address
//! and labels) only while the leader has not acknowledged its version.

use std::collections::BTreeMap;

use proto::Epoch;
use proto::heartbeat::{
    Heartbeat, MAX_REPORTS_PER_HEARTBEAT, ModuleStatus, ModuleTable, PackedStatuses, TableEntry,
};
use proto::spec::Fencing;
use serde::Serialize;
use tokio::time::Instant;

use super::table::Table;

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
    /// The supervisor cluster served (0: none yet).
    pub cluster: u64,
    pub table_version: u64,
    pub modules: Vec<ModuleStatusView>,
    /// Recent directives refused (stale, a bad module name) or not
    /// executed because their state could not be saved (newest last).
    pub refused: Vec<String>,
    pub pending_reports: usize,
}

/// Who this node is, as the leader sees it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub node: String,
    /// The `--listen` address, announced in the module table.
    pub addr: String,
    pub labels: BTreeMap<String, String>,
}

impl Table {
    /// The status API's view at `now`.
    pub fn status_view(&self, node: &str, now: Instant) -> StatusView {
        StatusView {
            node: node.to_string(),
            leader: self.leader.clone(),
            lease_ms_left: self
                .lease
                .map(|d| d.saturating_duration_since(now).as_millis() as u64)
                .unwrap_or(0),
            incarnation: self.cfg.incarnation,
            cluster: self.cluster,
            table_version: self.table_version,
            modules: self
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
            refused: self.refusals.iter().cloned().collect(),
            pending_reports: self.reports.len(),
        }
    }

    /// The heartbeat with sequence number `seq`; the table is included
    /// unless the leader acknowledged the current version (`acked`). Also
    /// returns how many reports it carries (to drop once accepted).
    pub fn heartbeat(&self, me: &NodeIdentity, seq: u64, acked: Option<u64>) -> (Heartbeat, usize) {
        let statuses: Vec<ModuleStatus> = self.slots.iter().map(|s| s.status).collect();
        let table = (acked != Some(self.table_version)).then(|| ModuleTable {
            addr: me.addr.clone(),
            labels: me.labels.clone(),
            modules: self
                .slots
                .iter()
                .map(|s| TableEntry {
                    module: s.name.clone(),
                    epoch: s.epoch,
                    restore_seq: s.restore_seq,
                })
                .collect(),
            cluster: self.cluster,
        });
        let hb = Heartbeat {
            node: me.node.clone(),
            incarnation: self.cfg.incarnation,
            seq,
            table_version: self.table_version,
            table,
            statuses: PackedStatuses::pack(&statuses),
            // The oldest first, at most MAX_REPORTS_PER_HEARTBEAT: the
            // leader acknowledges them by count, the rest go next time.
            reports: self
                .reports
                .iter()
                .take(MAX_REPORTS_PER_HEARTBEAT)
                .cloned()
                .collect(),
        };
        let sent = hb.reports.len();
        (hb, sent)
    }
}
