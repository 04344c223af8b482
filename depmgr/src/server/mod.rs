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
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use proto::ErrorBody;
use tokio::net::TcpListener;
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
}

type Shared = Arc<AppState>;

impl AppState {
    pub fn new(
        store: Arc<Store>,
        config: &Config,
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
        // Uploads stream to disk under our own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves on `listener` until `shutdown` fires, then drains (see the module
/// doc). The store is closed when this returns.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> Result<()> {
    let tracker = TaskTracker::new();
    let state = Arc::new(AppState::new(
        Arc::new(store),
        config,
        shutdown.clone(),
        tracker.clone(),
    ));
    let app = router(state.clone());
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
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

async fn metrics(State(state): State<Shared>) -> Result<Response> {
    let packages = state.blocking(|s| s.count()).await?;
    let m = &state.metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    out.push_str("# HELP depmgr_package_versions Stored package versions.\n");
    out.push_str("# TYPE depmgr_package_versions gauge\n");
    out.push_str(&format!("depmgr_package_versions {packages}\n"));
    out.push_str("# HELP depmgr_uploads_total Uploads by outcome.\n");
    out.push_str("# TYPE depmgr_uploads_total counter\n");
    for (result, c) in [
        ("created", &m.uploads_created),
        ("unchanged", &m.uploads_unchanged),
        ("conflict", &m.uploads_conflict),
        ("rejected", &m.uploads_rejected),
        ("failed", &m.uploads_failed),
    ] {
        out.push_str(&format!(
            "depmgr_uploads_total{{result=\"{result}\"}} {}\n",
            get(c)
        ));
    }
    for (name, help, c) in [
        (
            "depmgr_upload_bytes_total",
            "Bytes received in uploads.",
            &m.upload_bytes,
        ),
        (
            "depmgr_downloads_total",
            "Archive downloads started.",
            &m.downloads,
        ),
        (
            "depmgr_download_bytes_total",
            "Archive bytes sent.",
            &m.download_bytes,
        ),
        ("depmgr_closures_total", "Closure requests.", &m.closures),
        (
            "depmgr_closure_errors_total",
            "Closure requests that failed.",
            &m.closure_errors,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            get(c)
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
