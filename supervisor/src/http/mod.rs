//! Everything the replica serves on its `--listen` port, one file per
//! surface:
//!
//! - [`raft`]: Raft RPC between replicas (binary);
//! - [`agent`]: the agents' heartbeat endpoint (binary), handed to the
//!   leader session;
//! - [`admin`]: the admin API (JSON, see docs/reference.md), behind
//!   [`forward`] (followers send writes and linearizable reads to the
//!   leader) and [`guard`] (body limit);
//! - [`auth`]: who may call each of them: with TLS by the identity of the
//!   client certificate (members for Raft, `agent/<node>` for heartbeats,
//!   operators, members or the token for the admin API), the admin tokens
//!   in any case;
//! - [`events`]: the event record as a list (for [`admin`]) and as a
//!   Server-Sent Events stream, which every replica serves from its own
//!   applied state (behind [`auth`], not forwarded);
//! - [`logs`]: a module's output, proxied from the agent of its node by
//!   any replica (in [`admin`]'s routes, not forwarded);
//! - [`metrics`]: `/metrics`; [`ready`]: `/health` and `/ready`. All are
//!   open to anyone.
//!
//! Handlers read the peer as `ConnectInfo<tls::Peer>` (served by
//! `tls::Bound`, TLS or plain).
//!
//! Errors are `{"error": "..."}` with 400/401/403/404/409/413/503, made in
//! one place: [`ApiError`], which every error of the layers below converts
//! into.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod events;
pub mod forward;
pub mod guard;
pub mod logs;
pub mod metrics;
pub mod package_cache;
pub mod raft;
pub mod ready;
pub mod ui;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
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

/// The whole HTTP surface of a replica. An unknown path or method is a
/// JSON error too (404, 405), like every other error.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(raft::routes(&app))
        .merge(admin::routes(&app))
        .merge(events::routes(&app))
        .merge(agent::routes(&app))
        .merge(ui::routes())
        .route("/health", get(ready::health))
        .route("/ready", get(ready::ready))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    admin::openapi_json(),
                )
            }),
        )
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Query parameters, parsed into `T`; a malformed query is a JSON 400
/// naming the problem (axum's own rejection is plain text).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}
