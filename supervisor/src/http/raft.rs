//! Raft RPC between replicas: `POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`. Bodies are [`proto::codec`] blobs (bincode with a
//! format byte): the openraft request in, `Result<response, RaftError>` out.
//! The sending side is [`crate::network`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{ApiError, ApiResult};
use crate::app::App;

/// Largest Raft RPC body (snapshots).
const MAX_RAFT_BODY: usize = 512 << 20;

/// The Raft RPC routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY))
}

/// A binary answer.
pub fn binary(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

/// Decodes a binary body; a malformed one is a 400.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    proto::decode(body).map_err(|e| ApiError::bad(e.to_string()))
}

/// Encodes a binary answer.
pub fn encode_answer<T: serde::Serialize>(value: &T) -> Response {
    match proto::encode(value) {
        Ok(bytes) => binary(bytes),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.append_entries(req).await))
}

async fn vote(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.vote(req).await))
}

async fn snapshot(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.install_snapshot(req).await))
}
