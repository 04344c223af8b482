//! The cluster's trust, in one place.
//!
//! - [`ca`]: a cluster CA and the certificates it issues (`supctl ca init`
//!   and `supctl ca issue`), made with rcgen;
//! - [`identity`]: who a certificate names: a [`Role`] and a name, carried
//!   as the URI SAN `spiffe://supcluster/<role>/<name>`;
//! - [`keys`]: a program's `--tls-ca/--tls-cert/--tls-key`, loaded and
//!   checked ([`Tls`]), reloadable on SIGHUP;
//! - [`server`]: a TLS listener for axum whose connections carry the
//!   verified peer identity ([`Peer`]), with handshake counters;
//! - [`client`]: rustls client settings that verify the peer's chain and
//!   its role (not its host name: identities, not addresses, are what the
//!   cluster trusts), for reqwest;
//! - [`policy`]: plaintext only on loopback unless `--insecure`;
//! - [`frames`]: length-prefixed frames over an upgraded connection (the
//!   agents' heartbeat stream).
//!
//! One crypto provider everywhere: ring.

pub mod ca;
pub mod client;
pub mod frames;
pub mod identity;
pub mod keys;
pub mod policy;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

pub use identity::{Identity, Role};
pub use keys::{Tls, TlsFiles};
pub use server::{Bound, ClientAuth, HandshakeStats, Peer, ServeLimits, Slot};

/// What can go wrong with certificates and keys. Every message names the
/// file or the certificate concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
}

impl Error {
    pub(crate) fn file(path: &std::path::Path, message: impl Into<String>) -> Error {
        Error::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one crypto provider of the cluster.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
