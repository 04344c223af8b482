//! A small HTTP client for the dependency manager, for `supctl`, the
//! supervisor (closure) and the node manager (downloads).
//!
//! Every call has a deadline: connecting is bounded by
//! [`Timeouts::connect`], small JSON calls by [`Timeouts::request`], and
//! transfers (push, download) by [`Timeouts::idle`] between two reads plus,
//! for a push, a total that grows with the archive size. An error answer of
//! the server becomes [`Error::Http`] with its `{"error"}` message; a broken
//! connection or a timeout becomes [`Error::Transport`].
//!
//! Downloads stream to a temporary file beside the destination while the
//! sha256 is computed, and are renamed into place only when the digest is
//! the expected one ([`Error::DigestMismatch`] otherwise). A download is
//! capped at [`Client::max_download_bytes`] ([`DEFAULT_MAX_DOWNLOAD_BYTES`]
//! unless set): an announced `Content-Length` above it is refused before
//! anything is written, and the stream is cut at the cap
//! ([`Error::TooLarge`]). A download that fails, or whose future is dropped
//! (a caller's timeout or cancellation), leaves no file behind.
//!
//! TLS ([`Client::with_tls`]): the client presents the caller's
//! certificate and accepts only a server holding a depmgr certificate of
//! the cluster CA; the URL must then be `https://`, and without TLS
//! `http://` (the other scheme is refused with a message saying why; a
//! bare `host:port` takes the scheme that fits). Which certificates may do
//! what is the server's rule: uploads from operators, reads from any.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::ErrorBody;
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest, check_digest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::{PackageInfo, PackageVersions, PushAnswer};
use crate::{Error, Result};

/// Where the dependency manager listens when nothing else is said.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7000";
/// Environment variable naming the dependency manager's URL for `supctl`.
pub const URL_ENV: &str = "DEPMGR_URL";
/// Largest archive a client downloads unless told otherwise (1 GiB).
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// The deadlines of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// A whole small request (list, show, closure), answer included.
    pub request: Duration,
    /// Longest wait for the next bytes of a transfer.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// A client of one dependency manager.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    timeouts: Timeouts,
    max_download_bytes: u64,
}

/// Turns a reqwest error into [`Error::Transport`] with its whole cause chain
/// (reqwest's own message alone rarely says what happened).
fn transport(url: &str, e: reqwest::Error) -> Error {
    let mut msg = format!("{url}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    if e.is_timeout() {
        msg.push_str(" (timed out)");
    }
    Error::Transport(msg)
}

static PART_SEQ: AtomicU64 = AtomicU64::new(0);

impl Client {
    /// A client of the dependency manager at `base` (`http://host:port`;
    /// `host:port` alone means `http://`), with default [`Timeouts`].
    pub fn new(base: &str) -> Result<Client> {
        Client::with_timeouts(base, Timeouts::default())
    }

    pub fn with_timeouts(base: &str, timeouts: Timeouts) -> Result<Client> {
        Client::with_tls(base, timeouts, None)
    }

