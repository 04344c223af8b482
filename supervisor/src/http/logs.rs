//! A module's output: `GET /v1/modules/{name}/logs?tail=N&follow=true`,
//! proxied to the agent of the node the module is placed on.
//!
//! ## Data flow
//! ```text
//! client ──► any replica: its applied state names the module's node and
//!            that node's agent address (no leader needed, not forwarded)
//!        ──► GET <agent>/v1/modules/{name}/logs (TLS: this replica's
//!            supervisor certificate, the agent's certificate checked)
//!        ◄── the agent's text body, chunk by chunk, as it comes
//! ```
//! The agent keeps the output (rotated by size, `agent::logs`) and reads
//! it; the replica only relays.
//!
//! ## Errors
//! 404 for a module the cluster does not know; 409 when it is placed
//! nowhere (or its node is unknown, or the agent holds no output of it
//! yet); 503 when the agent cannot be reached (a connect timeout of
//! [`CONNECT_TIMEOUT`], an answer head within [`HEAD_TIMEOUT`]); 502 when
//! it answers with another error. 400 for a bad `tail` or `follow`.
//!
//! ## Bounds
//! Without `follow`, the whole answer within [`READ_TIMEOUT`]. A followed
//! stream is long-lived: it has no total timeout, TCP keep-alive finds a
//! dead agent, chunks pass one at a time (hyper stops reading from the
//! agent while the client's socket is full), it ends when the agent's
//! stream ends or this replica shuts down, and at most
//! [`MAX_LOG_STREAMS`] are open at once on one replica (503 beyond).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, ApiResult, Params};
use crate::app::App;

/// Longest wait to connect to an agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the agent's answer head once connected.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a whole answer takes without `follow`.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most followed streams one replica relays at once.
pub const MAX_LOG_STREAMS: usize = 64;
/// Default number of lines (the agent's default too).
pub const DEFAULT_TAIL: usize = 100;
/// Most lines one request may ask for (the agent's bound).
pub const MAX_TAIL: usize = 10_000;
/// Most bytes of an answer without `follow` (the agent sends at most
/// 4 MiB).
const MAX_ANSWER: usize = 8 << 20;

/// Followed streams open now (one replica per process).
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_LOG_STREAMS`] slots, given back when the stream ends.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LOG_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Query of `GET /v1/modules/{name}/logs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines of the output before the newest (default 100, at most 10000).
    #[serde(default)]
    tail: Option<usize>,
    /// `true`: keep sending what the module prints, until the client goes
    /// away.
    #[serde(default)]
    follow: Option<String>,
}

impl LogsQuery {
    fn parse(&self) -> ApiResult<(usize, bool)> {
        let tail = self.tail.unwrap_or(DEFAULT_TAIL);
        if tail > MAX_TAIL {
            return Err(ApiError::bad(format!(
                "tail {tail} is over the limit of {MAX_TAIL} lines"
            )));
        }
        let follow = match self.follow.as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(v) => return Err(ApiError::bad(format!("follow {v:?} is not true or false"))),
        };
        Ok((tail, follow))
    }
}

