//! Uploads: `PUT /v1/packages/{name}/{version}` streams the body to a
//! temporary file while hashing it, inspects it with the archive rules and
//! commits it; a refused body is drained for a bounded time ("lingering
//! close") so the client reads the 400.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::PushAnswer;
use crate::archive;
use crate::store::{Committed, PackageRecord, conflict};
use crate::{Error, Result, parse_name_version};

use super::{AppState, STREAM_CHUNK, Shared};

/// How long, and how many bytes, a refused upload's body is still read and
/// discarded after the answer (see [`linger`]).
pub(super) const LINGER_TIME: Duration = Duration::from_secs(5);
pub(super) const LINGER_BYTES: u64 = 64 << 20;

/// Reads and discards what is left of a refused upload's body, for a
/// bounded time and size, while the 400 goes out. Closing a socket with
/// unread data makes the kernel send a reset, which can destroy the answer
/// before the client reads it; this is nginx's "lingering close".
pub(super) fn linger(state: &Shared, mut chunks: axum::body::BodyDataStream) {
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
pub(super) struct TempUpload(PathBuf);

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

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `PUT /v1/packages/{name}/{version}`.
pub(super) async fn put_package(
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

pub(super) async fn upload(
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
