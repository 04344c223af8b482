//! The heartbeat loop: the agent's only conversation with the supervisors.
//!
//! Every `--heartbeat-ms`, and at once when the [`Agent`] signals a change,
//! the loop sends `proto::encode(&Heartbeat)` to a supervisor and reads a
//! `HeartbeatReply` back. One heartbeat is in flight at a time, so `seq`
//! order is send order.
//!
//! ## Transport
//! With `--heartbeat-stream true` (the default) the agent opens one stream
//! to its current target, `GET /v1/agent/stream` upgraded to
//! [`tls::frames::PROTOCOL`], and sends each heartbeat as a frame on it,
//! reading the reply frame back ([`tls::frames`]): a heartbeat costs a
//! frame, not an HTTP request. The stream is kept while the target stays
//! the same and dropped when the agent moves on. A kept stream that fails
//! (the supervisor closed it meanwhile) is reopened once within the same
//! exchange; an error frame (the supervisor refused the heartbeat) ends it
//! and counts as a failed exchange. A supervisor that does not know the
//! stream (404 or 405: an older version) gets `POST
//! /v1/agent/heartbeat` requests, and the stream is tried again after
//! [`UNARY_RETRY`]. Otherwise (and with `--heartbeat-stream false`) each
//! heartbeat is a `POST http://<supervisor>/v1/agent/heartbeat`. Both
//! carry the same bytes and get the same answer, within the same
//! `--request-timeout-ms`.
//!
//! ## Trust
//! With TLS the URL is `https://<supervisor>/...` (for `--supervisors`
//! entries and leader hints alike, both bare `host:port`), the agent
//! presents its own certificate, and the server must hold a *supervisor*
//! certificate of the cluster CA ([`tls::client::http_builder`]). Any
//! other certificate (an agent's, depmgr's, another CA's, an expired one)
//! fails the handshake: the request is never sent and no reply is read, so
//! such a server cannot renew the lease, send a directive or a leader
//! hint. It counts as an unreachable supervisor, and the log line names
//! the certificate it presented.
//!
//! ## Whom to talk to ([`Targets`])
//! The current target is the leader hint from the last `NotLeader` reply,
//! else the next of `--supervisors`. A hint is followed at once, unless it
//! names a supervisor that could not be reached within the last period (a
//! dead leader stays the followers' hint until they elect another: the
//! agent moves on instead of bouncing between the hint and the follower).
//! An unreachable supervisor, a timeout, an HTTP error, an undecodable
//! reply or a `NotLeader` without a usable hint moves on to the next one
//! (at once while untried ones remain in this round). A leader that names
//! itself but is not ready yet (catching up with its term) is asked again.
//!
//! ## Finding a new leader
//! Once a round found no leader, the agent keeps asking every third of a
//! period ([`SEARCH_DIVISOR`]) for [`FAST_SEARCH`] after it lost the
//! leader (a leader election takes about a second with the supervisor's
//! defaults), then every period: the new leader is found within a third
//! of a period of its election, at the cost of three times the heartbeat
//! rate to the followers (which answer `NotLeader` without any work)
//! during an election only.
//!
//! ## What a reply does
//! - `Accepted{table_version}`: the leader holds that table version (the
//!   table is left out from now on until it changes), the reports carried
//!   are dropped, the lease is renewed from the moment the heartbeat was
//!   *sent*, and the directives go to the applier (below).
//! - `need_table`: the next heartbeat carries the table and goes at once.
//! - `NotLeader`: follow the hint, or move on; the next target gets the
//!   table. `Stale`: logged; the next heartbeat has a higher `seq`.
//!
//! ## The applier
//! Directives are executed by a separate task, the applier, never by the
//! loop itself: deciding a reply and saving the state it needs (an fsync,
//! possibly slow on a sick disk) must not delay the next heartbeat, which
//! renews the lease. The loop hands each accepted reply's directives to the
//! applier over a queue of [`REPLY_QUEUE`] replies, and the applier runs
//! [`Agent::apply`] on them one reply at a time, in the order they came.
//! When the queue is full (the applier is that far behind) the reply's
//! directives are dropped with a log line: the leader repeats every
//! directive until heartbeats show it took effect, so a later reply
//! carries them again.
//!
//! On shutdown the applier stops (after the reply it is applying, if any),
//! then the loop stops every module and sends one last heartbeat that
//! shows them stopped.
//!
//! ## Whose heartbeat
//! The loop speaks for a [`Node`]: the real agent ([`Agent`]), or a
//! simulated node of the fleet simulator (`fleetsim`), which so exercises
//! this very protocol code (targets, leader search, table
//! acknowledgement, lease renewal, the applier's queue) at fleet scale.

