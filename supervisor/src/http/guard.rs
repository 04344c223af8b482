//! The guard in front of the admin and agent routes: a body over
//! `--max-body` is refused with a 413 and a message. Who may call them is
//! decided in [`super::auth`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::App;

/// Refuses a body whose declared length is over the limit with a 413 and
/// a message, after reading (and dropping) what the client sends, up to a
/// bound: a client still writing would otherwise see a reset connection
/// instead of the answer.
pub async fn refuse_oversized(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.config.max_body as u64;
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
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes is over the limit of {limit} bytes"),
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}
