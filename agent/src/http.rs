//! The agent's HTTP API (JSON): `GET /v1/status` and `GET /health`, as in
//! CONTRACT.md. Read-only; orders come only through heartbeat replies.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::manager::{Agent, StatusView};

/// The router of the status API.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(agent)
}

async fn status(State(agent): State<Agent>) -> Json<StatusView> {
    Json(agent.status())
}

async fn health() -> &'static str {
    "ok\n"
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(proto::ErrorBody {
            error: "no such endpoint".into(),
        }),
    )
}
