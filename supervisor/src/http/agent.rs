//! The agents' endpoints: `POST /v1/agent/heartbeat` (binary,
//! [`proto::heartbeat`]), and the heartbeat stream `GET /v1/agent/stream`.
//! This is only the edge: decode, check the node name, count, and hand the
//! heartbeat to the leader session ([`crate::leader::Leader::heartbeat`]);
//! a replica that is not the leader answers `NotLeader` with the leader's
//! address as it knows it.
//!
//! With TLS the caller must hold the certificate `agent/<node>` of the
//! node the heartbeat is about ([`super::auth::heartbeat_node`]); any other
//! is refused with 403 and the heartbeat is not observed.
//!
//! ## The stream
//! `GET /v1/agent/stream` with `Connection: upgrade` and `Upgrade:
//! supervisor-heartbeat/1` switches the agent's connection to frames
//! ([`tls::frames`]): the agent sends a heartbeat frame (the unary body),
//! the replica answers a reply frame (the unary reply), one at a time, in
//! order. A heartbeat so costs a frame, not an HTTP request. The checks
//! and the answer are the unary endpoint's, frame by frame; a frame the
//! unary endpoint would refuse (too large, undecodable, another node's)
//! gets an error frame naming the problem, and the stream ends. A stream
//! ends too after [`STREAM_IDLE`] without a frame, and when the replica
//! shuts down (after the reply under way). It counts against
//! `--max-connections` like the connection it was.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use proto::heartbeat::{Heartbeat, HeartbeatReply, MAX_HEARTBEAT_BYTES};
use tls::frames::{self, FrameError, Kind};
use tls::{Peer, Slot};
use tokio::io::{AsyncRead, AsyncWrite, BufStream};

use super::ApiError;
use super::auth;
use super::guard::{refuse_over, too_large};
use super::raft::encode_answer;
use crate::app::App;
use crate::leader::not_leader;

/// What the 413 calls the heartbeat body limit.
const LIMIT_NAME: &str = "the heartbeat limit";

/// The agent routes. A heartbeat body is limited to
/// [`MAX_HEARTBEAT_BYTES`] (derived from the largest heartbeat an agent
/// sends), not the admin API's `--max-body`.
pub fn routes(_app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/v1/agent/heartbeat", post(heartbeat))
        .layer(middleware::from_fn(|req: Request, next: Next| {
            refuse_over(MAX_HEARTBEAT_BYTES as u64, LIMIT_NAME, req, next)
        }))
        .layer(DefaultBodyLimit::max(MAX_HEARTBEAT_BYTES))
        .route(frames::PATH, get(stream))
}

/// Longest a heartbeat stream stays open without a frame (an agent sends
/// one every `--heartbeat-ms`, 300 ms by default).
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// Longest the write of one frame may take.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decodes one heartbeat body and checks it: a valid node name, sent by
/// that node's agent (with TLS). Malformed ones are counted.
fn accept(app: &App, peer: &Peer, body: &[u8]) -> Result<Heartbeat, ApiError> {
    let rejected = |e: &dyn std::fmt::Display| {
        app.count(&app.metrics.heartbeats_rejected);
        ApiError::bad(format!("heartbeat: {e}"))
    };
    let hb: Heartbeat = proto::decode(body).map_err(|e| rejected(&e))?;
    proto::names::check("node", &hb.node).map_err(|e| rejected(&e))?;
    auth::heartbeat_node(app, peer, &hb.node)?;
    Ok(hb)
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let body = match body {
        Ok(body) => body,
        // A body without a declared length, over the limit.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            app.count(&app.metrics.heartbeats_rejected);
            return too_large(None, MAX_HEARTBEAT_BYTES as u64, LIMIT_NAME).into_response();
        }
        Err(e) => return ApiError::bad(format!("heartbeat: {e}")).into_response(),
    };
    if let Err(refused) = auth::heartbeat_agent(&app, &peer) {
        return refused.into_response();
    }
    let hb = match accept(&app, &peer, &body) {
        Ok(hb) => hb,
        Err(e) => return e.into_response(),
    };
    app.count(&app.metrics.heartbeats);
    let reply = encode_answer(&answer(&app, &hb).await);
    app.metrics
        .heartbeat_seconds
        .observe(started.elapsed().as_secs_f64());
    reply
}