/// `GET /v1/modules/{name}/logs`: see the module documentation.
#[utoipa::path(
    get,
    path = "/v1/modules/{name}/logs",
    tag = "modules",
    params(("name" = String, Path, description = "the module"), LogsQuery),
    responses(
        (status = 200, description = "the module's output (stdout and stderr), as text: the last `tail` lines, then with `follow=true` what it prints next, as it comes", content_type = "text/plain", body = String),
        (status = 404, description = "unknown module", body = super::admin::ErrorBody),
        (status = 409, description = "the module is placed on no node, or its agent holds no output of it yet", body = super::admin::ErrorBody),
        (status = 400, description = "bad input", body = super::admin::ErrorBody),
        (status = 401, description = "no credentials", body = super::admin::ErrorBody),
        (status = 403, description = "not allowed", body = super::admin::ErrorBody),
        (status = 502, description = "the agent answered with an error", body = super::admin::ErrorBody),
        (status = 503, description = "the module's agent cannot be reached, or too many streams are open", body = super::admin::ErrorBody)
    )
)]
pub async fn logs(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(query): Params<LogsQuery>,
) -> ApiResult<Response> {
    let (tail, follow) = query.parse()?;
    let (node, addr) = app.state.read(|s| {
        let Some(m) = s.modules.get(&name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown module {name:?}"),
            ));
        };
        let Some(p) = &m.placement else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "module {name:?} is {} and placed on no node: it has no output to read",
                    m.state.as_str()
                ),
            ));
        };
        match s.nodes.get(&p.node) {
            Some(n) => Ok((p.node.clone(), n.addr.clone())),
            None => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "module {name:?} is placed on node {:?}, which the cluster no longer knows",
                    p.node
                ),
            )),
        }
    })?;
    let slot = if follow {
        Some(StreamSlot::take().ok_or_else(|| {
            ApiError::unavailable(format!(
                "{MAX_LOG_STREAMS} followed logs are open on this supervisor already; retry later or ask another"
            ))
        })?)
    } else {
        None
    };
    let client = tls::client::http_builder(app.tls.as_ref(), &[tls::Role::Agent])
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(15))
        .build()
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("http client: {e}"),
            )
        })?;
    let url = format!(
        "{}://{addr}/v1/modules/{name}/logs?tail={tail}&follow={follow}",
        app.scheme()
    );
    let unreachable = |why: String| {
        ApiError::unavailable(format!(
            "the agent of node {node} ({addr}), where module {name:?} is placed, cannot be reached: {why}"
        ))
    };
    let resp =
        match tokio::time::timeout(HEAD_TIMEOUT + CONNECT_TIMEOUT, client.get(&url).send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(unreachable(admin_api::client::error_chain(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?}",
                    HEAD_TIMEOUT + CONNECT_TIMEOUT
                )));
            }
        };
    let status = resp.status();
    if !status.is_success() {
        let bytes = tokio::time::timeout(HEAD_TIMEOUT, resp.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = serde_json::from_slice::<proto::ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(if status == StatusCode::NOT_FOUND {
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "module {name:?} is placed on node {node}, whose agent holds no output of it yet ({message})"
                ),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the agent of node {node} ({addr}) answered {status}: {message}"),
            )
        });
    }
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::HeaderName::from_static("x-content-type-options"),
            "nosniff",
        ),
    ];
    if !follow {
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        let read = tokio::time::timeout(READ_TIMEOUT, async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| admin_api::client::error_chain(&e))?;
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(format!("an answer over {MAX_ANSWER} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        })
        .await;
        return match read {
            Ok(Ok(())) => Ok((headers, body).into_response()),
            Ok(Err(e)) => Err(unreachable(e)),
            Err(_) => Err(unreachable(format!(
                "the answer did not come within {READ_TIMEOUT:?}"
            ))),
        };
    }
    // Until the agent's stream ends or this replica shuts down; the slot
    // goes with the stream.
    let stream = resp
        .bytes_stream()
        .take_until(app.cancel.clone().cancelled_owned())
        .map(move |chunk| {
            let _slot = &slot;
            chunk.map_err(std::io::Error::other)
        });
    Ok((headers, Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(tail: Option<usize>, follow: Option<&str>) -> LogsQuery {
        LogsQuery {
            tail,
            follow: follow.map(str::to_string),
        }
    }

    #[test]
    fn query_defaults_and_bounds() {
        assert_eq!(q(None, None).parse().ok(), Some((DEFAULT_TAIL, false)));
        assert_eq!(q(Some(5), Some("true")).parse().ok(), Some((5, true)));
        assert_eq!(q(Some(0), Some("1")).parse().ok(), Some((0, true)));
        assert_eq!(q(None, Some("false")).parse().ok(), Some((100, false)));
        assert!(q(Some(MAX_TAIL + 1), None).parse().is_err());
        assert!(q(None, Some("yes")).parse().is_err());
    }
}