use std::sync::Arc;
use std::time::Duration;

use proto::heartbeat::{Directive, HeartbeatReply, ReplyOutcome};
use tokio::io::BufStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::manager::Agent;

/// What the heartbeat loop needs of the node it speaks for.
pub trait Node: Clone + Send + Sync + 'static {
    /// Woken whenever the heartbeat should go out at once.
    fn changed(&self) -> &tokio::sync::Notify;
    /// The heartbeat with sequence number `seq` (the table left out when
    /// the target acknowledged version `acked`), and how many reports it
    /// carries.
    fn heartbeat(&self, seq: u64, acked: Option<u64>) -> (proto::heartbeat::Heartbeat, usize);
    /// A heartbeat carrying `reports` reports, sent at `sent_at` to
    /// `leader`, was accepted with a lease of `lease_ms`.
    fn accepted(
        &self,
        reports: usize,
        sent_at: Instant,
        lease_ms: u64,
        leader: &str,
    ) -> impl Future<Output = ()> + Send;
    /// The supervisor cluster served (0: none yet).
    fn cluster(&self) -> u64;
    /// No leader is known (unreachable, or no hint).
    fn lost_leader(&self);
    /// Executes the directives of one accepted reply (the applier).
    fn apply(&self, cluster: u64, directives: Vec<Directive>) -> impl Future<Output = ()> + Send;
    /// Stops every module (before the last heartbeat).
    fn stop_all(&self) -> impl Future<Output = ()> + Send;
}

impl Node for Agent {
    fn changed(&self) -> &tokio::sync::Notify {
        Agent::changed(self)
    }
    fn heartbeat(&self, seq: u64, acked: Option<u64>) -> (proto::heartbeat::Heartbeat, usize) {
        Agent::heartbeat(self, seq, acked)
    }
    async fn accepted(&self, reports: usize, sent_at: Instant, lease_ms: u64, leader: &str) {
        Agent::accepted(self, reports, sent_at, lease_ms, leader).await
    }
    fn cluster(&self) -> u64 {
        Agent::cluster(self)
    }
    fn lost_leader(&self) {
        Agent::lost_leader(self)
    }
    async fn apply(&self, cluster: u64, directives: Vec<Directive>) {
        Agent::apply(self, cluster, directives).await
    }
    async fn stop_all(&self) {
        Agent::stop_all(self).await
    }
}

/// While searching for a leader, the agent asks every
/// `period / SEARCH_DIVISOR`.
pub const SEARCH_DIVISOR: u32 = 3;
/// How long after losing the leader the agent searches at that pace
/// (then once a period).
pub const FAST_SEARCH: Duration = Duration::from_secs(3);

