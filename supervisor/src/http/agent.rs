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
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use proto::heartbeat::{Heartbeat, HeartbeatReply};
use tls::Peer;

use super::ApiError;
use super::auth;
use super::guard::refuse_oversized;
use super::raft::encode_answer;
use crate::app::App;
use crate::leader::not_leader;

/// The agent routes.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/v1/agent/heartbeat", post(heartbeat))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body))
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
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
    encode_answer(&answer(&app, &hb).await)
}

/// This replica's answer to a heartbeat: the leader session's, or
/// `NotLeader` naming the leader.
pub async fn answer(app: &App, hb: &Heartbeat) -> HeartbeatReply {
    match app.leader() {
        Some(leader) => leader.heartbeat(hb).await,
        None => not_leader(app.leader_addr().map(|(_, a)| a)),
    }
}
