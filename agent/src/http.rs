//! The agent's HTTP API (JSON): `GET /v1/status` and `GET /health`, as in
//! CONTRACT.md, `GET /metrics`, and a module's output
//! (`GET /v1/modules/{name}/logs`, text). Read-only; orders come only
//! through heartbeat replies.
//!
//! ## Access
//! Served through a [`tls::Bound`] listener, so every request carries its
//! [`Peer`]. `/health` is open to anyone. With TLS every other path (the
//! status, and unknown paths alike) needs a client certificate of the
//! cluster CA, any role; without one the answer is 401 with a JSON error,
//! a warn log line, and `auth_refused_total` counts it. In plaintext
//! (loopback or `--insecure`) nothing is asked.
//!
//! ## Module output
//! `GET /v1/modules/{name}/logs?tail=N&follow=true`: the last `N` lines
//! (default 100, at most 10000) of the module's output across its rotated
//! files ([`crate::logs`]), as `text/plain`; with `follow=true` the body
//! goes on with what the module prints (chunked; rotation followed) until
//! the client goes away or the agent stops. 404 for a module this agent
//! neither holds nor has output of. With TLS only a *supervisor*
//! certificate may read it (403 otherwise): operators read logs through
//! the supervisors, which proxy it.
//!
//! ## Metrics
//! `GET /metrics`: Prometheus text ([`crate::metrics`]), behind the same
//! rule as the status.
//!
//! ## TLS counters
//! `/v1/status` carries them under `tls` (and `/metrics` too):
//! `{"enabled", "identity", "handshakes_total" (completed),
//! "handshakes_failed_total" (plaintext on the TLS port, a certificate of
//! another CA, an expired one, ...), "auth_refused_total"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tls::{HandshakeStats, Peer, Role};

use crate::Trust;
use crate::manager::{Agent, StatusView};

/// Who may read the status API, and the counters of refusals.
#[derive(Debug, Clone)]
pub struct Access {
    /// TLS on: a certificate is needed past `/health`.
    tls: bool,
    identity: Option<String>,
    handshakes: Arc<HandshakeStats>,
    refused: Arc<AtomicU64>,
}

impl Access {
    pub fn new(trust: &Trust) -> Access {
        Access {
            tls: trust.tls.is_some(),
            identity: trust.tls.as_ref().map(|t| t.identity().to_string()),
            handshakes: trust.handshakes.clone(),
            refused: Arc::default(),
        }
    }

    fn view(&self) -> TlsView {
        TlsView {
            enabled: self.tls,
            identity: self.identity.clone(),
            handshakes_total: self.handshakes.accepted(),
            handshakes_failed_total: self.handshakes.failed(),
            auth_refused_total: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// `tls` in `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TlsView {
    pub enabled: bool,
    /// This agent's certificate identity, `agent/<node>`.
    pub identity: Option<String>,
    /// TLS handshakes completed on the status listener.
    pub handshakes_total: u64,
    /// TLS handshakes that failed on it.
    pub handshakes_failed_total: u64,
    /// Requests refused for want of a client certificate.
    pub auth_refused_total: u64,
}

/// `GET /v1/status`: the agent's view plus `tls`.
#[derive(Debug, Clone, Serialize)]
struct StatusAnswer {
    #[serde(flatten)]
    status: StatusView,
    tls: TlsView,
}

#[derive(Debug, Clone)]
struct Ctx {
    agent: Agent,
    access: Access,
}

/// The router of the status API. Serve it with connect info of
/// [`Peer`] ([`tls::Bound::serve`] does).
pub fn router(agent: Agent, access: Access) -> Router {
    let ctx = Ctx { agent, access };
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/modules/{name}/logs", get(logs))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), authorize))
        .with_state(ctx)
}

/// With TLS, every path but `/health` needs a client certificate of the
/// CA (the TLS layer has verified it; any role will do).
async fn authorize(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if !ctx.access.tls || req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
    if peer.is_some_and(|p| p.identity.is_some()) {
        return next.run(req).await;
    }
    let who = peer.map_or_else(|| "anonymous".to_string(), Peer::describe);
    let n = ctx.access.refused.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(peer = %who, path = %req.uri().path(), refused_total = n, "request refused: no client certificate");
    (
        StatusCode::UNAUTHORIZED,
        Json(proto::ErrorBody {
            error: format!(
                "{} needs a client certificate of the cluster CA (any role); {who} presented none",
                req.uri().path()
            ),
        }),
    )
        .into_response()
}

async fn status(State(ctx): State<Ctx>) -> Json<StatusAnswer> {
    Json(StatusAnswer {
        status: ctx.agent.status(),
        tls: ctx.access.view(),
    })
}

/// `GET /metrics`: see [`crate::metrics`].
async fn metrics(State(ctx): State<Ctx>) -> Response {
    let tls = ctx.access.view();
    let counts = crate::metrics::TlsCounts {
        handshakes: tls.handshakes_total,
        handshakes_failed: tls.handshakes_failed_total,
        auth_refused: tls.auth_refused_total,
    };
    let registry = crate::metrics::registry(&ctx.agent.status(), counts);
    match crate::metrics::encode(&registry) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}"),
        )
            .into_response(),
    }
}

