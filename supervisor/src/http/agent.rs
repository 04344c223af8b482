//! The agents' endpoint: `POST /v1/agent/heartbeat` (binary,
//! [`proto::heartbeat`]). This is only the edge: decode, check the node
//! name, count, and hand the heartbeat to the leader session
//! ([`crate::leader::Leader::heartbeat`]); a replica that is not the leader
//! answers `NotLeader` with the leader's address as it knows it.
//!
//! With TLS the caller must hold the certificate `agent/<node>` of the
//! node the heartbeat is about ([`super::auth::heartbeat_node`]); any other
//! is refused with 403 and the heartbeat is not observed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use proto::heartbeat::{Heartbeat, HeartbeatReply, MAX_HEARTBEAT_BYTES};
use tls::Peer;

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
    let hb: Heartbeat = match proto::decode(&body) {
        Ok(hb) => hb,
        Err(e) => {
            app.count(&app.metrics.heartbeats_rejected);
            return ApiError::bad(format!("heartbeat: {e}")).into_response();
        }
    };
    if let Err(e) = proto::names::check("node", &hb.node) {
        app.count(&app.metrics.heartbeats_rejected);
        return ApiError::bad(format!("heartbeat: {e}")).into_response();
    }
    if let Err(refused) = auth::heartbeat_node(&app, &peer, &hb.node) {
        return refused.into_response();
    }
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
