//! Everything the replica serves on its `--listen` port, one file per
//! surface:
//!
//! - [`raft`]: Raft RPC between replicas (binary);
//! - [`agent`]: the agents' heartbeat endpoint (binary), handed to the
//!   leader session;
//! - [`admin`]: the admin API (JSON, see docs/reference.md), behind
//!   [`forward`] (followers send writes and linearizable reads to the
//!   leader) and [`guard`] (body limit, admin token);
//! - [`metrics`]: `/metrics`; and `/health`.
//!
//! Errors are `{"error": "..."}` with 400/401/404/409/413/503, made in one
//! place: [`ApiError`], which every error of the layers below converts into.

pub mod admin;
pub mod agent;
pub mod forward;
pub mod guard;
pub mod metrics;
pub mod raft;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::app::App;
use crate::error::Error;
use crate::state::Rejection;

/// An error answer: `{"error": message}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(proto::ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The one place where the supervisor's errors become HTTP answers.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Rejected(Rejection::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::Rejected(Rejection::Conflict(_)) => StatusCode::CONFLICT,
            Error::Rejected(Rejection::Invalid(_)) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotLeader { .. } => {
                return ApiError::unavailable("leadership changed; retry");
            }
            Error::Unavailable(_) | Error::Forward(_) | Error::Fatal(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Depmgr(_) | Error::BadClosure(_) => StatusCode::BAD_GATEWAY,
            Error::Store(_) | Error::Listen { .. } | Error::Raft(_) | Error::Initialize(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        Error::Rejected(r).into()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The whole HTTP surface of a replica.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(raft::routes())
        .merge(admin::routes(&app))
        .merge(agent::routes(&app))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .with_state(app)
}
