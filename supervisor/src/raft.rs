//! All openraft generics behind one type configuration, the glue that
//! makes [`ClusterState`] the replicated state of a `raft-store`, and the
//! proposal queue ([`Proposals`]): how transitions become log entries.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::{BasicNode, Entry, TokioRuntime};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::{Batch, BatchResponse, ClusterState, Transition};

openraft::declare_raft_types!(
    /// The supervisor cluster's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

pub type SupervisorId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = raft_store::LogStore<TypeConfig>;
pub type StateMachineStore = raft_store::StateMachineStore<TypeConfig, ClusterState>;
pub type StateHandle = raft_store::StateHandle<TypeConfig, ClusterState>;
pub type RaftMetrics = openraft::RaftMetrics<SupervisorId, BasicNode>;

pub mod typ {
    //! Short aliases for openraft's generic request, response and error types.
    use super::{SupervisorId, TypeConfig};
    use openraft::BasicNode;

    pub type RaftError<E = openraft::error::Infallible> =
        openraft::error::RaftError<SupervisorId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<SupervisorId, BasicNode, RaftError<E>>;
    pub type InitializeError = openraft::error::InitializeError<SupervisorId, BasicNode>;
    pub type ClientWriteError = openraft::error::ClientWriteError<SupervisorId, BasicNode>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<SupervisorId, BasicNode>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<SupervisorId, BasicNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<SupervisorId>;
    pub type VoteRequest = openraft::raft::VoteRequest<SupervisorId>;
    pub type VoteResponse = openraft::raft::VoteResponse<SupervisorId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<SupervisorId>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
}

impl raft_store::ReplicatedState for ClusterState {
    type Command = Batch;
    type Response = BatchResponse;

    fn apply(&mut self, index: u64, command: &Batch) -> BatchResponse {
        ClusterState::apply(self, index, command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, proto::Error> {
        proto::encode(self)
    }

    fn frozen(&self) -> ClusterState {
        ClusterState::frozen(self)
    }

    fn restore(bytes: &[u8]) -> Result<Self, proto::Error> {
        proto::decode(bytes)
    }
}

// ---------------------------------------------------------------------------
// The proposal queue.

/// Proposals waiting for the batcher; one more waits in `propose` until
/// there is room (backpressure, never an unbounded queue).
pub const PROPOSAL_QUEUE: usize = 4096;
/// Most transitions one log entry gathers from several proposals (a single
/// proposal larger than this, e.g. a control-loop pass after a storm, is
/// never split: it goes alone).
pub const MAX_BATCH_TRANSITIONS: usize = 2048;
/// Most encoded bytes one log entry gathers from several proposals (the
/// same rule: a larger single proposal goes alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Log entries proposed and not yet answered, at most. While they are in
/// flight, new proposals queue up and go together in the next entry: the
/// batch grows with the load, and a lone proposal never waits for a timer.
pub const IN_FLIGHT: usize = 2;

/// Why a proposal was not committed (the same for every proposal of the
/// entry, hence cloneable).
#[derive(Debug, Clone)]
enum Failure {
    NotLeader(Option<(SupervisorId, String)>),
    Unavailable(String),
}

impl From<Failure> for crate::error::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotLeader(leader) => crate::error::Error::NotLeader { leader },
            Failure::Unavailable(why) => crate::error::Error::Unavailable(why),
        }
    }
}

/// One caller's transitions, waiting for a log entry.
struct Proposal {
    transitions: Vec<Transition>,
    /// Encoded size of `transitions` (computed by the caller).
    bytes: usize,
    reply: oneshot::Sender<Result<BatchResponse, Failure>>,
}

/// Counters of the queue: proposals answered and the log entries they
/// went in (so `proposals / entries` is the batching achieved), and how
/// long each entry took from proposal to applied on this leader.
#[derive(Debug)]
pub struct ProposalStats {
    pub proposals: AtomicU64,
    pub entries: AtomicU64,
    /// `client_write` of one entry to its answer: replicated to a quorum,
    /// committed and applied here (seconds).
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for ProposalStats {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        ProposalStats {
            proposals: AtomicU64::default(),
            entries: AtomicU64::default(),
            // 0.5 ms .. 8 s
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
        }
    }
}

/// The one way transitions reach the log: `propose` calls that arrive
/// together (admin writes, the control loop, package retrievals) share one
/// log entry, so one append, one WAL sync on each replica and one
/// replication round serve them all (openraft 0.9 waits for each append's
/// sync, so throughput comes from batching). Each caller gets the outcomes
/// of its own transitions, in order; a transition rejected by `apply`
/// affects only its own outcome (transitions are applied one by one, each
/// checking its own preconditions). Transitions of one caller stay
/// together and in order; callers are ordered by arrival.
///
/// Sharing a log index is safe: an epoch names a module's placement, and
/// two placements of one module cannot land in one entry (a `Place`
/// expects the epoch it was planned against, which the first one changes),
/// exactly as within one control-loop pass, which has always been one
/// entry.
pub struct Proposals {
    tx: mpsc::Sender<Proposal>,
    pub stats: Arc<ProposalStats>,
}

