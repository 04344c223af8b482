//! Real handshakes between the listener and the clients of this crate,
//! with certificates made by its CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tls::ca;
use tls::{Bound, ClientAuth, HandshakeStats, Identity, Peer, Role, Tls, TlsFiles};

fn issue(dir: &Path, role: Role, name: &str, days: i64) -> TlsFiles {
    let id = Identity::new(role, name).expect("valid identity");
    ca::issue(dir, &id, &["127.0.0.1".into()], days).expect("issue");
    TlsFiles {
        ca: ca::ca_cert_path(dir),
        cert: ca::cert_path(dir, name),
        key: ca::key_path(dir, name),
    }
}

fn load(files: TlsFiles) -> Arc<Tls> {
    Tls::load(files).expect("load")
}

/// A server that answers who its peer is.
async fn serve(tls: &Arc<Tls>, auth: ClientAuth) -> (String, Arc<HandshakeStats>) {
    let stats = Arc::new(HandshakeStats::default());
    let bound = Bound::bind("127.0.0.1:0", Some((tls, auth)), stats.clone())
        .await
        .expect("bind");
    let addr = bound.local_addr().expect("addr");
    let router = Router::new().route(
        "/who",
        get(|ConnectInfo(peer): ConnectInfo<Peer>| async move {
            peer.identity
                .map_or("anonymous".to_string(), |i| i.to_string())
        }),
    );
    tokio::spawn(bound.serve(router, std::future::pending()));
    (format!("https://{addr}/who"), stats)
}

