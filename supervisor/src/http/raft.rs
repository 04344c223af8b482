//! Raft RPC between replicas: `POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`, and `GET /raft/membership` (the members this replica
//! knows, JSON, for [`crate::vouch`]). Bodies are [`proto::codec`] blobs (bincode with a
//! format byte): the openraft request in, `Result<response, RaftError>` out.
//! The sending side is [`crate::network`].
//!
//! With TLS only a member's supervisor certificate gets as far as the body
//! ([`super::auth::raft_peer`]), and the leader or candidate the request
//! names must be that member ([`super::auth::raft_claim`]); a refused
//! request is a 403 and never reaches openraft.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tls::Peer;

use super::{ApiError, ApiResult, auth};
use crate::app::App;
use crate::raft::typ::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

/// Largest Raft RPC body (snapshots).
const MAX_RAFT_BODY: usize = 512 << 20;

/// Largest snapshot a replica accepts (bytes): a chunk whose `offset` plus
/// its length ends beyond this is refused with a 400 before openraft sees
/// it (openraft writes each chunk at its offset into a buffer in memory,
/// so a forged offset of 2^40 would make it reserve a terabyte). The same
/// bound as one Raft body: a state machine snapshot is far smaller.
pub const MAX_SNAPSHOT: u64 = 512 << 20;

/// The Raft RPC routes.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/membership", get(membership))
        .layer(middleware::from_fn_with_state(app.clone(), auth::raft_peer))
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

/// The members this replica knows (asked by a replica that is behind a
/// membership change, [`crate::vouch`]).
async fn membership(State(app): State<Arc<App>>) -> axum::Json<crate::vouch::MembershipAnswer> {
    axum::Json(crate::vouch::MembershipAnswer {
        id: app.id,
        members: app.member_addrs().into_iter().map(|(id, _)| id).collect(),
    })
}

async fn append(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AppendEntriesRequest = decode_body(&body)?;
    auth::raft_claim(&app, &peer, req.vote.leader_id().voted_for())?;
    let (term, leader, committed) = (
        req.vote.leader_id().get_term(),
        req.vote.leader_id().voted_for(),
        req.leader_commit.map(|c| c.index),
    );
    let answer = app.raft.append_entries(req).await;
    // Accepted (even with a conflict to resolve): the leader of `term`
    // reached this replica now. `/ready` asks for that.
    if let (Ok(resp), Some(leader)) = (&answer, leader)
        && !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_))
    {
        app.record_leader_contact(crate::app::LeaderContact {
            term,
            leader,
            committed,
            at: std::time::Instant::now(),
        });
    }
    Ok(encode_answer(&answer))
}

async fn vote(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: VoteRequest = decode_body(&body)?;
    auth::raft_claim(&app, &peer, req.vote.leader_id().voted_for())?;
    Ok(encode_answer(&app.raft.vote(req).await))
}

async fn snapshot(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: InstallSnapshotRequest = decode_body(&body)?;
    auth::raft_claim(&app, &peer, req.vote.leader_id().voted_for())?;
    check_chunk(req.offset, req.data.len())?;
    Ok(encode_answer(&app.raft.install_snapshot(req).await))
}

/// Refuses a snapshot chunk that would end beyond [`MAX_SNAPSHOT`] (or
/// whose end overflows).
fn check_chunk(offset: u64, len: usize) -> ApiResult<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= MAX_SNAPSHOT => Ok(()),
        _ => Err(ApiError::bad(format!(
            "snapshot chunk at offset {offset} of {len} bytes ends beyond the snapshot limit of {MAX_SNAPSHOT} bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_beyond_the_limit_are_refused() {
        assert!(check_chunk(0, 0).is_ok());
        assert!(check_chunk(MAX_SNAPSHOT - 10, 10).is_ok());
        for (offset, len) in [(1 << 40, 0), (MAX_SNAPSHOT - 10, 11), (u64::MAX, 1)] {
            let e = check_chunk(offset, len).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("snapshot limit"), "{}", e.message);
            assert!(e.message.contains(&offset.to_string()), "{}", e.message);
        }
    }
}