impl Proposals {
    /// Starts the batcher; it ends when `cancel` fires (proposals still
    /// queued are answered `Unavailable`).
    pub fn start(raft: Raft, cancel: CancellationToken, tasks: &TaskTracker) -> Proposals {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE);
        let stats = Arc::new(ProposalStats::default());
        tasks.spawn(batch_loop(raft, rx, cancel, stats.clone(), tasks.clone()));
        Proposals { tx, stats }
    }

    /// Proposes `transitions` (in one log entry, possibly with other
    /// callers' transitions) and waits until they are applied.
    pub async fn propose(
        &self,
        transitions: Vec<Transition>,
    ) -> crate::error::Result<BatchResponse> {
        let (reply, answer) = oneshot::channel();
        let bytes = proto::encoded_len(&transitions);
        let proposal = Proposal {
            transitions,
            bytes,
            reply,
        };
        if self.tx.send(proposal).await.is_err() {
            return Err(Failure::Unavailable("the replica is shutting down".into()).into());
        }
        match answer.await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Failure::Unavailable("the replica is shutting down".into()).into()),
        }
    }
}

async fn batch_loop(
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    cancel: CancellationToken,
    stats: Arc<ProposalStats>,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Proposal> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
            },
        };
        // Room in the pipeline first: meanwhile later proposals queue up
        // and join this entry.
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (mut count, mut bytes) = (first.transitions.len(), first.bytes);
        let mut group = vec![first];
        while count < MAX_BATCH_TRANSITIONS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            if count + next.transitions.len() > MAX_BATCH_TRANSITIONS
                || bytes + next.bytes > MAX_BATCH_BYTES
            {
                carry = Some(next);
                break;
            }
            count += next.transitions.len();
            bytes += next.bytes;
            group.push(next);
        }
        let (raft, stats) = (raft.clone(), stats.clone());
        tasks.spawn(async move {
            commit(&raft, group, &stats).await;
            drop(permit);
        });
    }
}

