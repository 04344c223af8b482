//! The HTTP service (axum 0.8) over the [`Store`].
//!
//! | method and path | handler |
//! | --- | --- |
//! | `PUT /v1/packages/{name}/{version}` | [`put_package`]: stream, hash, check, commit |
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
//! chunks ahead of the socket so disk reads overlap sends ([`read_ahead`]), with
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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use proto::ErrorBody;
use proto::manifest::check_digest;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{PackageInfo, PackageVersions, PushAnswer};
use crate::archive::{self, Limits};
use crate::config::Config;
use crate::store::{Committed, PackageRecord, Store, conflict};
use crate::{Error, Result, parse_name_version, resolve};

/// Size of the chunks archives are streamed in, and of the upload buffer.
const STREAM_CHUNK: usize = 512 << 10;
/// Chunks of a download read ahead of the socket.
const READ_AHEAD: usize = 2;

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

async fn list_packages(State(state): State<Shared>) -> Result<axum::Json<Vec<PackageVersions>>> {
    Ok(axum::Json(state.blocking(|s| s.list()).await?))
}

async fn show_package(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<axum::Json<PackageVersions>> {
    proto::names::check("package name", &name).map_err(Error::BadRequest)?;
    let lookup = name.clone();
    let versions = state.blocking(move |s| s.versions(&lookup)).await?;
    if versions.is_empty() {
        return Err(Error::NotFound(format!("package {name} is not stored")));
    }
    Ok(axum::Json(PackageVersions {
        name,
        versions: versions.iter().map(ToString::to_string).collect(),
    }))
}

/// The record of `name@version`, or a 404 that says what is stored.
async fn find(state: &AppState, name: &str, version: &str) -> Result<PackageRecord> {
    let v = parse_name_version(name, version)?;
    let name = name.to_string();
    state
        .blocking(move |s| {
            if let Some(r) = s.get(&name, &v)? {
                return Ok(r);
            }
            let stored = s.versions(&name)?;
            Err(Error::NotFound(if stored.is_empty() {
                format!("package {name} is not stored")
            } else {
                let list: Vec<String> = stored.iter().map(ToString::to_string).collect();
                format!(
                    "package {name} has no version {v} (stored: {})",
                    list.join(", ")
                )
            }))
        })
        .await
}

async fn show_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<PackageInfo>> {
    let record = find(&state, &name, &version).await?;
    let manifest = record.manifest()?;
    Ok(axum::Json(PackageInfo {
        dependencies: manifest.dependencies.clone(),
        manifest,
        name: record.name,
        version: record.version,
        digest: record.digest,
        size: record.size,
        uploaded_at_ms: record.uploaded_at_ms,
    }))
}

async fn get_closure(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Vec<proto::manifest::ArtifactRef>>> {
    state.metrics.closures.fetch_add(1, Ordering::Relaxed);
    let v = parse_name_version(&name, &version)?;
    let answer = state
        .blocking(move |s| resolve::closure(s, &name, &v))
        .await;
    if answer.is_err() {
        state.metrics.closure_errors.fetch_add(1, Ordering::Relaxed);
    }
    Ok(axum::Json(answer?))
}

async fn get_archive(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let record = find(&state, &name, &version).await?;
    stream_archive(&state, &record.digest, &headers).await
}

async fn get_archive_by_digest(
    State(state): State<Shared>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_digest(&digest).map_err(Error::BadRequest)?;
    stream_archive(&state, &digest, &headers).await
}

/// Streams `file` in [`STREAM_CHUNK`]s, reading up to [`READ_AHEAD`]
/// chunks ahead of what the client has taken, so disk reads overlap socket
/// writes. Each read is a short job on the blocking pool (no thread is held
/// while a slow client drains); memory per download is bounded by about
/// `(READ_AHEAD + 2) * STREAM_CHUNK` whatever the archive's size. A client
/// that goes away drops the receiver, which stops the reader.
fn read_ahead(
    file: std::fs::File,
    state: Shared,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD);
    tokio::spawn(async move {
        let mut file = Some(file);
        while let Some(f) = file.take() {
            let job = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut chunk = Vec::with_capacity(STREAM_CHUNK);
                let read = (&f).take(STREAM_CHUNK as u64).read_to_end(&mut chunk);
                (f, read.map(|_| chunk))
            });
            let item = match job.await {
                Ok((f, Ok(chunk))) if !chunk.is_empty() => {
                    state
                        .metrics
                        .download_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    file = Some(f);
                    Ok(bytes::Bytes::from(chunk))
                }
                Ok((_, Ok(_))) => return, // end of file
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(std::io::Error::other(format!("read task failed: {e}"))),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `If-None-Match` names this digest (quoted or not, or `*`).
fn not_modified(headers: &HeaderMap, digest: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == digest || t == "*")
}

async fn stream_archive(state: &Shared, digest: &str, headers: &HeaderMap) -> Result<Response> {
    let path = state.store.archive_path(digest);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!("no archive with digest {digest}")));
        }
        Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    let etag = HeaderValue::from_str(&format!("\"{digest}\""))
        .map_err(|e| Error::Storage(format!("digest {digest:?} as ETag: {e}")))?;
    let digest_header = HeaderValue::from_str(digest)
        .map_err(|e| Error::Storage(format!("digest {digest:?} as header: {e}")))?;
    if not_modified(headers, digest) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (
                    header::HeaderName::from_static("x-digest-sha256"),
                    digest_header,
                ),
            ],
        )
            .into_response());
    }
    state.metrics.downloads.fetch_add(1, Ordering::Relaxed);
    let file = file.into_std().await;
    let stream = read_ahead(file, state.clone());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("x-digest-sha256"),
                digest_header,
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// How long, and how many bytes, a refused upload's body is still read and
/// discarded after the answer (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 << 20;

