//! The leader's side of the heartbeat protocol: `Leader::heartbeat(hb) ->
//! reply`.
//!
//! A heartbeat is taken into the in-memory observation (never the log).
//! When it changed something, the reply waits for a control-loop pass that
//! started after it, so that a crash turns into a committed restore order
//! and its directive in the same round trip. Before any lease is granted,
//! the reply waits for a quorum to confirm this leadership in a round that
//! started after the heartbeat arrived, so a deposed leader cannot extend a
//! lease. Both waits are batched across all heartbeats in flight
//! ([`super::rounds::Rounds`]). Directives come from committed state only
//! ([`crate::directives`]), cached per node while neither the state nor the
//! node's observation changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::heartbeat::{Heartbeat, HeartbeatReply, ReplyOutcome};

use super::Leader;
use crate::observe::Ingest;
use crate::prestage::TargetMap;
use std::time::Instant;

/// Longest a heartbeat waits for the leader to catch up with its term.
const READY_WAIT: Duration = Duration::from_secs(1);

/// A reply that carries no lease and no directives.
fn reply(outcome: ReplyOutcome) -> HeartbeatReply {
    HeartbeatReply {
        outcome,
        need_table: false,
        lease_ms: 0,
        directives: vec![],
    }
}

impl Leader {
    /// The latest pre-staging targets (`None` with `--prestage false` or
    /// before the first computation ended); starts a computation on a
    /// blocking thread, on a copy of the committed state, when
    /// [`crate::prestage::Targets::due`] says so. Never waits for one.
    fn prestage_targets(self: &Arc<Self>) -> Option<(u64, Arc<TargetMap>)> {
        if !self.app.config.prestage {
            return None;
        }
        let index = self.app.state.read(|s| s.last_index);
        let mut targets = self
            .prestage_targets
            .lock()
            .expect("prestage targets lock poisoned");
        let current = targets.current();
        if targets.due(index, Instant::now()) {
            drop(targets);
            let frozen = self.app.state.read(|s| s.frozen());
            let started = Instant::now();
            let job = tokio::task::spawn_blocking(move || {
                let map = crate::plan::next_nodes(&frozen);
                (frozen.last_index, map)
            });
            let me = self.clone();
            tokio::spawn(async move {
                let result = job.await;
                let mut targets = me
                    .prestage_targets
                    .lock()
                    .expect("prestage targets lock poisoned");
                match result {
                    Ok((index, map)) => targets.done(index, map, started, Instant::now()),
                    Err(e) => {
                        // Not left "under way" for the rest of the term.
                        tracing::error!(
                            "computing the pre-staging targets failed: {e}; trying again later"
                        );
                        targets.failed(started, Instant::now());
                    }
                }
            });
        }
        current
    }
}

/// The reply of a replica that cannot answer as leader: where the leader
/// is, when known.
pub fn not_leader(leader: Option<String>) -> HeartbeatReply {
    reply(ReplyOutcome::NotLeader { leader })
}

impl Leader {
    /// Answers one heartbeat of node `hb.node` (already decoded and its
    /// node name checked).
    pub async fn heartbeat(self: &Arc<Self>, hb: &Heartbeat) -> HeartbeatReply {
        let app = &self.app;
        if !self.wait_ready(READY_WAIT).await {
            return not_leader(Some(app.config.advertised().to_string()));
        }
        let need_table = match self.ingest(hb) {
            Ingest::Stale => return reply(ReplyOutcome::Stale),
            Ingest::Accepted {
                changed,
                need_table,
            } => {
                if changed {
                    self.await_pass().await;
                }
                need_table
            }
        };
        if !self.confirm().await {
            return not_leader(app.leader_addr().map(|(_, a)| a));
        }
        let targets = self.prestage_targets();
        let (directives, acked) = {
            let mut observed = self.lock_observed();
            match observed.nodes.get_mut(&hb.node) {
                Some(obs) if obs.table.is_some() => (
                    app.state.read(|s| {
                        let mine = targets
                            .as_ref()
                            .map(|(_, map)| map.get(&hb.node).map_or(&[][..], Vec::as_slice));
                        obs.directives(s, &hb.node, &app.config.depmgr, mine)
                    }),
                    obs.table_version,
                ),
                _ => (vec![], 0),
            }
        };
        app.metrics
            .directives
            .fetch_add(directives.len() as u64, Ordering::Relaxed);
        HeartbeatReply {
            outcome: ReplyOutcome::Accepted {
                table_version: acked,
                cluster: app.state.read(|s| s.cluster_id),
            },
            need_table,
            // Never more than the replicated terms: a lease a later leader
            // with other flags would not wait for cannot be granted.
            lease_ms: app
                .state
                .read(|s| crate::plan::grantable_lease_ms(app.config.timing(), s.lease)),
            directives,
        }
    }
}
