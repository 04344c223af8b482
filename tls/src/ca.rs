//! The cluster CA: `supctl ca init <dir>` and `supctl ca issue <dir> <role>
//! <name> [--host ...]`.
//!
//! `<dir>/ca.pem` and `<dir>/ca.key` are the CA (ECDSA P-256, ten years);
//! each issued certificate is `<dir>/<name>.pem` with its key
//! `<dir>/<name>.key` (mode 0600), valid for both server and client
//! authentication, naming its identity as the URI SAN
//! `spiffe://supcluster/<role>/<name>` and, for the operator's convenience,
//! the `--host` names and addresses as DNS/IP SANs (clients of this
//! cluster check identities, not host names). Files are written whole
//! (temporary file, then rename): a daemon reloading on SIGHUP never reads
//! half a file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::Identity;
use crate::{Error, Result};

/// Validity of the CA.
const CA_DAYS: i64 = 3650;
/// Default validity of an issued certificate.
pub const DEFAULT_DAYS: i64 = 365;

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Creates a CA in `dir` (made if missing). Refuses to overwrite one: every
/// certificate it issued would stop being trusted.
pub fn init(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for p in [ca_cert_path(dir), ca_key_path(dir)] {
        if p.exists() {
            return Err(Error::file(
                &p,
                "a CA is already there; refusing to replace it (every certificate it issued would stop being trusted)",
            ));
        }
    }
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "supcluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    write_atomic(&ca_key_path(dir), key.serialize_pem().as_bytes(), true)?;
    write_atomic(&ca_cert_path(dir), cert.pem().as_bytes(), false)?;
    Ok(())
}

/// Issues a certificate for `identity` signed by the CA in `dir`, valid
/// for `days` from now (a negative number makes one that has already
/// expired, for tests of refusal). Returns the certificate's path.
pub fn issue(dir: &Path, identity: &Identity, hosts: &[String], days: i64) -> Result<PathBuf> {
    if identity.name == "ca" {
        return Err(Error::Cert(
            "the name \"ca\" is the CA's own file name; choose another".into(),
        ));
    }
    let ca_pem = read_string(&ca_cert_path(dir))?;
    let ca_key = KeyPair::from_pem(&read_string(&ca_key_path(dir))?)
        .map_err(|e| Error::file(&ca_key_path(dir), format!("not a CA key: {e}")))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|e| Error::file(&ca_cert_path(dir), format!("not a CA certificate: {e}")))?;
    let ca = ca_params.self_signed(&ca_key).map_err(cert_err)?;

    let cert_file = cert_path(dir, &identity.name);
    if let Ok(existing) = std::fs::read_to_string(&cert_file)
        && let Some(held) = pem_identity(&existing)
        && held != *identity
    {
        return Err(Error::file(
            &cert_file,
            format!(
                "holds the certificate of {held}; choose another name or directory for {identity}"
            ),
        ));
    }

    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.to_string());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
        .subject_alt_names
        .push(SanType::URI(identity.uri().try_into().map_err(cert_err)?));
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|e| Error::Cert(format!("--host {host:?}: {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let now = OffsetDateTime::now_utc();
    if days > 0 {
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
    } else {
        params.not_after = now + Duration::days(days) - Duration::hours(1);
        params.not_before = params.not_after - Duration::days(1);
    }
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(cert_err)?;
    write_atomic(
        &key_path(dir, &identity.name),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    write_atomic(&cert_file, cert.pem().as_bytes(), false)?;
    Ok(cert_file)
}

fn pem_identity(pem: &str) -> Option<Identity> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Identity::from_der(&der).ok()
}

fn cert_err(e: impl std::fmt::Display) -> Error {
    Error::Cert(e.to_string())
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` whole: a temporary file beside it, synced, then
/// renamed over it. Keys are created with mode 0600.
fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(())
}