fn client(tls: Option<&Arc<Tls>>, expect: &[Role]) -> reqwest::Client {
    tls::client::http_builder(tls, expect)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_server_sees_the_client_identity_and_the_client_checks_the_server_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(dir.path()).expect("init");
    let sup = load(issue(dir.path(), Role::Supervisor, "1", 30));
    let op = load(issue(dir.path(), Role::Operator, "alice", 30));
    let (url, stats) = serve(&sup, ClientAuth::Optional).await;

    let who = client(Some(&op), &[Role::Supervisor])
        .get(&url)
        .send()
        .await
        .expect("operator reaches a supervisor")
        .text()
        .await
        .expect("body");
    assert_eq!(who, "operator/alice");

    let err = client(Some(&op), &[Role::Depmgr])
        .get(&url)
        .send()
        .await
        .expect_err("a client expecting depmgr refuses a supervisor");
    let chain = format!("{:?}", err);
    assert!(chain.contains("expected a depmgr certificate"), "{chain}");
    assert_eq!(stats.accepted(), 1);
    // The refusal came from the client; the server saw an aborted handshake.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while stats.failed() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn strangers_are_refused_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(dir.path()).expect("init");
    let other = tempfile::tempdir().expect("tempdir");
    ca::init(other.path()).expect("init");
    let dm = load(issue(dir.path(), Role::Depmgr, "depmgr", 30));
    let (url, stats) = serve(&dm, ClientAuth::Required).await;

    // A certificate of another CA (whose holder trusts only that CA, so
    // the handshake fails on both sides).
    let mut stranger_files = issue(other.path(), Role::Operator, "mallory", 30);
    let stranger = load(stranger_files.clone());
    assert!(
        client(Some(&stranger), &[Role::Depmgr])
            .get(&url)
            .send()
            .await
            .is_err()
    );
    // Nor can it be made to trust ours: our CA did not sign it.
    stranger_files.ca = ca::ca_cert_path(dir.path());
    assert!(
        Tls::load(stranger_files).is_err(),
        "a certificate our CA did not sign does not even load"
    );

    // No certificate at all where one is required: a client without one.
    let anonymous = reqwest::Client::builder()
        .use_preconfigured_tls(anonymous_config(dir.path()))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(anonymous.get(&url).send().await.is_err());

    // Plaintext on the TLS port.
    let plain = url.replace("https://", "http://");
    assert!(client(None, &[]).get(&plain).send().await.is_err());

    tokio::time::timeout(Duration::from_secs(5), async {
        while stats.failed() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three refused handshakes counted");
    assert_eq!(stats.accepted(), 0);
}

/// A client that trusts the CA but has no certificate of its own.
fn anonymous_config(dir: &Path) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca::ca_cert_path(dir)).expect("ca") {
        roots.add(c.expect("pem")).expect("add");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[test]
fn bad_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(dir.path()).expect("init");
    assert!(
        ca::init(dir.path())
            .unwrap_err()
            .to_string()
            .contains("refusing to replace")
    );

    let expired = issue(dir.path(), Role::Agent, "old", -1);
    let e = Tls::load(expired).unwrap_err().to_string();
    assert!(
        e.contains("old.pem") && e.to_lowercase().contains("expired"),
        "{e}"
    );

    let a = issue(dir.path(), Role::Agent, "a", 30);
    let b = issue(dir.path(), Role::Agent, "b", 30);
    let mixed = TlsFiles {
        key: b.key.clone(),
        ..a.clone()
    };
    let e = Tls::load(mixed).unwrap_err().to_string();
    assert!(
        e.contains("b.key") && e.contains("is not the key of"),
        "{e}"
    );

    // A name already taken by another role's certificate.
    let e = ca::issue(
        dir.path(),
        &Identity::new(Role::Operator, "a").expect("valid"),
        &[],
        30,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds the certificate of agent/a"), "{e}");

    assert_eq!(
        TlsFiles::from_flags(Some("x".into()), None, Some("k".into())).unwrap_err(),
        "TLS needs --tls-ca, --tls-cert and --tls-key together; missing --tls-cert"
    );
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_the_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(dir.path()).expect("init");
    let files = issue(dir.path(), Role::Supervisor, "2", 30);
    let sup = load(files.clone());
    let op = load(issue(dir.path(), Role::Operator, "ops", 30));
    let (url, _) = serve(&sup, ClientAuth::Optional).await;
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/who")
        .to_string();
    let first = presented(&op, &addr).await;

    issue(dir.path(), Role::Supervisor, "2", 60);
    sup.reload().expect("reload");
    let second = presented(&op, &addr).await;
    assert_ne!(first, second, "new connections get the rotated certificate");
    let on_disk = {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_file(&files.cert)
            .expect("pem")
            .to_vec()
    };
    assert_eq!(
        second, on_disk,
        "the server presents the file's certificate"
    );

    // A certificate of another identity at the same path is not taken.
    std::fs::copy(ca::cert_path(dir.path(), "ops"), &files.cert).expect("copy");
    std::fs::copy(ca::key_path(dir.path(), "ops"), &files.key).expect("copy");
    let e = sup.reload().unwrap_err().to_string();
    assert!(e.contains("names operator/ops"), "{e}");
    assert_eq!(presented(&op, &addr).await, second);
}

/// The certificate a server presents to a new connection.
async fn presented(client: &Arc<Tls>, addr: &str) -> Vec<u8> {
    let config = tls::client::client_config(client, &[Role::Supervisor]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("supervisor").expect("name");
    let stream = connector.connect(name, tcp).await.expect("handshake");
    stream.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test]
async fn a_client_preferring_http2_is_served_http1() {
    // axum serves HTTP/1.1 only here; offering h2 in ALPN made curl fail
    // after the handshake ("stream 1 was not closed cleanly").
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(dir.path()).expect("init");
    let sup = load(issue(dir.path(), Role::Supervisor, "1", 30));
    let op = load(issue(dir.path(), Role::Operator, "ops", 30));
    let (url, _) = serve(&sup, ClientAuth::Optional).await;
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/who")
        .to_string();
    let mut config = tls::client::client_config(&op, &[Role::Supervisor]);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("supervisor").expect("name");
    let stream = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}
