//! The running replica: Raft handle, applied state, leader session,
//! metrics, and the one place where transitions are proposed.
//!
//! With TLS ([`App::tls`]) the replica's clients (forwarding here, Raft in
//! [`crate::network`], depmgr) present its `supervisor/<id>` certificate
//! and accept only peers of the expected role; [`App::is_raft_peer`] is
//! who may speak Raft to this replica.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::error::RaftError;
use openraft::{BasicNode, ServerState};
use prometheus_client::metrics::histogram::Histogram;
use tls::{HandshakeStats, Role, Tls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::package_cache::PackageCache;
use crate::leader::Leader;
use crate::raft::{Proposals, Raft, StateHandle, SupervisorId};
use crate::state::{BatchResponse, Transition};
use crate::vouch::Vouches;

/// Counters and histograms exported on `/metrics` (see
/// [`crate::http::metrics`]).
#[derive(Debug)]
pub struct Metrics {
    pub heartbeats: AtomicU64,
    pub heartbeats_rejected: AtomicU64,
    /// Heartbeat streams open now (`GET /v1/agent/stream`).
    pub heartbeat_streams: AtomicU64,
    pub directives: AtomicU64,
    pub transitions: AtomicU64,
    pub batches: AtomicU64,
    pub forwarded: AtomicU64,
    /// Control-loop passes run, and the time they took (µs).
    pub passes: AtomicU64,
    pub pass_micros: AtomicU64,
    pub plan_micros: AtomicU64,
    /// Requests refused by identity (or token), by surface.
    pub refused_raft: AtomicU64,
    pub refused_heartbeat: AtomicU64,
    pub refused_admin: AtomicU64,
    /// Time from a heartbeat's arrival to its reply (seconds).
    pub heartbeat_seconds: Histogram,
    /// Leader's view: from the heartbeat that showed a module failed to
    /// the commit of its restore order (seconds).
    pub restore_order_seconds: Histogram,
    /// From a failover's decision (`failover_started`) to the module
    /// running on the new node (`failover_completed`), by the leader
    /// stamps of the two events (seconds).
    pub failover_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::exponential_buckets;
        Metrics {
            heartbeats: AtomicU64::default(),
            heartbeats_rejected: AtomicU64::default(),
            heartbeat_streams: AtomicU64::default(),
            directives: AtomicU64::default(),
            transitions: AtomicU64::default(),
            batches: AtomicU64::default(),
            forwarded: AtomicU64::default(),
            passes: AtomicU64::default(),
            pass_micros: AtomicU64::default(),
            plan_micros: AtomicU64::default(),
            refused_raft: AtomicU64::default(),
            refused_heartbeat: AtomicU64::default(),
            refused_admin: AtomicU64::default(),
            // 0.1 ms .. 2.4 s
            heartbeat_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 12)),
            // 5 ms .. 41 s
            restore_order_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            // 50 ms .. 410 s
            failover_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
        }
    }
}

/// Shared by every task and handler of the replica.
pub struct App {
    pub id: SupervisorId,
    pub config: Config,
    pub raft: Raft,
    pub state: StateHandle,
    /// Client for forwarding admin requests to the leader (with TLS: it
    /// presents this replica's certificate and accepts only supervisors).
    pub http: reqwest::Client,
    /// This replica's certificate, key and CA; `None` in plaintext.
    pub tls: Option<Arc<Tls>>,
    /// TLS handshakes of the listener, for `/metrics`.
    pub handshakes: Arc<HandshakeStats>,
    /// Timings of Raft RPCs and WAL syncs, for `/metrics`.
    pub raft_io: Arc<crate::network::RaftIo>,
    /// The dependency manager (package checks and retrieval).
    pub depmgr: depmgr::client::Client,
    /// Packages depmgr confirmed to exist (deploys check them here first).
    pub packages: PackageCache,
    /// The proposal queue: concurrent proposals share a log entry.
    pub proposals: Proposals,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
    leader: RwLock<Option<Arc<Leader>>>,
    pub metrics: Metrics,
    /// Supervisors admitted for Raft on a trusted replica's word.
    pub vouches: Vouches,
    /// Why Raft stopped on its own (set once by the fail-stop watcher).
    fatal: std::sync::OnceLock<openraft::error::Fatal<SupervisorId>>,
    /// The last AppendEntries (heartbeat or entries) this replica accepted:
    /// what `/ready` asks of a follower.
    leader_contact: std::sync::Mutex<Option<LeaderContact>>,
}

/// An AppendEntries request this replica accepted from a leader.
#[derive(Debug, Clone, Copy)]
pub struct LeaderContact {
    pub term: u64,
    pub leader: SupervisorId,
    /// The commit index the leader announced in it.
    pub committed: Option<u64>,
    pub at: std::time::Instant,
}

/// What the listener and the Raft network count as they go, shared with
/// `/metrics` ([`App::new`] keeps both).
pub struct IoStats {
    pub handshakes: Arc<HandshakeStats>,
    pub raft_io: Arc<crate::network::RaftIo>,
}

