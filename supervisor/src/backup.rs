//! Backup and restore of the replicated state (`GET /v1/snapshot`,
//! `supctl snapshot save`, `supervisor --restore-from`).
//!
//! A backup ([`proto::backup::Backup`]) is the state as a Raft snapshot
//! encodes it, read together with the id of the last entry applied to it,
//! after a linearizable read barrier: every write acknowledged before the
//! request is in it.
//!
//! Restoring seeds an empty data dir with that state as a snapshot at the
//! backup's log index (`raft_store::seed`), under the membership of
//! `--peers`, so the restored cluster's log goes on after that index:
//! epochs keep growing, and an agent's module table (placed at epochs of
//! the old cluster) still matches the state. The cluster id is the one of
//! the backup, so the agents see the same cluster. Nothing is re-placed or
//! fenced: the new leader finds every module where the backup says, and
//! the agents' heartbeats confirm it, as after any change of leader.
//! (An agent that heard no leader for its whole lease has stopped its
//! `at-most-one` modules meanwhile, as always: the new leader restarts
//! them in place.)
//!
//! The seeded snapshot's log id carries term 0, below every term the new
//! cluster elects, so its first leader's entries follow it in the order
//! Raft requires; the backup's own term is only reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use proto::backup::Backup;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::raft::TypeConfig;
use crate::state::ClusterState;

type Log = raft_store::LogStore<TypeConfig>;
type Sm = raft_store::StateMachineStore<TypeConfig, ClusterState>;

/// A backup of the applied state (call after a read barrier).
pub fn take(
    state: &raft_store::StateHandle<TypeConfig, ClusterState>,
    now_ms: u64,
) -> Result<Backup> {
    state.read_applied(|applied, s| {
        let (index, term) = applied.map_or((0, 0), |id| (id.index, id.leader_id.term));
        let bytes =
            proto::encode(s).map_err(|e| Error::Unavailable(format!("encoding the state: {e}")))?;
        Ok(Backup::new(s.cluster_id, index, term, now_ms, bytes))
    })
}

/// Reads and checks the backup file at `path` (a backup, its checksum,
/// its state decodes and was applied up to the index it names). Every
/// error names the file.
pub fn load(path: &Path) -> Result<Backup> {
    let named = |m: String| Error::Config(format!("--restore-from {}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let backup = Backup::from_bytes(&bytes).map_err(|e| named(e.to_string()))?;
    let state: ClusterState = proto::decode(&backup.state)
        .map_err(|e| named(format!("the state does not decode: {e}")))?;
    if state.last_index != backup.index {
        return Err(named(format!(
            "the state was applied up to index {}, the file says {}",
            state.last_index, backup.index
        )));
    }
    Ok(backup)
}

/// Seeds the empty store with `backup` (see the module docs), under the
/// membership of `--peers`. Refused, with the data dir unchanged, unless
/// it is empty.
pub async fn seed(backup: &Backup, config: &Config, log: &mut Log, sm: &mut Sm) -> Result<()> {
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), backup.index);
    let voters: BTreeSet<u64> = config.peers.0.keys().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = config
        .peers
        .0
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    let membership = Membership::new(vec![voters], nodes);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!(
            "restored-{}-{}",
            backup.index,
            backup.sha256.get(..12).unwrap_or("")
        ),
    };
    raft_store::seed(log, sm, meta, backup.state.clone())
        .await
        .map_err(|m| {
            Error::Config(format!(
                "--restore-from into {}: {m}",
                config.data_dir.display()
            ))
        })
}
