//! The serve loop's bounds against hostile clients, on a plaintext
//! listener (the loop is the same for TLS): a slow-loris client that sends
//! part of a request head and then nothing, a client that connects and
//! sends nothing, and more idle connections than the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tls::{Bound, HandshakeStats, Peer, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

/// Longest any condition below is waited for.
const DEADLINE: Duration = Duration::from_secs(20);

struct Server {
    addr: String,
    stats: Arc<HandshakeStats>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A plaintext server under `limits`: `/who` answers the peer's address,
/// `/wait` answers once `release` is notified.
async fn serve(limits: ServeLimits, release: Arc<Notify>) -> Server {
    let stats = Arc::new(HandshakeStats::default());
    let bound = Bound::bind("127.0.0.1:0", None, stats.clone())
        .await
        .expect("bind");
    let addr = bound.local_addr().expect("addr").to_string();
    let router = Router::new()
        .route(
            "/who",
            get(|ConnectInfo(peer): ConnectInfo<Peer>| async move { peer.addr.to_string() }),
        )
        .route(
            "/wait",
            get(move || async move {
                release.notified().await;
                "released"
            }),
        );
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve_with(
        router,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));
    Server {
        addr,
        stats,
        stop: Some(stop),
        served,
    }
}

async fn get_text(addr: &str, path: &str) -> reqwest::Result<(reqwest::StatusCode, String)> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(DEADLINE)
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.text().await?))
}

/// Reads until the server closes the connection (EOF or reset); returns
/// how long that took from `since`, or panics after [`DEADLINE`].
async fn closed_by_server(conn: &mut TcpStream, since: Instant, what: &str) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((since + DEADLINE).into(), conn.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {DEADLINE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            // A 408 or similar before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Polls `cond` until it holds, or panics after [`DEADLINE`].
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn slow_loris_and_silent_clients_are_disconnected_after_the_header_timeout() {
    let header = Duration::from_millis(300);
    let s = serve(
        ServeLimits {
            header_read_timeout: header,
            max_connections: 64,
        },
        Arc::new(Notify::new()),
    )
    .await;

    // Part of a request head, then nothing.
    let started = Instant::now();
    let mut loris = TcpStream::connect(&s.addr).await.expect("connect");
    loris
        .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(&s.addr).await.expect("connect");

    let took = closed_by_server(&mut loris, started, "slow loris").await;
    assert!(took >= header, "closed after {took:?}, before the timeout");
    let took = closed_by_server(&mut silent, started, "silent client").await;
    assert!(took >= header, "closed after {took:?}, before the timeout");
    until("both connections released", || {
        s.stats.open_connections() == 0
    })
    .await;

    // A real request is served as before, with its peer.
    let (status, who) = get_text(&s.addr, "/who").await.expect("request");
    assert_eq!(status, 200);
    assert!(who.starts_with("127.0.0.1:"), "{who}");
}

#[tokio::test]
async fn beyond_the_connection_limit_a_request_waits_for_a_free_slot() {
    let s = serve(
        ServeLimits {
            // Long: the idle connections stay until the test closes one.
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
        },
        Arc::new(Notify::new()),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(&s.addr).await.expect("connect"));
    }
    until("two connections served", || s.stats.open_connections() == 2).await;

    let addr = s.addr.clone();
    let mut request = tokio::spawn(async move { get_text(&addr, "/who").await });
    // A served request answers in milliseconds; this one is not accepted.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut request)
            .await
            .is_err(),
        "a third connection was served beyond the limit of 2"
    );
    assert_eq!(s.stats.open_connections(), 2);

    // A slot frees: the waiting request is accepted and served.
    drop(idle.pop());
    let (status, _) = tokio::time::timeout(DEADLINE, request)
        .await
        .expect("served once a slot was free")
        .expect("task")
        .expect("request");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idle_connections_beyond_the_limit_delay_a_request_by_at_most_the_header_timeout() {
    let header = Duration::from_millis(500);
    let s = serve(
        ServeLimits {
            header_read_timeout: header,
            max_connections: 3,
        },
        Arc::new(Notify::new()),
    )
    .await;
    // N + 1 connections that never send a byte, held open by the client.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&s.addr).await.expect("connect"));
    }
    until("the limit is full", || s.stats.open_connections() == 3).await;
    let started = Instant::now();
    let (status, _) = get_text(&s.addr, "/who").await.expect("request");
    assert_eq!(status, 200);
    // Served once the idle ones timed out: about one header timeout (the
    // fourth idle connection was queued first and times out too, in the
    // next slot), well within twice it plus scheduling.
    assert!(
        started.elapsed() < 2 * header + Duration::from_secs(5),
        "served after {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test]
async fn shutdown_lets_the_request_under_way_finish_then_returns() {
    let release = Arc::new(Notify::new());
    let mut s = serve(ServeLimits::default(), release.clone()).await;
    let addr = s.addr.clone();
    let request = tokio::spawn(async move { get_text(&addr, "/wait").await });
    until("the request is under way", || {
        s.stats.open_connections() == 1
    })
    .await;

    s.stop
        .take()
        .expect("stop")
        .send(())
        .expect("server running");
    // New connections are no longer accepted once the loop stopped.
    let addr = s.addr.clone();
    until("the listener is closed", || {
        std::net::TcpStream::connect(&addr).is_err()
    })
    .await;
    assert!(!s.served.is_finished(), "returned with a request under way");

    release.notify_one();
    let (status, text) = tokio::time::timeout(DEADLINE, request)
        .await
        .expect("answered")
        .expect("task")
        .expect("request");
    assert_eq!((status.as_u16(), text.as_str()), (200, "released"));
    tokio::time::timeout(DEADLINE, s.served)
        .await
        .expect("serve returned after the last connection closed")
        .expect("task")
        .expect("serve");
}
