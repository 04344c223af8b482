//! The HTTP service (axum 0.8) over the [`Store`].
//!
//! | method and path | handler |
//! | --- | --- |
//! | `PUT /v1/packages/{name}/{version}` | `upload::put_package`: stream, hash, check, commit |
//! | `GET /v1/packages` | every package and its versions |
//! | `GET /v1/packages/{name}` | one package's versions (an addition to the contract) |
//! | `GET /v1/packages/{name}/{version}` | metadata and manifest |
//! | `GET /v1/packages/{name}/{version}/archive` | the archive, streamed |
//! | `GET /v1/packages/{name}/{version}/closure` | the dependency closure |
//! | `GET /v1/archives/{digest}` | an archive by digest, streamed |
//! | `GET /health`, `GET /metrics` | liveness, Prometheus text |
//!
//! # Access
//!
//! [`run`] serves on a [`tls::Bound`] listener, so every request carries
//! its [`Peer`]. With TLS (client certificates optional at the handshake,
//! checked here per request, see `authorize`):
//!
//! - `GET /health` is open to anyone;
//! - every other `GET`/`HEAD` (lists, metadata, closures, downloads,
//!   `/metrics`) needs a certificate of the cluster CA, any role: 401
//!   without one;
//! - every other method (uploads; a future delete) needs an *operator*
//!   certificate: 401 without a certificate, 403 with another role, the
//!   message naming the peer's identity and what is needed.
//!
//! Each refusal is one warn log line and counts in
//! `depmgr_auth_refused_total`; failed handshakes (plaintext on the TLS
//! port, another CA, an expired certificate) count in
//! `depmgr_tls_handshakes_failed_total`, completed ones in
//! `depmgr_tls_handshakes_total`. Without TLS (loopback, or `--insecure`)
//! nothing is asked.
//!
//! # Uploads
//!
//! The body is streamed to a temporary file while its sha256 and size are
//! computed; the size limit is enforced per chunk (and up front from
//! `Content-Length`), and a body that stalls longer than the idle timeout is
//! abandoned. If the version is already stored the answer comes from the
//! digest alone (200 or 409). Otherwise the file is inspected
//! ([`crate::archive::inspect`]) on a blocking thread and committed
//! ([`Store::commit`]). Every failure removes the temporary file: nothing is
//! stored for a refused upload.
//!
//! # Downloads
//!
//! Archives are streamed from their file in 512 KiB chunks, read two
//! chunks ahead of the socket so disk reads overlap sends (`download::read_ahead`), with
//! `Content-Length`, `ETag: "<digest>"` (quoted, as HTTP wants; strip the
//! quotes to compare) and `X-Digest-Sha256: <digest>`; `If-None-Match` with
//! the digest answers 304. Memory does not depend on the archive's size.
//!
//! # Errors and shutdown
//!
//! [`Error`] becomes an HTTP answer in one place ([`IntoResponse`] below):
//! `{"error": "..."}` with 400/404/409/503/500. [`run`] serves until the
//! cancellation token fires (the binary fires it on SIGTERM or SIGINT), lets
//! requests in flight finish within the grace period, then waits for the
//! blocking store work tracked by the [`TaskTracker`] before the store is
//! closed.

mod catalog;
mod download;
mod upload;

use catalog::{find, get_closure, list_packages, show_package, show_version};
use download::{get_archive, get_archive_by_digest};
use upload::put_package;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use proto::ErrorBody;
use tls::{HandshakeStats, Peer, Role, Tls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::Limits;
use crate::config::Config;
use crate::store::Store;
use crate::{Error, Result};

/// Size of the chunks archives are streamed in, and of the upload buffer.
pub(super) const STREAM_CHUNK: usize = 512 << 10;
/// Chunks of a download read ahead of the socket.
pub(super) const READ_AHEAD: usize = 2;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Storage(_) | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Http { .. }
            | Error::Transport(_)
            | Error::DigestMismatch { .. }
            | Error::TooLarge { .. } => StatusCode::BAD_GATEWAY,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, axum::Json(body)).into_response()
    }
}

/// Counters for `GET /metrics`.
#[derive(Debug, Default)]
struct Metrics {
    uploads_created: AtomicU64,
    uploads_unchanged: AtomicU64,
    uploads_conflict: AtomicU64,
    uploads_rejected: AtomicU64,
    uploads_failed: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    closures: AtomicU64,
    closure_errors: AtomicU64,
    auth_refused: AtomicU64,
}

/// depmgr's side of TLS: its loaded certificate (none without the TLS
/// flags) and the handshake counters of its listener.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub tls: Option<Arc<Tls>>,
    pub handshakes: Arc<HandshakeStats>,
}

/// Loads the TLS flags of `config`, if given; the certificate must be of
/// role depmgr. The error is the one line the binary prints before
/// exiting 2 (it names the file: unreadable, not of the CA, expired, ...).
pub fn load_tls(config: &Config) -> std::result::Result<Option<Arc<Tls>>, String> {
    let Some(files) = config.tls_files()? else {
        return Ok(None);
    };
    let tls = Tls::load_as(files, Role::Depmgr, None, "depmgr")?;
    Ok(Some(tls))
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    store: Arc<Store>,
    limits: Limits,
    upload_idle_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Metrics,
    trust: Trust,
}

type Shared = Arc<AppState>;