impl App {
    pub fn new(
        config: Config,
        raft: Raft,
        state: StateHandle,
        depmgr: depmgr::client::Client,
        tls: Option<Arc<Tls>>,
        io: IoStats,
        cancel: CancellationToken,
    ) -> Arc<App> {
        let IoStats {
            handshakes,
            raft_io,
        } = io;
        let http = tls::client::http_builder(tls.as_ref(), &[Role::Supervisor])
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("building an HTTP client with static settings");
        let tasks = TaskTracker::new();
        let proposals = Proposals::start(raft.clone(), cancel.clone(), &tasks);
        let packages = PackageCache::new(std::time::Duration::from_millis(
            config.package_cache_ttl_ms,
        ));
        Arc::new(App {
            id: config.id,
            config,
            raft,
            state,
            http,
            tls: tls.clone(),
            handshakes,
            raft_io,
            depmgr,
            packages,
            proposals,
            tasks,
            cancel,
            leader: RwLock::new(None),
            metrics: Metrics::default(),
            vouches: Vouches::new(tls.as_ref()),
            fatal: std::sync::OnceLock::new(),
            leader_contact: std::sync::Mutex::new(None),
        })
    }

    /// Why Raft stopped on its own, if it did.
    pub fn fatal(&self) -> Option<openraft::error::Fatal<SupervisorId>> {
        self.fatal.get().cloned()
    }

    pub(crate) fn set_fatal(&self, cause: openraft::error::Fatal<SupervisorId>) {
        let _ = self.fatal.set(cause);
    }

    /// Records an AppendEntries accepted from `contact.leader`.
    pub fn record_leader_contact(&self, contact: LeaderContact) {
        *self
            .leader_contact
            .lock()
            .expect("leader contact lock poisoned") = Some(contact);
    }

    /// The last AppendEntries accepted from a leader.
    pub fn leader_contact(&self) -> Option<LeaderContact> {
        *self
            .leader_contact
            .lock()
            .expect("leader contact lock poisoned")
    }

    /// The leader session, when this replica leads.
    pub fn leader(&self) -> Option<Arc<Leader>> {
        self.leader.read().expect("leader lock poisoned").clone()
    }

    /// The current leader's id and address, as this replica knows it.
    pub fn leader_addr(&self) -> Option<(SupervisorId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// Proposes transitions, in order and in one log entry (shared with
    /// the transitions of other callers proposing at the same moment, see
    /// [`Proposals`]), and waits until they are applied: the response holds
    /// the outcome of each of these transitions, and only these.
    pub async fn propose(&self, transitions: Vec<Transition>) -> Result<BatchResponse> {
        self.proposals.propose(transitions).await
    }

    /// Follows Raft's view of leadership: starts a leader session when this
    /// replica becomes leader of a term, ends it the moment it is not.
    pub async fn watch_leadership(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        loop {
            let (is_leader, term) = {
                let m = rx.borrow_and_update();
                (
                    m.state == ServerState::Leader && m.current_leader == Some(self.id),
                    m.current_term,
                )
            };
            {
                let mut slot = self.leader.write().expect("leader lock poisoned");
                let same_term = slot.as_ref().is_some_and(|l| l.term == term);
                if (!is_leader || !same_term)
                    && let Some(old) = slot.take()
                {
                    old.cancel.cancel();
                    tracing::info!(term = old.term, "no longer leader: control loop stopped");
                }
                if is_leader && slot.is_none() {
                    *slot = Some(Leader::start(self.clone(), term, &self.cancel));
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
            }
        }
        if let Some(old) = self.leader.write().expect("leader lock poisoned").take() {
            old.cancel.cancel();
        }
    }

    /// Initialises an empty cluster when this replica has the lowest id of
    /// --peers; others wait to be reached. Idempotent.
    pub async fn bootstrap(&self) -> Result<()> {
        let initialized = self.raft.is_initialized().await?;
        let lowest = self.config.peers.0.keys().next().copied();
        if initialized || lowest != Some(self.id) {
            return Ok(());
        }
        let members: BTreeMap<SupervisorId, BasicNode> = self
            .config
            .peers
            .0
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(peers = ?self.config.peers.0, "initialised a new cluster");
                Ok(())
            }
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Initialize(Box::new(e))),
        }
    }

    /// Voter ids of the current membership.
    pub fn voters(&self) -> BTreeSet<SupervisorId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// `http` or `https`: how this replica reaches the others.
    pub fn scheme(&self) -> &'static str {
        tls::client::scheme(self.tls.as_ref())
    }

    /// Voters and learners of the membership this replica knows, with
    /// their addresses.
    pub fn member_addrs(&self) -> Vec<(SupervisorId, String)> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// Whether supervisor `id` may speak Raft to this replica: a voter or
    /// learner of the membership it knows, or, while it knows none yet (a
    /// fresh replica, or a learner the leader has not reached yet), one of
    /// `--peers`; or a member by the word of a replica it trusts (a replica
    /// behind a membership change, see [`crate::vouch`]; an unknown id
    /// starts the questions in the background and is refused meanwhile).
    /// The error says why not.
    pub fn is_raft_peer(self: &Arc<Self>, id: SupervisorId) -> std::result::Result<(), String> {
        let members: BTreeSet<SupervisorId> =
            self.member_addrs().into_iter().map(|(id, _)| id).collect();
        if members.is_empty() {
            return if self.config.peers.0.contains_key(&id) {
                Ok(())
            } else {
                Err(format!(
                    "supervisor {id} is not one of --peers (this replica has no membership yet)"
                ))
            };
        }
        if members.contains(&id) || self.vouches.admitted(self, id) {
            return Ok(());
        }
        self.vouches.ask(self, id);
        let list: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        Err(format!(
            "supervisor {id} is not a member of this cluster (members: {}; asking them whether it joined since)",
            list.join(", ")
        ))
    }

    pub fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
