//! The agent's HTTP API (JSON): `GET /v1/status` and `GET /health`, as in
//! CONTRACT.md, and `GET /metrics`. Read-only; orders come only through heartbeat replies.
//!
//! ## Access
//! Served through a [`tls::Bound`] listener, so every request carries its
//! [`Peer`]. `/health` is open to anyone. With TLS every other path (the
//! status, and unknown paths alike) needs a client certificate of the
//! cluster CA, any role; without one the answer is 401 with a JSON error,
//! a warn log line, and `auth_refused_total` counts it. In plaintext
//! (loopback or `--insecure`) nothing is asked.
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

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tls::{HandshakeStats, Peer};

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