    /// A client that, with `tls`, presents this program's certificate and
    /// accepts only a server holding a depmgr certificate of the cluster CA
    /// (`https://`); without, plain `http://`. A bare `host:port` takes the
    /// scheme that fits.
    pub fn with_tls(
        base: &str,
        timeouts: Timeouts,
        tls: Option<&std::sync::Arc<tls::Tls>>,
    ) -> Result<Client> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            tls::client::base_url(tls, base)
        };
        let url = reqwest::Url::parse(&base)
            .map_err(|e| Error::BadRequest(format!("depmgr URL {base:?}: {e}")))?;
        let want = tls::client::scheme(tls);
        if url.scheme() != want {
            return Err(Error::BadRequest(if tls.is_some() {
                format!(
                    "depmgr URL {base:?}: {}:// refused: with the TLS flags (--tls-ca, --tls-cert, --tls-key) depmgr is reached over https:// only",
                    url.scheme()
                )
            } else {
                format!(
                    "depmgr URL {base:?}: {}:// needs the TLS flags (--tls-ca, --tls-cert, --tls-key); without them only http:// is supported",
                    url.scheme()
                )
            }));
        }
        let http = tls::client::http_builder(tls, &[tls::Role::Depmgr])
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.idle)
            .build()
            .map_err(|e| transport(&base, e))?;
        Ok(Client {
            base,
            http,
            timeouts,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        })
    }

    /// The same client with another download cap (bytes of one archive).
    pub fn with_max_download_bytes(mut self, max: u64) -> Client {
        self.max_download_bytes = max;
        self
    }

    /// The cap on the bytes of one download.
    pub fn max_download_bytes(&self) -> u64 {
        self.max_download_bytes
    }

    /// The base URL, e.g. `http://127.0.0.1:7000`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `req`; an error status becomes [`Error::Http`].
    async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| transport(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = tokio::time::timeout(self.timeouts.request, resp.text())
            .await
            .map_err(|_| Error::Transport(format!("{url}: timed out reading the error answer")))?
            .unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.trim().chars().take(500).collect());
        Err(Error::Http {
            status: status.as_u16(),
            message,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let req = self.http.get(&url).timeout(self.timeouts.request);
        let resp = self.send(&url, req).await?;
        resp.json().await.map_err(|e| transport(&url, e))
    }

    /// Uploads `archive` as `name@version`. Returns the answer and whether
    /// the version was created now (201) rather than already stored with the
    /// same bytes (200).
    pub async fn push(
        &self,
        name: &str,
        version: &str,
        archive: Vec<u8>,
    ) -> Result<(PushAnswer, bool)> {
        let len = archive.len() as u64;
        self.push_body(name, version, reqwest::Body::from(archive), len)
            .await
    }

    /// Uploads the archive file at `path` as `name@version`, streamed from
    /// disk in 64 KiB reads (memory does not grow with the archive);
    /// `progress` is called with the bytes read so far after each read.
    /// Answers as [`Client::push`].
    pub async fn push_file(
        &self,
        name: &str,
        version: &str,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(PushAnswer, bool)> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len();
        // (file, bytes read so far); `None` once it ended or failed.
        let state = Some((file, 0u64));
        let progress = std::sync::Arc::new(progress);
        let chunks = futures::stream::unfold(state, move |state| {
            let progress = progress.clone();
            async move {
                let (mut file, sent) = state?;
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        progress(sent);
                        Some((Ok(bytes::Bytes::from(buf)), Some((file, sent))))
                    }
                    Err(e) => Some((Err::<bytes::Bytes, _>(e), None)),
                }
            }
        });
        self.push_body(name, version, reqwest::Body::wrap_stream(chunks), len)
            .await
    }

    /// PUTs `body` (`len` bytes) as the archive of `name@version`.
    async fn push_body(
        &self,
        name: &str,
        version: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<(PushAnswer, bool)> {
        let url = self.url(&format!("/v1/packages/{name}/{version}"));
        // At least 1 MiB/s, plus the usual allowance for the answer.
        let total = self.timeouts.request + Duration::from_secs(len >> 20);
        let req = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .timeout(total);
        let resp = self.send(&url, req).await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        let answer = resp.json().await.map_err(|e| transport(&url, e))?;
        Ok((answer, created))
    }

    /// Builds the deterministic archive of `dir` (which holds
    /// `manifest.toml`) and uploads it under the manifest's name and version.
    pub async fn push_dir(&self, dir: &Path) -> Result<(PushAnswer, bool)> {
        let dir = dir.to_path_buf();
        let (manifest, bytes) =
            tokio::task::spawn_blocking(move || -> Result<(Manifest, Vec<u8>)> {
                let path = dir.join(crate::archive::MANIFEST);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                let manifest = Manifest::from_toml(&text)
                    .map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
                Ok((manifest, crate::archive::pack_dir(&dir)?))
            })
            .await
            .map_err(|e| Error::Storage(format!("packing task failed: {e}")))??;
        self.push(&manifest.name, &manifest.version, bytes).await
    }

    /// `GET /v1/packages`.
    pub async fn list(&self) -> Result<Vec<PackageVersions>> {
        self.get_json("/v1/packages").await
    }

    /// `GET /v1/packages/{name}/{version}`.
    pub async fn show(&self, name: &str, version: &str) -> Result<PackageInfo> {
        self.get_json(&format!("/v1/packages/{name}/{version}"))
            .await
    }

    /// `GET /v1/packages/{name}/{version}/closure`: the package and its
    /// dependencies, resolved, dependencies first.
    pub async fn closure(&self, name: &str, version: &str) -> Result<Vec<ArtifactRef>> {
        self.get_json(&format!("/v1/packages/{name}/{version}/closure"))
            .await
    }

    /// The configuration package of `name@version` as the supervisor sends
    /// it to a node manager: the package's manifest and its resolved
    /// dependency closure in install order (the package itself last).
    pub async fn config_package(&self, name: &str, version: &str) -> Result<ConfigPackage> {
        let info = self.show(name, version).await?;
        let artifacts = self.closure(name, version).await?;
        Ok(ConfigPackage {
            manifest: info.manifest,
            artifacts,
        })
    }

    /// Downloads the archive of `name@version` to `dest`, checking it
    /// against the digest the server announces. Returns the digest.
    pub async fn download(&self, name: &str, version: &str, dest: &Path) -> Result<String> {
        let url = self.url(&format!("/v1/packages/{name}/{version}/archive"));
        self.fetch_to(&url, dest, None).await
    }

    /// Downloads the archive with `digest` (`GET /v1/archives/{digest}`) to
    /// `dest`, checking that its sha256 is `digest`. `dest` appears only
    /// when the whole archive arrived with that digest and within the cap.
    pub async fn download_digest(&self, digest: &str, dest: &Path) -> Result<()> {
        check_digest(digest).map_err(Error::BadRequest)?;
        let url = self.url(&format!("/v1/archives/{digest}"));
        self.fetch_to(&url, dest, Some(digest.to_string()))
            .await
            .map(|_| ())
    }

    async fn fetch_to(&self, url: &str, dest: &Path, expected: Option<String>) -> Result<String> {
        let max = self.max_download_bytes;
        let too_large = || Error::TooLarge {
            what: format!("the archive at {url}"),
            limit: max,
        };
        let mut resp = self.send(url, self.http.get(url)).await?;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let announced = resp
            .headers()
            .get("x-digest-sha256")
            .or_else(|| resp.headers().get(reqwest::header::ETAG))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        let expected = match (expected, announced) {
            (Some(e), _) => e,
            (None, Some(a)) => a,
            (None, None) => {
                return Err(Error::Transport(format!(
                    "{url}: the answer names no digest"
                )));
            }
        };
        let part_file = PartFile(part_path(dest));
        let part = part_file.0.as_path();
        let mut file = tokio::fs::File::create(part)
            .await
            .map_err(|e| Error::io(format!("cannot create {}", part.display()), e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(url, e))? {
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large());
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("cannot write {}", part.display()), e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        file.sync_all()
            .await
            .map_err(|e| Error::io(format!("cannot sync {}", part.display()), e))?;
        tokio::fs::rename(part, dest)
            .await
            .map_err(|e| Error::io(format!("cannot rename to {}", dest.display()), e))?;
        Ok(actual)
    }
}

/// A download in progress; removed when dropped (after the rename, removing
/// it finds nothing). Dropping covers errors, timeouts and cancellation.
struct PartFile(PathBuf);

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A temporary name beside `dest`.
fn part_path(dest: &Path) -> PathBuf {
    let n = PART_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    dest.with_file_name(format!(".{name}.part-{}-{n}", std::process::id()))
}