impl AppState {
    pub fn new(
        store: Arc<Store>,
        config: &Config,
        trust: Trust,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> AppState {
        AppState {
            store,
            limits: config.limits(),
            upload_idle_timeout: config.upload_idle_timeout(),
            shutdown,
            tracker,
            metrics: Metrics::default(),
            trust,
        }
    }

    /// Runs blocking store work on the blocking pool, tracked so shutdown
    /// waits for it.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        self.tracker
            .spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Error::Storage(format!("store task failed: {e}")))?
    }
}

/// The router with every endpoint.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/packages", get(list_packages))
        .route("/v1/packages/{name}", get(show_package))
        .route(
            "/v1/packages/{name}/{version}",
            get(show_version).put(put_package),
        )
        .route("/v1/packages/{name}/{version}/archive", get(get_archive))
        .route("/v1/packages/{name}/{version}/closure", get(get_closure))
        .route("/v1/archives/{digest}", get(get_archive_by_digest))
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        // Uploads stream to disk under our own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The access rules of the module doc, before any handler runs.
async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.trust.tls.is_none() || req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let identity = peer.as_ref().and_then(|p| p.identity.as_ref());
    let refusal = match identity {
        None => Some((
            StatusCode::UNAUTHORIZED,
            format!(
                "{} {} needs a client certificate of the cluster CA ({}); none was presented",
                req.method(),
                req.uri().path(),
                if write { "role operator" } else { "any role" }
            ),
        )),
        Some(id) if write && id.role != Role::Operator => Some((
            StatusCode::FORBIDDEN,
            format!(
                "{id} may not {} {}: uploads need an operator certificate",
                req.method(),
                req.uri().path()
            ),
        )),
        Some(_) => None,
    };
    let Some((status, message)) = refusal else {
        return next.run(req).await;
    };
    let n = state.metrics.auth_refused.fetch_add(1, Ordering::Relaxed) + 1;
    let who = peer.map_or_else(|| "anonymous".to_string(), |p| p.describe());
    tracing::warn!(peer = %who, %status, refused_total = n, "request refused: {message}");
    if write {
        // Let the client read the answer rather than a reset (see linger).
        upload::linger(&state, req.into_body().into_data_stream());
    }
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

/// Serves on `listener` (bound with `trust`'s TLS, or plaintext) until
/// `shutdown` fires, then drains (see the module doc). The store is closed
/// when this returns.
pub async fn run(
    config: &Config,
    listener: tls::Bound,
    trust: Trust,
    store: Store,
    shutdown: CancellationToken,
) -> Result<()> {
    let tracker = TaskTracker::new();
    let state = Arc::new(AppState::new(
        Arc::new(store),
        config,
        trust,
        shutdown.clone(),
        tracker.clone(),
    ));
    let app = router(state.clone());
    let serve = listener.serve(app, shutdown.clone().cancelled_owned());
    let grace = config.shutdown_grace();
    let overdue = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served.map_err(|e| Error::io("serving HTTP", e))?,
        () = overdue => tracing::warn!(?grace, "requests still in flight after the grace period; closing them"),
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("store work still running after the grace period");
    }
    drop(state);
    tracing::info!("stopped");
    Ok(())
}

async fn health() -> &'static str {
    "ok\n"
}

/// `GET /metrics`: Prometheus text (0.0.4), encoded by
/// `prometheus-client` from the counters and the store's size.
async fn metrics(State(state): State<Shared>) -> Result<Response> {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let packages = state.blocking(|s| s.count()).await?;
    let m = &state.metrics;
    let counter = |c: &AtomicU64| {
        let out = Counter::<u64>::default();
        out.inc_by(c.load(Ordering::Relaxed));
        out
    };
    let mut r = prometheus_client::registry::Registry::default();
    let versions = Gauge::<i64>::default();
    versions.set(i64::try_from(packages).unwrap_or(i64::MAX));
    r.register(
        "depmgr_package_versions",
        "Stored package versions",
        versions,
    );
    let uploads = Family::<Vec<(String, String)>, Counter>::default();
    for (result, c) in [
        ("created", &m.uploads_created),
        ("unchanged", &m.uploads_unchanged),
        ("conflict", &m.uploads_conflict),
        ("rejected", &m.uploads_rejected),
        ("failed", &m.uploads_failed),
    ] {
        uploads
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc_by(c.load(Ordering::Relaxed));
    }
    r.register("depmgr_uploads", "Uploads by outcome", uploads);
    for (name, help, c) in [
        (
            "depmgr_upload_bytes",
            "Bytes received in uploads",
            &m.upload_bytes,
        ),
        (
            "depmgr_downloads",
            "Archive downloads started",
            &m.downloads,
        ),
        (
            "depmgr_download_bytes",
            "Archive bytes sent",
            &m.download_bytes,
        ),
        ("depmgr_closures", "Closure requests", &m.closures),
        (
            "depmgr_closure_errors",
            "Closure requests that failed",
            &m.closure_errors,
        ),
        (
            "depmgr_tls_handshakes",
            "TLS handshakes completed",
            &state.trust.handshakes.accepted,
        ),
        (
            "depmgr_tls_handshakes_failed",
            "TLS handshakes that failed (plaintext, another CA, an expired certificate, ...)",
            &state.trust.handshakes.failed,
        ),
        (
            "depmgr_auth_refused",
            "Requests refused for want of a (fitting) client certificate",
            &m.auth_refused,
        ),
    ] {
        r.register(name, help, counter(c));
    }
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &r)
        .map_err(|e| Error::Storage(format!("encoding the metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        out,
    )
        .into_response())
}
