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
//!
//! [`Bound::serve`] runs one hyper HTTP/1.1 connection per accepted
//! stream (not `axum::serve`, which has no header timeout), under
//! [`ServeLimits`]:
//! - a request head must arrive whole within
//!   [`ServeLimits::header_read_timeout`] (default [`HEADER_READ_TIMEOUT`],
//!   10 s), or the connection is closed. hyper starts that timer whenever
//!   the connection waits for a head, so it is also the keep-alive idle
//!   timeout: a connection with no request under way is closed after it;
//! - at most [`ServeLimits::max_connections`] (default
//!   [`MAX_CONNECTIONS`], 1024) connections are served at once. Beyond
//!   it, new connections are not accepted: they wait in the kernel's
//!   listen backlog (TLS: handshaken, in a queue of 64, or in handshake
//!   behind [`MAX_HANDSHAKES`]) and are accepted, oldest first, as served
//!   connections close. Since an idle or slow-header connection is closed
//!   after the header timeout, connections that send nothing delay a
//!   waiting request by at most about that timeout; they cannot starve it.
//! - The peer reaches the handlers as `ConnectInfo<Peer>`, a request
//!   extension set on every request of the connection, with its [`Slot`].
//! - A handler may take the connection over with an HTTP/1.1 upgrade (the
//!   agents' heartbeat stream, [`crate::frames`]); it keeps the [`Slot`],
//!   so the connection still counts against the limit, and closes it when
//!   [`Slot::closing`] says the server stops.
//!
//! A request body that trickles in after a complete head is not bounded in
//! time here: the routes bound what they read (body limits, depmgr's
//! upload stall timeout).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::Identity;
use crate::keys::Tls;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; further connections wait.
pub const MAX_HANDSHAKES: usize = 256;
/// Default of [`ServeLimits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServeLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;

/// Bounds on the HTTP connections [`Bound::serve_with`] serves (see the
/// module doc for what happens at each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Longest wait for a whole request head, the first one or the next
    /// one on a kept-alive connection; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Most connections served at once (1 to 2^20); further ones wait to
    /// be accepted.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// One served connection's place among [`ServeLimits::max_connections`],
/// a request extension on each of its requests. A handler that takes over
/// the connection (an HTTP upgrade) keeps a clone for as long as it uses
/// the connection, so an upgraded connection counts against the limit and
/// in [`HandshakeStats::open`] until it ends, and learns from
/// [`Slot::closing`] when the server shuts down.
#[derive(Clone)]
pub struct Slot(Arc<Held>);

struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: Arc<HandshakeStats>,
    closing: watch::Receiver<bool>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
    /// Changes to `true` once the server stops: finish what is under way
    /// and close.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.0.closing.clone()
    }
}

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

/// Handshakes so far, and the connections served now, for `/metrics`.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    last_log_ms: AtomicU64,
    /// HTTP connections being served (TLS or plain).
    open: AtomicU64,
}

impl HandshakeStats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// HTTP connections being served now (at most
    /// [`ServeLimits::max_connections`]).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
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

/// A bound listen address, TLS or plain, with the stats it counts in.
pub enum Bound {
    Plain(PlainListener, Arc<HandshakeStats>),
    Tls(TlsListener, Arc<HandshakeStats>),
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
            None => Ok(Bound::Plain(PlainListener(tcp), stats)),
            Some((tls, auth)) => {
                let config = server_config(tls, auth).map_err(BindError::Tls)?;
                Ok(Bound::Tls(
                    TlsListener::new(tcp, config, stats.clone()).map_err(BindError::Listen)?,
                    stats,
                ))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Plain(l, _) => l.0.local_addr(),
            Bound::Tls(l, _) => Ok(l.local),
        }
    }

    /// Serves `router` until `shutdown` resolves, under the default
    /// [`ServeLimits`]; handlers read the peer with `ConnectInfo<Peer>`.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        self.serve_with(router, shutdown, ServeLimits::default())
            .await
    }

    /// As [`Bound::serve`], under `limits`. Once `shutdown` resolves no
    /// connection is accepted, every connection finishes the request it is
    /// serving and closes, and this returns when all are closed.
    pub async fn serve_with(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        limits: ServeLimits,
    ) -> io::Result<()> {
        match self {
            Bound::Plain(l, stats) => serve_connections(l, stats, router, shutdown, limits).await,
            Bound::Tls(l, stats) => serve_connections(l, stats, router, shutdown, limits).await,
        }
    }
}

/// The accept loop of [`Bound::serve_with`]: a permit of the connection
/// semaphore before each accept, one task per connection.
async fn serve_connections<L>(
    mut listener: L,
    stats: Arc<HandshakeStats>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> io::Result<()>
where
    L: Listener<Addr = Peer>,
{
    let max = limits.max_connections.clamp(1, 1 << 20);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let (closing, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            c = listener.accept() => c,
        };
        let (http, router) = (http.clone(), router.clone());
        stats.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(Arc::new(Held {
            _permit: permit,
            stats: stats.clone(),
            closing: closing.subscribe(),
        }));
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let request_slot = slot.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                req.extensions_mut().insert(request_slot.clone());
                let mut router = router.clone();
                // Router is always ready: `call` without `poll_ready` is fine.
                async move { tower_service::Service::call(&mut router, req).await }
            });
            let conn = http
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        // A header timeout, a reset or a malformed request:
                        // the connection is over either way.
                        if let Err(e) = r {
                            tracing::debug!("connection closed: {e}");
                        }
                        break;
                    }
                    _ = closing.changed(), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            // An upgraded connection lives on in whoever took the upgrade,
            // with a clone of the slot.
            drop(slot);
        });
    }
    // Stop accepting, ask every connection to finish, and wait for all:
    // each holds a permit until it ends.
    drop(listener);
    let _ = closing.send(true);
    let _all = permits
        .acquire_many(max as u32)
        .await
        .expect("the semaphore is never closed");
    Ok(())
}

/// Why [`Bound::bind`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0}")]
    Listen(io::Error),
    #[error("{0}")]
    Tls(crate::Error),
}