/// Reads and discards what is left of a refused upload's body, for a
/// bounded time and size, while the 400 goes out. Closing a socket with
/// unread data makes the kernel send a reset, which can destroy the answer
/// before the client reads it; this is nginx's "lingering close".
fn linger(state: &Shared, mut chunks: axum::body::BodyDataStream) {
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(LINGER_TIME);
        tokio::pin!(deadline);
        let mut drained = 0u64;
        while drained <= LINGER_BYTES {
            tokio::select! {
                () = &mut deadline => break,
                () = shutdown.cancelled() => break,
                next = chunks.next() => match next {
                    Some(Ok(chunk)) => drained += chunk.len() as u64,
                    _ => break,
                },
            }
        }
    });
}

/// Removes a temporary upload file when dropped, unless it was consumed.
struct TempUpload(PathBuf);

impl Drop for TempUpload {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a temporary upload")
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `PUT /v1/packages/{name}/{version}`.
async fn put_package(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut chunks = body.into_data_stream();
    let outcome = upload(&state, name, version, &headers, &mut chunks).await;
    if matches!(outcome, Err(Error::BadRequest(_))) {
        linger(&state, chunks);
    }
    let m = &state.metrics;
    let counter = match &outcome {
        Ok((Committed::Created, _)) => &m.uploads_created,
        Ok((Committed::Unchanged, _)) => &m.uploads_unchanged,
        Err(Error::Conflict(_)) => &m.uploads_conflict,
        Err(Error::BadRequest(_)) => &m.uploads_rejected,
        Err(_) => &m.uploads_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let (committed, answer) = outcome?;
    let status = match committed {
        Committed::Created => {
            tracing::info!(name = %answer.name, version = %answer.version, digest = %answer.digest, size = answer.size, "stored");
            StatusCode::CREATED
        }
        Committed::Unchanged => StatusCode::OK,
    };
    Ok((status, axum::Json(answer)).into_response())
}

async fn upload(
    state: &AppState,
    name: String,
    version: String,
    headers: &HeaderMap,
    chunks: &mut axum::body::BodyDataStream,
) -> Result<(Committed, PushAnswer)> {
    let version = parse_name_version(&name, &version)?;
    let max = state.limits.max_archive_bytes;
    let too_big = || {
        Error::BadRequest(format!(
            "the archive is larger than the limit of {max} bytes"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_big());
    }

    // 1. Stream the body to a temporary file, hashing and counting.
    let path = state.store.temp_path();
    let temp = TempUpload(path.clone());
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let mut out = tokio::io::BufWriter::with_capacity(STREAM_CHUNK, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let next = tokio::select! {
            () = state.shutdown.cancelled() => return Err(Error::ShuttingDown),
            next = tokio::time::timeout(state.upload_idle_timeout, chunks.next()) => next,
        };
        let chunk = match next {
            Err(_) => {
                return Err(Error::BadRequest(format!(
                    "the upload stalled: no data for {} ms",
                    state.upload_idle_timeout.as_millis()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Error::BadRequest(format!("the upload broke off: {e}")));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        size += chunk.len() as u64;
        state
            .metrics
            .upload_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if size > max {
            return Err(too_big());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    out.flush()
        .await
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    drop(out);
    let digest = hex::encode(hasher.finalize());
    let answer = PushAnswer {
        name: name.clone(),
        version: version.to_string(),
        digest: digest.clone(),
        size,
    };

    // 2. A stored version answers from the digest alone.
    let (n, v) = (name.clone(), version.clone());
    if let Some(existing) = state.blocking(move |s| s.get(&n, &v)).await? {
        return if existing.digest == digest {
            Ok((Committed::Unchanged, answer))
        } else {
            Err(conflict(&existing, &digest))
        };
    }

    // 3. Inspect: every rule an archive must pass.
    let limits = state.limits;
    let inspect_path = path.clone();
    let inspection = state
        .tracker
        .spawn_blocking(move || {
            let file = std::fs::File::open(&inspect_path)
                .map_err(|e| Error::io(format!("cannot open {}", inspect_path.display()), e))?;
            archive::inspect(file, &limits)
        })
        .await
        .map_err(|e| Error::Storage(format!("inspection task failed: {e}")))??;
    archive::check_identity(&inspection.manifest, &name, &version)?;

    // 4. Commit: archive in place, then the record.
    let record = PackageRecord {
        name,
        version: version.to_string(),
        digest,
        size,
        uploaded_at_ms: now_ms(),
        manifest_toml: inspection.manifest_text,
    };
    let committed = state.blocking(move |s| s.commit(&temp.0, &record)).await?;
    Ok((committed, answer))
}
