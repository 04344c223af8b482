//! `GET /health` and `GET /ready`, open to anyone (no credentials).
//!
//! - `/health`: 200 `ok` while the process serves and its Raft runs; 503
//!   with a JSON error once Raft has stopped (a storage error, a panic in
//!   the Raft core). A replica whose Raft stopped exits (status 3, see
//!   [`crate::server::EXIT_RAFT_STOPPED`]); the 503 covers the moments
//!   before the HTTP server has stopped.
//! - `/ready`: whether this replica can serve linearizable reads now. 200
//!   `{"ready": true, ...}` when
//!   - it is the leader and a quorum confirmed its leadership for a read
//!     (`Raft::ensure_linearizable`: a heartbeat round acknowledged by a
//!     quorum, then the state machine applied up to the read index) within
//!     the election timeout (`--election-timeout-ms`); or
//!   - it is a follower, knows the leader of its current term, accepted an
//!     AppendEntries (heartbeat or entries) from that leader in that term
//!     within the last election timeout, and has applied up to the commit
//!     index that leader announced in it (waiting at most an election
//!     timeout for the apply).
//!
//!   Otherwise 503 `{"ready": false, "reason": "...", ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openraft::ServerState;
use serde_json::json;

use super::ApiError;
use crate::app::App;

/// Why Raft is not running, if it is not.
fn stopped(app: &App) -> Option<String> {
    if let Some(cause) = app.fatal() {
        return Some(format!("raft stopped: {cause}"));
    }
    match &app.raft.metrics().borrow().running_state {
        Ok(()) => None,
        Err(e) => Some(format!("raft stopped: {e}")),
    }
}

/// `GET /health`.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    match stopped(&app) {
        None => "ok\n".into_response(),
        Some(why) => ApiError::unavailable(why).into_response(),
    }
}

/// `GET /ready`.
pub async fn ready(State(app): State<Arc<App>>) -> Response {
    let m = app.raft.metrics().borrow().clone();
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "id": app.id,
                "reason": reason,
                "leader": m.current_leader,
                "term": m.current_term,
                "state": format!("{:?}", m.state),
            })),
        )
            .into_response()
    };
    if let Some(why) = stopped(&app) {
        return not_ready(why);
    }
    let Some(leader) = m.current_leader else {
        return not_ready(format!("no leader known in term {}", m.current_term));
    };
    let timeout = Duration::from_millis(app.config.election_timeout_ms);
    let committed = if leader == app.id {
        if m.state != ServerState::Leader {
            return not_ready(format!("not leader yet in term {}", m.current_term));
        }
        match tokio::time::timeout(timeout, app.raft.ensure_linearizable()).await {
            Ok(Ok(read)) => read.map(|l| l.index),
            Ok(Err(e)) => return not_ready(format!("leadership not confirmed: {e}")),
            Err(_) => {
                return not_ready(format!(
                    "no quorum confirmed this leader within {} ms",
                    timeout.as_millis()
                ));
            }
        }
    } else {
        let Some(contact) = app.leader_contact() else {
            return not_ready(format!("no AppendEntries from leader {leader} yet"));
        };
        if contact.term != m.current_term || contact.leader != leader {
            return not_ready(format!(
                "no AppendEntries from leader {leader} in term {}",
                m.current_term
            ));
        }
        let since = contact.at.elapsed();
        if since > timeout {
            return not_ready(format!(
                "last AppendEntries from leader {leader} {} ms ago (election timeout {} ms)",
                since.as_millis(),
                timeout.as_millis()
            ));
        }
        if contact.committed > m.last_applied.map(|l| l.index)
            && app
                .raft
                .wait(Some(timeout))
                .applied_index_at_least(contact.committed, "ready")
                .await
                .is_err()
        {
            return not_ready(format!(
                "applied index behind the commit index {:?} within {} ms",
                contact.committed,
                timeout.as_millis()
            ));
        }
        contact.committed
    };
    let applied = app.raft.metrics().borrow().last_applied.map(|l| l.index);
    Json(json!({
        "ready": true,
        "id": app.id,
        "leader": leader,
        "term": m.current_term,
        "state": format!("{:?}", m.state),
        "committed": committed,
        "applied": applied,
    }))
    .into_response()
}
