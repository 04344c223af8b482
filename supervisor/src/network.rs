//! Raft RPC between replicas over HTTP on the `--listen` port.
//!
//! `POST /raft/append`, `/raft/vote`, `/raft/snapshot`; bodies are
//! [`proto::codec`] blobs (bincode with a format byte): the request, and in
//! return `Result<response, RaftError>`. Every call has a timeout (openraft's
//! per-RPC hard TTL, capped), so a partitioned peer turns into an
//! `Unreachable` error and never hangs a replication task.
//!
//! With TLS the calls go to `https://<addr>/raft/...`, presenting this
//! replica's `supervisor/<id>` certificate, and only a server holding a
//! supervisor certificate of the cluster CA is accepted. The receiving
//! side checks that the caller is a member ([`crate::http::auth`]).
//!
//! [`RaftIo`] times each call (by RPC) and each WAL sync of the log store,
//! for `/metrics`: the two figures that tell a slow disk from a slow peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::typ::*;
use crate::raft::{SupervisorId, TypeConfig};

/// Longest any Raft RPC may take (snapshots included).
const MAX_RPC: Duration = Duration::from_secs(10);

/// Label set of [`RaftIo::rpc_seconds`]: `rpc` = append, vote or snapshot.
pub type RpcLabels = Vec<(String, String)>;
type HistogramOf = fn() -> Histogram;

/// The Raft RPCs, by the path they are posted to (`/raft/<rpc>`).
const RPCS: [&str; 3] = ["append", "vote", "snapshot"];

/// Timings of this replica's Raft I/O, shared with `/metrics`.
pub struct RaftIo {
    /// Raft RPCs this replica sent, from sending to the decoded answer
    /// (the peer's own work, its WAL sync for an append, included), by
    /// RPC; failed calls are not observed.
    pub rpc_seconds: Family<RpcLabels, Histogram, HistogramOf>,
    /// `rpc_seconds` of each of [`RPCS`], looked up once (a histogram's
    /// clone observes into the same series).
    by_rpc: [Histogram; 3],
    /// Each WAL sync of this replica's log store (one per group of
    /// appends; an entry is acknowledged only after the sync covering it).
    pub wal_sync_seconds: Histogram,
}

/// 50 µs .. 1.6 s, doubling.
fn io_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for RaftIo {
    fn default() -> Self {
        let rpc_seconds: Family<RpcLabels, Histogram, HistogramOf> =
            Family::new_with_constructor(io_buckets);
        let by_rpc =
            RPCS.map(|rpc| (*rpc_seconds.get_or_create(&vec![("rpc".into(), rpc.into())])).clone());
        RaftIo {
            rpc_seconds,
            by_rpc,
            wal_sync_seconds: io_buckets(),
        }
    }
}

impl RaftIo {
    /// The histogram of the RPC posted to `/raft/<path>`.
    fn rpc(&self, path: &str) -> Option<&Histogram> {
        let i = RPCS.iter().position(|rpc| *rpc == path)?;
        Some(&self.by_rpc[i])
    }

    /// Times the WAL syncs of `log` from now on.
    pub fn observe(self: &Arc<Self>, log: &raft_store::LogStore<TypeConfig>) {
        let io = self.clone();
        log.observe_syncs(move |d| io.wal_sync_seconds.observe(d.as_secs_f64()));
    }
}

/// Builds one [`PeerClient`] per peer; all share one HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    scheme: &'static str,
    io: Arc<RaftIo>,
}

impl Network {
    /// Plain HTTP without `tls`; with it, HTTPS to supervisors only. Each
    /// call is timed into `io`.
    pub fn new(tls: Option<&Arc<tls::Tls>>, io: Arc<RaftIo>) -> Self {
        let http = tls::client::http_builder(tls, &[tls::Role::Supervisor])
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("building an HTTP client with static settings");
        Network {
            http,
            scheme: tls::client::scheme(tls),
            io,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: SupervisorId, node: &BasicNode) -> PeerClient {
        PeerClient {
            http: self.http.clone(),
            scheme: self.scheme,
            target,
            addr: node.addr.clone(),
            io: self.io.clone(),
        }
    }
}

/// Raft RPC client for one peer.
pub struct PeerClient {
    http: reqwest::Client,
    scheme: &'static str,
    target: SupervisorId,
    addr: String,
    io: Arc<RaftIo>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, openraft::error::RPCError<SupervisorId, BasicNode, RaftError<E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let started = Instant::now();
        let body = proto::encode(req).map_err(|e| NetworkError::new(&e))?;
        let timeout = option.hard_ttl().min(MAX_RPC);
        let url = format!("{}://{}/raft/{path}", self.scheme, self.addr);
        let resp = self
            .http
            .post(&url)
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| Unreachable::new(&Failure(format!("{url}: {e}"))))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Unreachable::new(&Failure(format!("{url}: {e}"))))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(NetworkError::new(&Failure(format!("{url}: {status}: {text}"))).into());
        }
        let result: Result<Resp, RaftError<E>> =
            proto::decode(&bytes).map_err(|e| NetworkError::new(&e))?;
        if let Some(timed) = self.io.rpc(path) {
            timed.observe(started.elapsed().as_secs_f64());
        }
        result.map_err(|e| {
            RemoteError::new_with_node(self.target, BasicNode::new(&self.addr), e).into()
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.call("vote", &rpc, &option).await
    }
}