/// Largest heartbeat reply the agent reads (64 MiB): far above a reply
/// with an install for each of [`proto::heartbeat::MAX_MODULES`] modules,
/// so that a broken or hostile server cannot make the agent buffer without
/// end. A longer reply is a transport error (the next supervisor is tried).
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// Reads a reply body of at most `cap` bytes, chunk by chunk; beyond it,
/// an error naming the limit (nothing more is read).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::HeartbeatTransport(format!("reading reply: {e}")))?
    {
        if body.len() + chunk.len() > cap {
            return Err(Error::HeartbeatTransport(format!(
                "the reply is larger than the {cap} bytes an agent reads"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where heartbeats go.
#[derive(Debug, Clone)]
pub struct Targets {
    list: Vec<String>,
    index: usize,
    hint: Option<String>,
    /// The last supervisor that could not be reached, and when.
    unreachable: Option<(String, Instant)>,
}

impl Targets {
    pub fn new(list: Vec<String>) -> Targets {
        Targets {
            list,
            index: 0,
            hint: None,
            unreachable: None,
        }
    }

    /// Records that `target` could not be reached at `at`.
    pub fn unreachable(&mut self, target: &str, at: Instant) {
        self.unreachable = Some((target.to_string(), at));
    }

    /// Whether `target` could not be reached less than `within` before
    /// `now`.
    fn recently_unreachable(&self, target: &str, now: Instant, within: Duration) -> bool {
        self.unreachable
            .as_ref()
            .is_some_and(|(t, at)| t == target && now.saturating_duration_since(*at) < within)
    }

    /// Follows a leader hint unless it is no progress: it names the
    /// current target, or a supervisor that could not be reached less
    /// than `within` before `now`. True when followed.
    pub fn follow_unless_unreachable(
        &mut self,
        leader: &str,
        now: Instant,
        within: Duration,
    ) -> bool {
        if self.recently_unreachable(leader, now, within) {
            return false;
        }
        self.follow(leader)
    }

    /// The supervisor to send to now.
    pub fn current(&self) -> &str {
        match &self.hint {
            Some(h) => h,
            None => self.list.get(self.index).map_or("", String::as_str),
        }
    }

    /// Follows a leader hint; false when it names the current target (no
    /// progress to be had by following it).
    pub fn follow(&mut self, leader: &str) -> bool {
        if leader == self.current() {
            return false;
        }
        self.hint = Some(leader.to_string());
        true
    }

    /// Moves on: drops the hint, else goes to the next supervisor.
    pub fn advance(&mut self) {
        if self.hint.take().is_none() && !self.list.is_empty() {
            self.index = (self.index + 1) % self.list.len();
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// How long an agent sends requests to a supervisor that did not know the
/// heartbeat stream before it tries the stream again.
pub const UNARY_RETRY: Duration = Duration::from_secs(60);

/// Replies waiting for the applier; one more is dropped (the leader
/// repeats its directives).
pub const REPLY_QUEUE: usize = 4;

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct HeartbeatSettings {
    pub supervisors: Vec<String>,
    pub period: Duration,
    pub request_timeout: Duration,
    /// With TLS: `https://` and supervisor certificates only.
    pub tls: Option<Arc<tls::Tls>>,
    /// Heartbeats as frames on a stream (else one request each).
    pub stream: bool,
}

/// How one exchange ended, for the scheduling of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Normal: one period after this heartbeat was sent.
    Period,
    /// At once (table wanted, leader hint to follow, next supervisor).
    Now,
    /// No leader found: soon while searching (see [`FAST_SEARCH`]).
    Search,
}

/// When the next heartbeat goes, after one that was sent at `sent_at` and
/// ended with `next`: `quick_ok` when immediate retries remain in this
/// round, `searching` when the leader was lost less than [`FAST_SEARCH`]
/// ago.
fn next_due(
    next: Next,
    sent_at: Instant,
    now: Instant,
    period: Duration,
    quick_ok: bool,
    searching: bool,
) -> Instant {
    match next {
        Next::Now if quick_ok => now,
        Next::Now | Next::Search if searching => sent_at + period / SEARCH_DIVISOR,
        _ => sent_at + period,
    }
}

/// Runs until `shutdown`, then stops the modules and sends a last
/// heartbeat.
pub async fn run<N: Node>(agent: N, settings: HeartbeatSettings, shutdown: CancellationToken) {
    let client = match tls::client::http_builder(settings.tls.as_ref(), &[tls::Role::Supervisor])
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout)
        .pool_max_idle_per_host(2)
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the heartbeat http client: {e}");
            shutdown.cancel();
            return;
        }
    };
    let (replies, queued) = mpsc::channel(REPLY_QUEUE);
    let applier = tokio::spawn(apply_replies(agent.clone(), queued, shutdown.clone()));
    let mut hb = Heartbeater {
        agent: agent.clone(),
        replies: Some(replies),
        dropped: 0,
        client,
        scheme: tls::client::scheme(settings.tls.as_ref()),
        targets: Targets::new(settings.supervisors.clone()),
        seq: 0,
        acked_table: None,
        failures_in_row: 0,
        quick_in_row: 0,
        period: settings.period,
        lost_at: None,
        streaming: settings.stream,
        request_timeout: settings.request_timeout,
        stream: None,
        unary_until: None,
    };
    let mut due = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = agent.changed().notified() => {}
            _ = tokio::time::sleep_until(due) => {}
        }
        let sent_at = Instant::now();
        let next = hb.exchange(true).await;
        let now = Instant::now();
        due = next_due(
            next,
            sent_at,
            now,
            settings.period,
            hb.quick_in_row <= hb.targets.len() + 1,
            hb.lost_at
                .is_some_and(|at| now.saturating_duration_since(at) < FAST_SEARCH),
        );
    }
    // The applier ends after the reply it is applying: nothing starts
    // after the modules are stopped.
    hb.replies = None;
    if let Err(e) = applier.await {
        tracing::error!("the directive applier failed: {e}");
    }
    agent.stop_all().await;
    // The last word: every module stopped. One try to the current target.
    let _ = hb.exchange(false).await;
    if hb.failures_in_row == 0 {
        tracing::info!(supervisor = %hb.targets.current(), "last heartbeat delivered");
    } else {
        tracing::warn!("the last heartbeat could not be delivered");
    }
}

/// The applier: executes the directives of each reply, in order, until
/// `shutdown` or the loop is gone.
async fn apply_replies<N: Node>(
    agent: N,
    mut queued: mpsc::Receiver<(u64, Vec<Directive>)>,
    shutdown: CancellationToken,
) {
    loop {
        let (cluster, directives) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            d = queued.recv() => match d {
                Some(d) => d,
                None => return,
            },
        };
        agent.apply(cluster, directives).await;
    }
}

struct Heartbeater<N> {
    agent: N,
    /// To the applier (`None` once the loop ended).
    replies: Option<mpsc::Sender<(u64, Vec<Directive>)>>,
    /// Replies dropped in a row because the applier's queue was full.
    dropped: u64,
    client: reqwest::Client,
    /// `https` with TLS, else `http`.
    scheme: &'static str,
    targets: Targets,
    seq: u64,
    /// Table version the current target acknowledged.
    acked_table: Option<u64>,
    failures_in_row: u32,
    /// Exchanges in a row that asked for an immediate retry.
    quick_in_row: usize,
    /// The heartbeat period.
    period: Duration,
    /// When the last accepted heartbeat was followed by one that was not
    /// (the leader was lost); `None` while a leader accepts.
    lost_at: Option<Instant>,
    /// `--heartbeat-stream`.
    streaming: bool,
    request_timeout: Duration,
    /// The open stream, and to whom. (Not `Sync`: the loop's methods that
    /// await take `&mut self`.)
    stream: Option<(String, BufStream<reqwest::Upgraded>)>,
    /// A supervisor that did not know the stream, and until when it gets
    /// requests.
    unary_until: Option<(String, Instant)>,
}

/// How a heartbeat on a stream failed.
enum StreamFailure {
    /// The supervisor has no stream endpoint (an older version).
    Unsupported,
    /// The connection failed (a kept stream may just have been closed).
    Broken(Error),
    /// Refused, timed out or answered with bytes that are no reply.
    Failed(Error),
}

impl<N: Node> Heartbeater<N> {
    /// Sends one heartbeat and handles the reply; `apply` = execute its
    /// directives (not on the last heartbeat).
    async fn exchange(&mut self, apply: bool) -> Next {
        self.seq += 1;
        let (heartbeat, reports) = self.agent.heartbeat(self.seq, self.acked_table);
        let body = match proto::encode(&heartbeat) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode a heartbeat: {e}");
                return Next::Period;
            }
        };
        let target = self.targets.current().to_string();
        let sent_at = Instant::now();
        let reply = match self.send(&target, body).await {
            Ok(r) => {
                crate::metrics::METRICS.heartbeat(true);
                r
            }
            Err(why) => {
                crate::metrics::METRICS.heartbeat(false);
                return self.failed(&target, &why);
            }
        };
        if self.failures_in_row > 0 {
            tracing::info!(supervisor = %target, "supervisor reachable again");
        }
        self.failures_in_row = 0;
        match reply.outcome {
            ReplyOutcome::Accepted {
                table_version,
                cluster,
            } => {
                self.lost_at = None;
                self.acked_table = (!reply.need_table).then_some(table_version);
                self.agent
                    .accepted(reports, sent_at, reply.lease_ms, &target)
                    .await;
                // A reply of another cluster goes to the applier even
                // without directives: the agent adopts that cluster.
                let other = cluster != 0 && cluster != self.agent.cluster();
                if apply && (other || !reply.directives.is_empty()) {
                    self.hand_over(cluster, reply.directives);
                }
                if reply.need_table {
                    self.quick_in_row += 1;
                    Next::Now
                } else {
                    self.quick_in_row = 0;
                    Next::Period
                }
            }
            ReplyOutcome::NotLeader { leader } => {
                self.acked_table = None;
                self.agent.lost_leader();
                self.lost_at.get_or_insert(sent_at);
                self.quick_in_row += 1;
                match leader {
                    // The leader itself, not ready yet (catching up with
                    // its term): ask it again soon.
                    Some(l) if l == target => {
                        tracing::debug!(supervisor = %target, "the leader is not ready yet");
                        Next::Search
                    }
                    Some(l)
                        if self.targets.follow_unless_unreachable(
                            &l,
                            Instant::now(),
                            self.period,
                        ) =>
                    {
                        tracing::info!(from = %target, to = %l, "following the leader hint");
                        Next::Now
                    }
                    _ => {
                        tracing::debug!(supervisor = %target, "not the leader and no usable hint; moving on");
                        self.targets.advance();
                        Next::Now
                    }
                }
            }
            ReplyOutcome::Stale => {
                tracing::warn!(supervisor = %target, seq = self.seq, "heartbeat refused as stale");
                self.quick_in_row = 0;
                Next::Period
            }
        }
    }

    /// Queues a reply's directives (and its cluster id) for the applier;
    /// never waits.
    fn hand_over(&mut self, cluster: u64, directives: Vec<Directive>) {
        let Some(replies) = &self.replies else {
            return;
        };
        match replies.try_send((cluster, directives)) {
            Ok(()) => {
                if self.dropped > 0 {
                    tracing::info!(dropped = self.dropped, "the directive applier caught up");
                }
                self.dropped = 0;
            }
            Err(mpsc::error::TrySendError::Full((_, d))) => {
                self.dropped += 1;
                if self.dropped == 1 || self.dropped.is_power_of_two() {
                    tracing::warn!(
                        directives = d.len(),
                        dropped = self.dropped,
                        queued = REPLY_QUEUE,
                        "the directive applier is behind: reply dropped (the leader repeats its directives)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// One heartbeat to `target`, on the stream or as a request.
    async fn send(&mut self, target: &str, body: Vec<u8>) -> Result<HeartbeatReply, Error> {
        if self.stream.as_ref().is_some_and(|(t, _)| t != target) {
            // Moved on: the old stream is closed.
            self.stream = None;
        }
        let unary = self
            .unary_until
            .as_ref()
            .is_some_and(|(t, until)| t == target && Instant::now() < *until);
        if self.streaming && !unary {
            match self.send_framed(target, &body).await {
                Ok(reply) => return Ok(reply),
                Err(StreamFailure::Broken(e) | StreamFailure::Failed(e)) => return Err(e),
                Err(StreamFailure::Unsupported) => {
                    tracing::info!(supervisor = %target, "the supervisor has no heartbeat stream: heartbeats go as requests (the stream is tried again in {UNARY_RETRY:?})");
                    self.unary_until = Some((target.to_string(), Instant::now() + UNARY_RETRY));
                }
            }
        }
        self.send_unary(target, body).await
    }

    /// One heartbeat on the stream to `target`: the kept one, reopened once
    /// if it turns out broken, or a new one.
    async fn send_framed(
        &mut self,
        target: &str,
        body: &[u8],
    ) -> Result<HeartbeatReply, StreamFailure> {
        if let Some((t, mut io)) = self.stream.take() {
            match self.on_stream(&mut io, body).await {
                Ok(reply) => {
                    self.stream = Some((t, io));
                    return Ok(reply);
                }
                Err(StreamFailure::Broken(e)) => {
                    tracing::debug!(supervisor = %target, "the heartbeat stream broke ({e}); reopening it");
                }
                Err(other) => return Err(other),
            }
        }
        let mut io = self.open_stream(target).await?;
        let reply = self.on_stream(&mut io, body).await?;
        self.stream = Some((target.to_string(), io));
        Ok(reply)
    }

    /// Opens the heartbeat stream to `target`.
    async fn open_stream(
        &mut self,
        target: &str,
    ) -> Result<BufStream<reqwest::Upgraded>, StreamFailure> {
        let url = format!("{}://{target}{}", self.scheme, tls::frames::PATH);
        let resp = self
            .client
            .get(url)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, tls::frames::PROTOCOL)
            .send()
            .await
            .map_err(|e| StreamFailure::Failed(Error::HeartbeatTransport(error_chain(&e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let io = resp.upgrade().await.map_err(|e| {
                StreamFailure::Failed(Error::HeartbeatTransport(format!(
                    "opening the heartbeat stream: {}",
                    error_chain(&e)
                )))
            })?;
            crate::metrics::METRICS.stream_opened();
            return Ok(BufStream::new(io));
        }
        if matches!(
            status,
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Err(StreamFailure::Unsupported);
        }
        let bytes = read_capped(resp, MAX_REPLY_BYTES)
            .await
            .map_err(StreamFailure::Failed)?;
        Err(StreamFailure::Failed(refusal(status, &bytes)))
    }

    /// Sends one heartbeat frame and reads the reply frame, within the
    /// request timeout.
    async fn on_stream(
        &mut self,
        io: &mut BufStream<reqwest::Upgraded>,
        body: &[u8],
    ) -> Result<HeartbeatReply, StreamFailure> {
        use tls::frames::{self, FrameError, Kind};
        let exchange = async {
            frames::write(io, Kind::Heartbeat, body)
                .await
                .map_err(|e| StreamFailure::Broken(Error::HeartbeatTransport(e.to_string())))?;
            match frames::read(io, MAX_REPLY_BYTES).await {
                Ok(Some((Kind::Reply, bytes))) => proto::decode::<HeartbeatReply>(&bytes)
                    .map_err(|e| StreamFailure::Failed(Error::HeartbeatReply(e.to_string()))),
                Ok(Some((Kind::Error, why))) => {
                    let why: String = String::from_utf8_lossy(&why).chars().take(500).collect();
                    Err(StreamFailure::Failed(Error::HeartbeatTransport(format!(
                        "the supervisor refused the heartbeat and closed the stream: {why}"
                    ))))
                }
                Ok(Some((kind, _))) => Err(StreamFailure::Failed(Error::HeartbeatReply(format!(
                    "a {kind:?} frame where a reply was expected"
                )))),
                Ok(None) => Err(StreamFailure::Broken(Error::HeartbeatTransport(
                    "the supervisor closed the heartbeat stream".into(),
                ))),
                Err(FrameError::Io(e)) => Err(StreamFailure::Broken(Error::HeartbeatTransport(
                    e.to_string(),
                ))),
                Err(e) => Err(StreamFailure::Failed(Error::HeartbeatReply(e.to_string()))),
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(StreamFailure::Failed(Error::HeartbeatTransport(format!(
                    "no reply on the heartbeat stream within {:?}",
                    self.request_timeout
                ))))
            })
    }

    async fn send_unary(&mut self, target: &str, body: Vec<u8>) -> Result<HeartbeatReply, Error> {
        let url = format!("{}://{target}/v1/agent/heartbeat", self.scheme);
        let resp = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::HeartbeatTransport(error_chain(&e)))?;
        let status = resp.status();
        let bytes = read_capped(resp, MAX_REPLY_BYTES).await?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        proto::decode::<HeartbeatReply>(&bytes).map_err(|e| Error::HeartbeatReply(e.to_string()))
    }

    fn failed(&mut self, target: &str, why: &Error) -> Next {
        self.failures_in_row += 1;
        if self.failures_in_row == 1 || self.failures_in_row.is_power_of_two() {
            tracing::warn!(supervisor = %target, failures = self.failures_in_row, "heartbeat failed: {why}");
        }
        self.agent.lost_leader();
        let now = Instant::now();
        self.lost_at.get_or_insert(now);
        self.acked_table = None;
        self.targets.unreachable(target, now);
        self.targets.advance();
        self.quick_in_row += 1;
        Next::Now
    }
}

/// A supervisor's refusal: its status and the message of its error body.
fn refusal(status: reqwest::StatusCode, bytes: &[u8]) -> Error {
    let message = serde_json::from_slice::<proto::ErrorBody>(bytes)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(200).collect());
    Error::HeartbeatRefused {
        status: status.as_u16(),
        message,
    }
}

/// An error with its sources: reqwest's own message hides the cause
/// (connection refused, timeout, ...).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply over the cap is refused with the limit named, without
    /// reading it all; one at the cap is read whole.
    #[tokio::test]
    async fn replies_are_read_up_to_a_cap() {
        let app =
            axum::Router::new().route("/big", axum::routing::get(|| async { vec![7u8; 3 << 20] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let get = || async {
            reqwest::get(format!("http://{addr}/big"))
                .await
                .expect("get")
        };
        let err = read_capped(get().await, 1 << 20)
            .await
            .expect_err("over the cap");
        assert!(
            err.to_string().contains("larger than the 1048576 bytes"),
            "{err}"
        );
        let body = read_capped(get().await, 3 << 20).await.expect("at the cap");
        assert_eq!(body.len(), 3 << 20);
    }

    #[test]
    fn targets_rotate_and_follow_hints() {
        let mut t = Targets::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        assert_eq!(t.current(), "a:1");
        t.advance();
        assert_eq!(t.current(), "b:1");
        assert!(t.follow("z:9"));
        assert_eq!(t.current(), "z:9");
        assert!(
            !t.follow("z:9"),
            "a hint naming the current target is no progress"
        );
        // Losing the hinted leader goes back to the list where it was.
        t.advance();
        assert_eq!(t.current(), "b:1");
        t.advance();
        t.advance();
        assert_eq!(t.current(), "a:1");
    }

    /// A dead leader stays the followers' hint until they elect another:
    /// the agent does not follow it back while it was unreachable within
    /// the period, and moves on through the list instead (where the new
    /// leader is); later the hint is followed again.
    #[test]
    fn a_hint_naming_a_supervisor_just_found_unreachable_is_not_followed() {
        let period = Duration::from_millis(300);
        let t0 = Instant::now();
        let mut t = Targets::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        // a (the old leader) is dead.
        t.unreachable("a:1", t0);
        t.advance();
        assert_eq!(t.current(), "b:1");
        // b still names a: not followed, the agent moves on to c.
        assert!(!t.follow_unless_unreachable("a:1", t0 + Duration::from_millis(5), period));
        t.advance();
        assert_eq!(t.current(), "c:1");
        // A hint naming another supervisor is followed.
        assert!(t.follow_unless_unreachable("b:1", t0 + Duration::from_millis(6), period));
        assert_eq!(t.current(), "b:1");
        // A period later, a may be back: its hint is followed again.
        assert!(t.follow_unless_unreachable("a:1", t0 + period, period));
        assert_eq!(t.current(), "a:1");
    }

    #[test]
    fn a_lost_leader_is_searched_for_every_third_of_a_period_then_every_period() {
        let period = Duration::from_millis(300);
        let sent = Instant::now();
        let now = sent + Duration::from_millis(2);
        // Retries at once while the round lasts, whatever the search.
        assert_eq!(next_due(Next::Now, sent, now, period, true, true), now);
        assert_eq!(next_due(Next::Now, sent, now, period, true, false), now);
        // Round over: every third of a period while searching...
        let soon = sent + Duration::from_millis(100);
        assert_eq!(next_due(Next::Now, sent, now, period, false, true), soon);
        assert_eq!(next_due(Next::Search, sent, now, period, false, true), soon);
        assert_eq!(next_due(Next::Search, sent, now, period, true, true), soon);
        // ... then every period, as when a leader accepts.
        let later = sent + period;
        assert_eq!(next_due(Next::Now, sent, now, period, false, false), later);
        assert_eq!(
            next_due(Next::Search, sent, now, period, true, false),
            later
        );
        assert_eq!(next_due(Next::Period, sent, now, period, true, true), later);
    }
}
