//! The server side: a listener for `axum::serve` that speaks TLS and hands
//! every connection to the router with the verified identity of its peer
//! ([`Peer`], read with `ConnectInfo<Peer>`), or a plain TCP listener with
//! the same [`Peer`] (no identity) for loopback and `--insecure`.
//!
//! Handshakes run concurrently, each within [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_HANDSHAKES`] at once, so a slow or silent client delays no one.
//! A failed handshake (plaintext on the TLS port, a certificate from
//! another CA, an expired one, none where one is required) is counted in
//! [`HandshakeStats`] and logged, at most once a second.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::Identity;
use crate::keys::Tls;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; further connections wait.
pub const MAX_HANDSHAKES: usize = 256;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate of the CA (depmgr, the agent).
    Required,
    /// A client may present one; the routes decide what an anonymous
    /// client may do (the supervisor: the admin API with the token).
    Optional,
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified identity of its certificate; `None` in plaintext or
    /// when it presented none.
    pub identity: Option<Identity>,
}

impl Peer {
    /// `role/name@addr`, or `anonymous@addr`, for log lines.
    pub fn describe(&self) -> String {
        match &self.identity {
            Some(id) => format!("{id}@{}", self.addr),
            None => format!("anonymous@{}", self.addr),
        }
    }
}

/// Handshakes so far, for `/metrics`.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    last_log_ms: AtomicU64,
}

impl HandshakeStats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn refused(&self, addr: SocketAddr, why: &str, started: Instant) {
        let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let now = started.elapsed().as_millis() as u64 + epoch_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(peer = %addr, failed_total = n, "TLS handshake refused: {why}");
        }
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves the current (reloadable) certificate.
#[derive(Debug)]
struct ServerCert(Arc<Tls>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// rustls server settings: our certificate; client certificates verified
/// against the CA (required or optional).
pub fn server_config(tls: &Arc<Tls>, auth: ClientAuth) -> crate::Result<Arc<rustls::ServerConfig>> {
    let builder = WebPkiClientVerifier::builder_with_provider(tls.roots(), tls.provider());
    let verifier = match auth {
        ClientAuth::Required => builder.build(),
        ClientAuth::Optional => builder.allow_unauthenticated().build(),
    }
    .map_err(|e| crate::Error::Cert(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(tls.provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServerCert(tls.clone())));
    // HTTP/1.1 only: axum is built without its http2 feature, so offering
    // h2 would make clients that prefer it (curl) fail after the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS listener: connections arrive handshaken, with their [`Peer`].
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run in tasks of their own.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        stats: Arc<HandshakeStats>,
    ) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = tx.closed() => return,
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                let (stream, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors and the like: wait a little.
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx, stats) = (acceptor.clone(), tx.clone(), stats.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let started = Instant::now();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Err(_) => stats.refused(addr, "no handshake within 10 s", started),
                        Ok(Err(e)) => stats.refused(addr, &e.to_string(), started),
                        Ok(Ok(tls)) => {
                            let identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Identity::from_der(c));
                            let identity = match identity {
                                None => None,
                                Some(Ok(id)) => Some(id),
                                Some(Err(e)) => {
                                    stats.refused(addr, &e.to_string(), started);
                                    return;
                                }
                            };
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send((tls, Peer { addr, identity })).await;
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it does not while we hold the
            // receiver); never hand out a connection again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            identity: None,
        })
    }
}

/// A plain TCP listener whose connections carry a [`Peer`] without
/// identity.
pub struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.0).await;
        let _ = io.set_nodelay(true);
        (
            io,
            Peer {
                addr,
                identity: None,
            },
        )
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            identity: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A bound listen address, TLS or plain.
pub enum Bound {
    Plain(PlainListener),
    Tls(TlsListener),
}

impl Bound {
    /// Binds `addr`: with TLS when `tls` is given (the handshake settings
    /// are made now, so a bad certificate fails here, before serving).
    pub async fn bind(
        addr: impl ToSocketAddrs,
        tls: Option<(&Arc<Tls>, ClientAuth)>,
        stats: Arc<HandshakeStats>,
    ) -> crate::Result<Bound, BindError> {
        let tcp = TcpListener::bind(addr).await.map_err(BindError::Listen)?;
        match tls {
            None => Ok(Bound::Plain(PlainListener(tcp))),
            Some((tls, auth)) => {
                let config = server_config(tls, auth).map_err(BindError::Tls)?;
                Ok(Bound::Tls(
                    TlsListener::new(tcp, config, stats).map_err(BindError::Listen)?,
                ))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Plain(l) => l.0.local_addr(),
            Bound::Tls(l) => Ok(l.local),
        }
    }

    /// Serves `router` until `shutdown` resolves; handlers read the
    /// peer with `ConnectInfo<Peer>`.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let service = router.into_make_service_with_connect_info::<Peer>();
        match self {
            Bound::Plain(l) => {
                axum::serve(l, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Bound::Tls(l) => {
                axum::serve(l, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// Why [`Bound::bind`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0}")]
    Listen(io::Error),
    #[error("{0}")]
    Tls(crate::Error),
}
