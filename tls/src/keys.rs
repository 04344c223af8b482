//! A program's certificate, key and CA: loaded, checked, and reloadable.
//!
//! [`Tls::load`] refuses what would only fail later, each with a message
//! naming the file: an unreadable or empty PEM file, a key that is not the
//! certificate's, a certificate the CA did not sign, one that expired or
//! is not yet valid, one without a cluster identity. [`Tls::reload`]
//! re-reads the certificate and key (not the CA) and swaps them in for new
//! connections, keeping the old ones when the new ones fail a check or
//! name another identity.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::identity::{Identity, Role};
use crate::{Error, Result};

/// The three TLS flags of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The command-line flags naming these files:
    /// `--tls-ca <ca> --tls-cert <cert> --tls-key <key>`.
    pub fn to_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// All three flags or none: `Ok(None)` without TLS; an error naming
    /// the missing flags when only some are given.
    pub fn from_flags(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    (ca.is_none(), "--tls-ca"),
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                ]
                .into_iter()
                .filter_map(|(m, f)| m.then_some(f))
                .collect();
                Err(format!(
                    "TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}",
                    missing.join(", ")
                ))
            }
        }
    }
}

/// A loaded, checked TLS identity: the CA, this program's certificate and
/// key (swappable), and who they say it is.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    roots: Arc<RootCertStore>,
    identity: Identity,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Tls {
    /// Loads and checks the three files.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>> {
        let provider = crate::provider();
        let mut roots = RootCertStore::empty();
        let cas = read_certs(&files.ca)?;
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| Error::file(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let (key, identity) = load_pair(&files, &roots, &provider)?;
        Ok(Arc::new(Tls {
            files,
            roots,
            identity,
            provider,
            current: RwLock::new(key),
        }))
    }

    /// Loads the three files (as [`Tls::load`]) and checks that the
    /// certificate names `role`, and `name` when given: a program refuses
    /// to start with another's certificate. `who` names the program in the
    /// error (`this supervisor (--id 1)`); every error names the file.
    pub fn load_as(
        files: TlsFiles,
        role: Role,
        name: Option<&str>,
        who: &str,
    ) -> std::result::Result<Arc<Tls>, String> {
        let tls = Tls::load(files).map_err(|e| e.to_string())?;
        let got = tls.identity();
        let want = match name {
            Some(name) => {
                let want = Identity::new(role, name)?;
                (*got != want).then(|| format!("the certificate {want}"))
            }
            None => (got.role != role).then(|| {
                format!(
                    "a certificate of role {role} (supctl ca issue <dir> {role} <name>)",
                    role = role.as_str()
                )
            }),
        };
        match want {
            None => Ok(tls),
            Some(want) => Err(format!(
                "--tls-cert {}: the certificate names {got}, but {who} needs {want}",
                tls.files().cert.display()
            )),
        }
    }

    /// Who this program is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// The certificate and key new connections use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the certificate and key. On any problem (unreadable, not
    /// signed by the CA, expired, another identity) the old pair stays and
    /// the error says why.
    pub fn reload(&self) -> Result<()> {
        let (key, identity) = load_pair(&self.files, &self.roots, &self.provider)?;
        if identity != self.identity {
            return Err(Error::file(
                &self.files.cert,
                format!(
                    "names {identity}, but this program is {}; keeping the old certificate",
                    self.identity
                ),
            ));
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// Reloads on every SIGHUP until the process ends, logging the outcome.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let tls = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // File reads and parsing: off the async workers.
                let t = tls.clone();
                let reloaded = tokio::task::spawn_blocking(move || t.reload())
                    .await
                    .unwrap_or_else(|e| Err(crate::Error::Cert(format!("reload task: {e}"))));
                match reloaded {
                    Ok(()) => tracing::info!(
                        cert = %tls.files.cert.display(),
                        identity = %tls.identity,
                        "TLS certificate reloaded; new connections use it"
                    ),
                    Err(e) => tracing::error!("TLS certificate not reloaded: {e}"),
                }
            }
        });
        Ok(())
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::file(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(Error::file(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn load_pair(
    files: &TlsFiles,
    roots: &RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<CertifiedKey>, Identity)> {
    let chain = read_certs(&files.cert)?;
    let key_bytes = std::fs::read(&files.key).map_err(|e| Error::io(&files.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| Error::file(&files.key, format!("not a PEM private key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::file(&files.key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| {
        Error::file(
            &files.key,
            format!("is not the key of {}", files.cert.display()),
        )
    })?;
    let identity =
        Identity::from_der(&chain[0]).map_err(|e| Error::file(&files.cert, e.to_string()))?;
    crate::client::verify_chain(&chain[0], &chain[1..], roots, provider, UnixTime::now()).map_err(
        |e| {
            Error::file(
                &files.cert,
                format!("not accepted with the CA {}: {e}", files.ca.display()),
            )
        },
    )?;
    Ok((Arc::new(certified), identity))
}
