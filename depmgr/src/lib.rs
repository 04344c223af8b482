//! The dependency manager: versioned, immutable configuration packages.
//!
//! A configuration package is a gzip'd tar archive with a `manifest.toml`
//! ([`proto::manifest::Manifest`]) at its root. The dependency manager stores
//! each `name@version` once and forever, addressed by the sha256 digest of its
//! archive, and answers three questions for the rest of the cluster:
//!
//! - *what is stored* (`GET /v1/packages`, `GET /v1/packages/{name}/{version}`);
//! - *what must be installed, in which order* to run a package: the
//!   dependency closure (`GET .../closure`), dependencies first, each
//!   semver requirement resolved to the highest stored version that matches;
//! - *the bytes* (`GET .../archive`, `GET /v1/archives/{digest}`), streamed
//!   from disk with the digest as `ETag`.
//!
//! # Layout of the crate
//!
//! The pure parts have no I/O beyond what they are handed:
//!
//! - [`archive`]: building a deterministic archive from a directory
//!   ([`archive::pack_dir`]), and the one archive rule set of the workspace:
//!   inspecting an uploaded archive ([`archive::inspect`]: no entry or link
//!   escaping the root, manifest at the root, the command present, size
//!   limits) and unpacking one on a node ([`archive::unpack`], same rules,
//!   streamed from a file into a directory that appears only when whole).
//! - [`resolve`]: the dependency closure as a pure function over a
//!   [`resolve::Catalog`]; iterative, so a deep or cyclic graph is an error,
//!   never a stack overflow or a hang.
//! - [`api`]: the JSON answers of the HTTP API, shared by server and client.
//!
//! The edges:
//!
//! - [`client`]: the one HTTP client of depmgr, with timeouts (push, list,
//!   show, closure, download by digest with digest check and byte cap), used
//!   by `supctl`, the supervisor and the node manager (agent); nothing else
//!   speaks depmgr's HTTP.
//! - [`cli`]: the `supctl package ...` subcommands.
//! - `store` and `server` (feature `server`, on by default): RocksDB
//!   metadata plus digest-named archive files, and the axum service.
//!
//! # Invariants
//!
//! - A version, once acknowledged (201/200), never changes and is never lost:
//!   its archive file is fsynced and renamed into place, then its metadata is
//!   written with a synced WAL write. That metadata write is the commit
//!   point; a crash before it leaves no visible trace (temporary files and
//!   unreferenced archives are removed at the next start).
//! - Nothing is stored for an upload that fails any check.
//! - Memory does not grow with archive size: uploads stream to a temporary
//!   file, downloads stream from the archive file.

pub mod api;
pub mod archive;
pub mod cli;
pub mod client;
pub mod resolve;

#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;

/// Everything that can go wrong in the dependency manager, on the server and
/// on the client side. The server turns it into an HTTP answer in one place
/// (`server`), choosing the status from the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a malformed name or version, an archive that breaks a rule.
    /// The message names the problem. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// An unknown package or version. HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored: other bytes for an existing
    /// version, a dependency that cannot be resolved, a cycle. HTTP 409.
    #[error("{0}")]
    Conflict(String),
    /// The storage failed (disk, RocksDB, a corrupt record). HTTP 500.
    #[error("storage: {0}")]
    Storage(String),
    /// A local file operation failed (client side, or the server's files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The dependency manager answered with an error status (client side).
    #[error("depmgr answered {status}: {message}")]
    Http { status: u16, message: String },
    /// The dependency manager could not be reached or the transfer broke
    /// (client side); includes timeouts.
    #[error("cannot reach depmgr: {0}")]
    Transport(String),
    /// Downloaded bytes whose sha256 is not the expected one (client side).
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A download that would pass the client's byte cap (client side); it
    /// is stopped at the cap and nothing is kept.
    #[error("{what} is larger than {limit} bytes (the download cap)")]
    TooLarge { what: String, limit: u64 },
}

impl Error {
    /// An [`Error::Io`] with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Lower-case hex sha256 of the file at `path`, read in 64 KiB chunks (for
/// checking a cached archive against its digest). Blocking.
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let fail = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Parses `name` and an exact `version` as they appear in a URL or on the
/// command line; the error names the problem.
pub fn parse_name_version(name: &str, version: &str) -> Result<semver::Version> {
    proto::names::check("package name", name).map_err(Error::BadRequest)?;
    semver::Version::parse(version).map_err(|e| {
        Error::BadRequest(format!(
            "package version {version:?} is not an exact semver version: {e}"
        ))
    })
}