/// How often a follow looks for new output.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Most bytes one chunk of a followed body carries.
const FOLLOW_CHUNK: usize = 64 << 10;

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(proto::ErrorBody { error: message })).into_response()
}

/// The query of `GET /v1/modules/{name}/logs`: `(tail, follow)`.
fn logs_query(query: Option<&str>) -> Result<(usize, bool), String> {
    let mut tail = crate::logs::DEFAULT_TAIL;
    let mut follow = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "tail" => {
                tail = v
                    .parse()
                    .ok()
                    .filter(|&n| n <= crate::logs::MAX_TAIL)
                    .ok_or_else(|| {
                        format!(
                            "tail {v:?} is not a number of lines from 0 to {}",
                            crate::logs::MAX_TAIL
                        )
                    })?;
            }
            "follow" => {
                follow = match v {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("follow {v:?} is not true or false")),
                }
            }
            _ => {}
        }
    }
    Ok((tail, follow))
}

/// `GET /v1/modules/{name}/logs`: see the module documentation.
async fn logs(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    extensions: axum::http::Extensions,
) -> Response {
    if ctx.access.tls {
        let peer = extensions.get::<ConnectInfo<Peer>>().map(|c| &c.0);
        let identity = peer.and_then(|p| p.identity.as_ref());
        if !identity.is_some_and(|id| id.is(Role::Supervisor)) {
            let who = peer.map_or_else(|| "anonymous".to_string(), Peer::describe);
            let n = ctx.access.refused.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(peer = %who, module = %name, refused_total = n, "module output refused: not a supervisor");
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "a module's output is read through the supervisors (a supervisor certificate is needed); {who} is not one"
                ),
            );
        }
    }
    if let Err(e) = proto::names::check("module", &name) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let (tail, follow) = match logs_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (path, rotation) = ctx.agent.output_log(&name);
    if !ctx.agent.holds(&name) && !path.exists() {
        return error(
            StatusCode::NOT_FOUND,
            format!("node {} holds no module {name:?}", ctx.agent.node()),
        );
    }
    let read = tokio::task::spawn_blocking(move || crate::logs::tail(&path, rotation.files, tail))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
    let tail = match read {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the output of {name}: {e}"),
            );
        }
    };
    let headers = [
        (
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        ),
        (axum::http::header::CACHE_CONTROL, "no-cache"),
        (
            axum::http::header::HeaderName::from_static("x-content-type-options"),
            "nosniff",
        ),
    ];
    if !follow {
        return (headers, tail.text).into_response();
    }
    let state = Follow {
        first: Some(tail.text),
        follower: Some(tail.follower),
        shutdown: ctx.agent.shutdown_token(),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if let Some(text) = st.first.take()
            && !text.is_empty()
        {
            return Some((Ok(Bytes::from(text)), st));
        }
        loop {
            let mut follower = st.follower.take()?;
            let (follower, read) = tokio::task::spawn_blocking(move || {
                let read = follower.read_new(FOLLOW_CHUNK);
                (follower, read)
            })
            .await
            .ok()?;
            match read {
                Ok(bytes) if !bytes.is_empty() => {
                    st.follower = Some(follower);
                    return Some((Ok(Bytes::from(bytes)), st));
                }
                Ok(_) => st.follower = Some(follower),
                // Ends the body (the follower is gone).
                Err(e) => return Some((Err(e), st)),
            }
            tokio::select! {
                () = st.shutdown.cancelled() => return None,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    });
    (headers, Body::from_stream(stream)).into_response()
}

/// A followed output: the tail not yet sent, then the follower.
struct Follow {
    first: Option<Vec<u8>>,
    follower: Option<crate::logs::Follower>,
    shutdown: tokio_util::sync::CancellationToken,
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
