//! The client side: rustls settings that present this program's
//! certificate and accept a server only when its chain leads to the
//! cluster CA and its identity has one of the expected roles. Host names
//! are not checked: a cluster member is who its certificate says, wherever
//! it is reached (as in SPIFFE's X.509 verification).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{Identity, Role};
use crate::keys::Tls;

/// Checks that `end_entity` chains to one of `roots` and is valid now.
pub(crate) fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(end_entity)?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
}

#[derive(Debug)]
struct WrongRole(String);

impl std::fmt::Display for WrongRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for WrongRole {}

/// Accepts a server whose certificate chains to the cluster CA and names
/// one of `expect`.
#[derive(Debug)]
struct RoleVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    expect: Vec<Role>,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(end_entity, intermediates, &self.roots, &self.provider, now)?;
        let refuse = |msg: String| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                WrongRole(msg),
            ))))
        };
        let identity = Identity::from_der(end_entity).map_err(|e| refuse(e.to_string()))?;
        if !self.expect.contains(&identity.role) {
            let want: Vec<&str> = self.expect.iter().map(|r| r.as_str()).collect();
            return Err(refuse(format!(
                "the server is {identity}, expected a {} certificate",
                want.join(" or ")
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the current (reloadable) certificate to servers.
#[derive(Debug)]
struct ClientCert(Arc<Tls>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls client settings: our certificate, and servers of the `expect`ed
/// roles only.
pub fn client_config(tls: &Arc<Tls>, expect: &[Role]) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(tls.provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RoleVerifier {
            roots: tls.roots(),
            provider: tls.provider(),
            expect: expect.to_vec(),
        }))
        .with_client_cert_resolver(Arc::new(ClientCert(tls.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A reqwest builder for talking to servers of the `expect`ed roles: with
/// TLS, our certificate and [`client_config`]'s checks, and https only;
/// without, plain HTTP.
pub fn http_builder(tls: Option<&Arc<Tls>>, expect: &[Role]) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls {
        Some(tls) => builder
            .use_preconfigured_tls(client_config(tls, expect))
            .https_only(true),
        None => builder,
    }
}

/// `https` with TLS, `http` without.
pub fn scheme(tls: Option<&Arc<Tls>>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// `scheme://addr`, for a bare `host:port`.
pub fn base_url(tls: Option<&Arc<Tls>>, addr: &str) -> String {
    format!("{}://{addr}", scheme(tls))
}
