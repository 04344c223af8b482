//! The guard in front of the admin and agent routes: a body over the
//! route's limit (`--max-body` for the admin API,
//! [`proto::heartbeat::MAX_HEARTBEAT_BYTES`] for heartbeats) is refused
//! with a 413 and a message naming the limit. Who may call them is decided
//! in [`super::auth`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::App;

/// Refuses a body whose declared length is over `--max-body` ([`refuse_over`]).
pub async fn refuse_oversized(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit = app.config.max_body as u64;
    refuse_over(limit, "the --max-body limit", req, next).await
}

/// Refuses a body whose declared length is over `limit` (called `what` in
/// the message) with a 413 and a message, after reading (and dropping)
/// what the client sends, up to a bound: a client still writing would
/// otherwise see a reset connection instead of the answer. A body without
/// a declared length is bounded by the route's `DefaultBodyLimit`.
pub async fn refuse_over(limit: u64, what: &str, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => {
            const DRAIN_BOUND: u64 = 64 << 20;
            if len <= DRAIN_BOUND {
                let body = req.into_body();
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    axum::body::to_bytes(body, DRAIN_BOUND as usize),
                )
                .await;
            }
            too_large(Some(len), limit, what).into_response()
        }
        _ => next.run(req).await,
    }
}

/// The 413 for a body over `limit` (of `len` bytes when declared).
pub fn too_large(len: Option<u64>, limit: u64, what: &str) -> ApiError {
    let body = match len {
        Some(len) => format!("request body of {len} bytes"),
        None => "request body".to_string(),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{body} is over {what} of {limit} bytes"),
    )
}