/// Commits one group of proposals as one log entry and answers each.
async fn commit(raft: &Raft, group: Vec<Proposal>, stats: &ProposalStats) {
    let mut callers = Vec::with_capacity(group.len());
    let mut transitions = Vec::new();
    for p in group {
        callers.push((p.transitions.len(), p.reply));
        transitions.extend(p.transitions);
    }
    let started = std::time::Instant::now();
    let result = raft.client_write(crate::leader::stamp(transitions)).await;
    if result.is_ok() {
        stats
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    stats.entries.fetch_add(1, Ordering::Relaxed);
    stats
        .proposals
        .fetch_add(callers.len() as u64, Ordering::Relaxed);
    match result {
        Ok(resp) => {
            let mut outcomes = resp.data.outcomes.into_iter();
            for (n, reply) in callers {
                let outcomes = outcomes.by_ref().take(n).collect();
                let _ = reply.send(Ok(BatchResponse { outcomes }));
            }
        }
        Err(e) => {
            let failure = match e {
                openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ForwardToLeader(f),
                ) => Failure::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))),
                e => Failure::Unavailable(e.to_string()),
            };
            for (_, reply) in callers {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use openraft::ServerState;
    use proto::spec::ModuleSpec;

    use super::*;
    use crate::app::App;
    use crate::config::Config;
    use crate::state::{Deploy, Outcome, Rejection};

    /// A one-replica cluster in this process (no HTTP): its App, leader.
    async fn single_replica(dir: &std::path::Path) -> Arc<App> {
        let config = Config::try_parse_from([
            "supervisor",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            &dir.display().to_string(),
            "--peers",
            "1=127.0.0.1:1",
        ])
        .expect("flags");
        let raft_config = config.raft_config().validate().expect("raft config");
        let (log, sm) = raft_store::Store::open::<TypeConfig, ClusterState>(dir).expect("store");
        let state = sm.handle();
        let raft_io = Arc::new(crate::network::RaftIo::default());
        raft_io.observe(&log);
        let network = crate::network::Network::new(None, raft_io.clone());
        let raft = Raft::new(1, Arc::new(raft_config), network, log, sm)
            .await
            .expect("raft");
        let depmgr = depmgr::client::Client::with_tls(
            "http://127.0.0.1:1",
            depmgr::client::Timeouts {
                connect: Duration::from_secs(1),
                request: Duration::from_secs(1),
                idle: Duration::from_secs(1),
            },
            None,
        )
        .expect("depmgr client");
        let app = App::new(
            config,
            raft,
            state,
            depmgr,
            None,
            crate::app::IoStats {
                handshakes: Arc::new(tls::HandshakeStats::default()),
                raft_io,
            },
            CancellationToken::new(),
        );
        app.bootstrap().await.expect("bootstrap");
        app.raft
            .wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "leader")
            .await
            .expect("a single replica leads");
        app
    }

    fn deploy(name: &str) -> Transition {
        let spec: ModuleSpec = serde_json::from_value(serde_json::json!({
            "name": name, "package": {"name": "p", "version": "1.0.0"}
        }))
        .expect("spec");
        Transition::Deploy(Deploy { spec })
    }

    /// Concurrent proposals share log entries; each caller gets the
    /// outcomes of its own transitions, in order; a rejected transition
    /// (a name already taken) changes nothing for the others, even in the
    /// same entry or the same proposal.
    #[tokio::test]
    async fn concurrent_proposals_share_entries_and_each_gets_its_own_outcomes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = single_replica(dir.path()).await;
        let before = app.raft.metrics().borrow().last_log_index.unwrap_or(0);

        // 200 unique deploys, 20 duplicates of some of them, and one
        // proposal of two transitions of which the second must fail.
        let mut calls: Vec<Vec<Transition>> =
            (0..200).map(|i| vec![deploy(&format!("m{i}"))]).collect();
        calls.extend((0..20).map(|i| vec![deploy(&format!("m{}", i * 10))]));
        calls.push(vec![deploy("pair"), deploy("pair")]);
        let proposals = calls.len() as u64;
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|t| {
                let app = app.clone();
                tokio::spawn(async move { (t.clone(), app.propose(t).await) })
            })
            .collect();
        let mut applied_by_name = std::collections::BTreeMap::<String, u32>::new();
        let mut rejected = 0;
        for task in tasks {
            let (sent, result) = task.await.expect("task");
            let outcomes = result.expect("committed").outcomes;
            assert_eq!(
                outcomes.len(),
                sent.len(),
                "one outcome per transition sent"
            );
            for (t, o) in sent.iter().zip(&outcomes) {
                let Transition::Deploy(d) = t else {
                    unreachable!()
                };
                match o {
                    Outcome::Applied { epoch } => {
                        assert!(*epoch > before);
                        *applied_by_name.entry(d.spec.name.clone()).or_default() += 1;
                    }
                    Outcome::Rejected(Rejection::Conflict(m)) => {
                        assert!(
                            m.contains(&d.spec.name) && m.contains("already exists"),
                            "{m}"
                        );
                        rejected += 1;
                    }
                    other => panic!("{}: {other:?}", d.spec.name),
                }
            }
            if sent.len() == 2 {
                assert!(
                    matches!(
                        &outcomes[..],
                        [Outcome::Applied { .. }, Outcome::Rejected(_)]
                    ),
                    "a proposal's own transitions stay in order: {outcomes:?}"
                );
            }
        }
        // Every name deployed exactly once; 21 rejections.
        assert_eq!(applied_by_name.len(), 201);
        assert!(applied_by_name.values().all(|n| *n == 1));
        assert_eq!(rejected, 21);
        app.state.read(|s| {
            assert_eq!(s.modules.len(), 201);
            assert!(s.modules.contains_key("m199") && s.modules.contains_key("pair"));
        });

        // Fewer log entries than proposals.
        let after = app.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let entries = after - before;
        let stats = &app.proposals.stats;
        assert_eq!(stats.proposals.load(Ordering::Relaxed), proposals);
        assert_eq!(stats.entries.load(Ordering::Relaxed), entries);
        assert!(
            entries < proposals,
            "{proposals} proposals made {entries} log entries"
        );
        app.cancel.cancel();
        app.raft.shutdown().await.expect("shutdown");
    }

    /// A proposal once Raft stopped, and once the replica shuts down (the
    /// queue's batcher gone), fails as unavailable: it never hangs.
    #[tokio::test]
    async fn a_proposal_after_shutdown_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = single_replica(dir.path()).await;
        app.raft.shutdown().await.expect("shutdown");
        let e = app.propose(vec![deploy("late")]).await.unwrap_err();
        assert!(matches!(e, crate::error::Error::Unavailable(_)), "{e:?}");
        app.cancel.cancel();
        let e = app.propose(vec![deploy("later")]).await.unwrap_err();
        assert!(matches!(e, crate::error::Error::Unavailable(_)), "{e:?}");
    }
}