/// This replica's answer to a heartbeat: the leader session's, or
/// `NotLeader` naming the leader.
pub async fn answer(app: &App, hb: &Heartbeat) -> HeartbeatReply {
    match app.leader() {
        Some(leader) => leader.heartbeat(hb).await,
        None => not_leader(app.leader_addr().map(|(_, a)| a)),
    }
}

/// `GET /v1/agent/stream`: checks the caller (an agent, with TLS) and the
/// upgrade it asks for, answers `101 Switching Protocols`, and serves the
/// frames on the upgraded connection in a task of its own.
async fn stream(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
) -> Response {
    if let Err(refused) = auth::heartbeat_agent(&app, &peer) {
        return refused.into_response();
    }
    let asks = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(frames::PROTOCOL));
    let upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let slot = req.extensions_mut().remove::<Slot>();
    let (true, Some(upgrade), Some(slot)) = (asks, upgrade, slot) else {
        return ApiError::bad(format!(
            "{} needs the headers `Connection: upgrade` and `Upgrade: {}` on an HTTP/1.1 connection",
            frames::PATH,
            frames::PROTOCOL
        ))
        .into_response();
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve_stream(app, peer, slot, TokioIo::new(io)).await,
            Err(e) => tracing::debug!("heartbeat stream: the upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, frames::PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })
}

/// Counts an open stream in `supervisor_heartbeat_streams` while it lives.
struct OpenStream(Arc<App>);

impl OpenStream {
    fn new(app: &Arc<App>) -> OpenStream {
        app.metrics
            .heartbeat_streams
            .fetch_add(1, Ordering::Relaxed);
        OpenStream(app.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .metrics
            .heartbeat_streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves heartbeat frames on an upgraded connection until the agent
/// closes it, a frame is refused, it idles for [`STREAM_IDLE`], or the
/// server shuts down.
async fn serve_stream<Io>(app: Arc<App>, peer: Peer, slot: Slot, io: Io)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let _open = OpenStream::new(&app);
    let mut io = BufStream::new(io);
    let mut closing = slot.closing();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(STREAM_IDLE, frames::read(&mut io, MAX_HEARTBEAT_BYTES)) => f,
            _ = closing.changed() => return,
        };
        let payload = match frame {
            Ok(Ok(Some((Kind::Heartbeat, payload)))) => payload,
            Ok(Ok(None)) => return,
            Err(_) => {
                tracing::debug!(peer = %peer.addr, "heartbeat stream idle for {STREAM_IDLE:?}: closed");
                return;
            }
            Ok(Ok(Some((kind, _)))) => {
                app.count(&app.metrics.heartbeats_rejected);
                let why =
                    format!("heartbeat stream: a {kind:?} frame where a heartbeat was expected");
                return end(&mut io, &why).await;
            }
            Ok(Err(e @ (FrameError::TooLarge { .. } | FrameError::UnknownKind(_)))) => {
                app.count(&app.metrics.heartbeats_rejected);
                return end(&mut io, &format!("heartbeat stream: {e} ({LIMIT_NAME})")).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.addr, "heartbeat stream ended: {e}");
                return;
            }
        };
        let started = Instant::now();
        let hb = match accept(&app, &peer, &payload) {
            Ok(hb) => hb,
            Err(e) => return end(&mut io, &e.message).await,
        };
        app.count(&app.metrics.heartbeats);
        let reply = match proto::encode(&answer(&app, &hb).await) {
            Ok(bytes) => bytes,
            Err(e) => return end(&mut io, &format!("cannot encode the reply: {e}")).await,
        };
        let written = tokio::time::timeout(
            STREAM_WRITE_TIMEOUT,
            frames::write(&mut io, Kind::Reply, &reply),
        )
        .await;
        app.metrics
            .heartbeat_seconds
            .observe(started.elapsed().as_secs_f64());
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!(peer = %peer.addr, "heartbeat stream: the reply could not be written");
            return;
        }
    }
}

/// Ends a stream with an error frame naming why (best effort, bounded).
async fn end<Io: AsyncWrite + Unpin>(io: &mut Io, why: &str) {
    tracing::debug!("heartbeat stream refused: {why}");
    let _ = tokio::time::timeout(
        STREAM_WRITE_TIMEOUT,
        frames::write(io, Kind::Error, why.as_bytes()),
    )
    .await;
}
