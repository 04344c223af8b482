//! Downloads: an archive by name and version or by digest, streamed from
//! its file with a bounded read-ahead; `If-None-Match` answers 304.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::manifest::check_digest;

use crate::{Error, Result};

use super::{READ_AHEAD, STREAM_CHUNK, Shared, find};

pub(super) async fn get_archive(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let record = find(&state, &name, &version).await?;
    stream_archive(&state, &record.digest, &headers).await
}

pub(super) async fn get_archive_by_digest(
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
pub(super) fn read_ahead(
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
pub(super) fn not_modified(headers: &HeaderMap, digest: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == digest || t == "*")
}

pub(super) async fn stream_archive(
    state: &Shared,
    digest: &str,
    headers: &HeaderMap,
) -> Result<Response> {
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
