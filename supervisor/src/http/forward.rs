//! Forwarding: any replica answers any admin request. A follower sends
//! writes and linearizable reads to the leader (one hop only, marked with
//! a header so two replicas that disagree about the leader cannot bounce a
//! request between them); `GET /v1/cluster` and reads with `?stale=true`
//! are answered here. Every forwarded request has a timeout.
//!
//! With TLS the hop is HTTPS, presenting this replica's supervisor
//! certificate (which the leader admits, [`super::auth::admin`]: this
//! replica admitted the client already) to a server that must hold a
//! supervisor certificate; the client's `Authorization` header goes along.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::App;
use crate::error::Error;

/// Header marking a request forwarded by another replica (one hop only).
const FORWARDED: &str = "x-supervisor-forwarded";
/// Longest a forwarded admin request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

fn is_stale_read(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "stale=true" || kv == "stale=1"))
}

/// Sends writes and linearizable reads to the leader when this replica is
/// not it; everything else is served here.
pub async fn forward_to_leader(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // A module's output comes from its agent: any replica relays it.
    let logs = path.starts_with("/v1/modules/") && path.ends_with("/logs");
    let local = path == "/v1/cluster"
        || path == "/v1/cluster/replicas"
        || logs
        || is_stale_read(&req)
        || app.leader().is_some();
    if local {
        return next.run(req).await;
    }
    if req.headers().contains_key(FORWARDED) {
        return ApiError::unavailable(
            "no leader: the replica this was forwarded to is not the leader",
        )
        .into_response();
    }
    let Some((leader_id, addr)) = app.leader_addr() else {
        let known = app.raft.metrics().borrow().current_leader;
        let message = match known {
            // A replica that is catching up (a new member) hears from the
            // leader before it has applied the membership naming its address.
            Some(id) => format!(
                "leader {id} is known but not yet its address (this replica is catching up); retry shortly"
            ),
            None => "no leader elected yet; retry shortly".to_string(),
        };
        return ApiError::unavailable(message).into_response();
    };
    if leader_id == app.id {
        return ApiError::unavailable("leadership is changing; retry shortly").into_response();
    }
    app.count(&app.metrics.forwarded);
    match forward(&app, req, &addr).await {
        Ok(resp) => resp,
        Err(e) => ApiError::unavailable(format!("forwarding to leader {leader_id} at {addr}: {e}"))
            .into_response(),
    }
}

async fn forward(app: &App, req: Request, addr: &str) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, app.config.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is over the limit of {} bytes",
                    app.config.max_body
                ),
            )
            .into_response());
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = app
        .http
        .request(
            parts.method.clone(),
            format!("{}://{addr}{path}", app.scheme()),
        )
        .timeout(FORWARD_TIMEOUT)
        .header(FORWARDED, app.id.to_string())
        .body(bytes);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let resp = out
        .send()
        .await
        .map_err(|e| Error::Forward(e.to_string()))?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Error::Forward(e.to_string()))?;
    let mut answer = Response::new(Body::from(body));
    *answer.status_mut() = status;
    if let Some(ct) = content_type {
        answer.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(answer)
}
