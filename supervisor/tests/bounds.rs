//! Every input bounded, against real replicas (plaintext on loopback,
//! where the Raft routes are open to any caller): a snapshot chunk at a
//! forged offset, short bodies whose length prefixes claim 512 MiB on
//! every binary endpoint, heartbeat bodies over the heartbeat limit (with
//! and without a declared length), deploys past the state cap, and
//! connections past `--max-connections`.

use std::time::{Duration, Instant};

use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};
use proto::heartbeat::{Heartbeat, MAX_HEARTBEAT_BYTES, MAX_HEARTBEAT_ENCODED};
use reqwest::StatusCode;
use supervisor::raft::typ::{AppendEntriesRequest, InstallSnapshotRequest};
use testkit::supervisors::Supervisors;
use testkit::{eventually, free_addr};

const T: Duration = Duration::from_secs(30);

async fn post(addr: &str, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(20))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path} at {addr}: {e}"));
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

async fn healthy(addr: &str) -> bool {
    healthy_within(addr, Duration::from_secs(5)).await
}

/// A chunk of a snapshot the leader of `term` (`leader`) would send.
fn snapshot_chunk(term: u64, leader: u64, id: &str, offset: u64, data: Vec<u8>) -> Vec<u8> {
    let req = InstallSnapshotRequest {
        vote: Vote::new_committed(term, leader),
        meta: openraft::SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(term, leader), 1 << 20)),
            last_membership: StoredMembership::default(),
            snapshot_id: id.into(),
        },
        offset,
        data,
        done: false,
    };
    proto::encode(&req).expect("encode")
}

/// `blob` with the length prefix of the string `marker` (shorter than 251
/// bytes, one varint byte) replaced by a claim of 512 MiB, cut after the
/// claim: a short body that claims far more than it holds.
fn claim_512_mib(blob: &[u8], marker: &str) -> Vec<u8> {
    let mut needle = vec![marker.len() as u8];
    needle.extend_from_slice(marker.as_bytes());
    let at = blob
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("marker in blob");
    let mut out = blob[..at].to_vec();
    out.push(0xFC);
    out.extend_from_slice(&(512u32 << 20).to_le_bytes());
    out.extend_from_slice(marker.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunk_beyond_the_limit_is_refused_and_the_replica_lives() {
    let depmgr = format!("http://{}", free_addr());
    let cluster = Supervisors::start(3, &depmgr).await;
    let leader = cluster.wait_leader(T).await;
    let before = cluster.view(leader).await.expect("view");
    let leader_id = before.leader.expect("leader");
    let follower = (leader + 1) % 3;
    let addr = &cluster.addrs[follower];

    // The vote of the real leader, so openraft would take the chunk.
    for (offset, len) in [(1u64 << 40, 16usize), (u64::MAX, 1), ((512 << 20) - 8, 16)] {
        let body = snapshot_chunk(before.term, leader_id, "bomb", offset, vec![0; len]);
        let (status, text) = post(addr, "/raft/snapshot", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "offset {offset}: {text}");
        assert!(
            text.contains("\"error\"")
                && text.contains("snapshot limit")
                && text.contains(&offset.to_string()),
            "offset {offset}: {text}"
        );
    }

    // The follower still serves and follows the same leader.
    assert!(
        healthy(addr).await,
        "the follower stopped answering /health"
    );
    eventually("the follower still follows the leader", T, || async {
        let v = cluster.view(follower).await?;
        (v.leader == Some(leader_id)).then_some(())
    })
    .await;
    assert_eq!(cluster.view(leader).await.expect("view").term, before.term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_bodies_claiming_512_mib_are_refused_quickly() {
    let depmgr = format!("http://{}", free_addr());
    let cluster = Supervisors::start(1, &depmgr).await;
    let addr = &cluster.addrs[0];

    let hb = proto::heartbeat::Heartbeat {
        node: "nodeQQ".into(),
        incarnation: 1,
        seq: 1,
        table_version: 0,
        table: None,
        statuses: Default::default(),
        reports: vec![],
    };
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let mut append = proto::encode(&append).expect("encode");
    // The entries' count (the byte after the vote and prev_log_id): 512 Mi.
    append.truncate(append.len() - 2);
    append.push(0xFC);
    append.extend_from_slice(&(512u32 << 20).to_le_bytes());

    let bodies = [
        (
            "/v1/agent/heartbeat",
            claim_512_mib(&proto::encode(&hb).expect("encode"), "nodeQQ"),
        ),
        (
            "/raft/snapshot",
            claim_512_mib(&snapshot_chunk(1, 1, "QQQQ", 0, vec![]), "QQQQ"),
        ),
        ("/raft/append", append),
    ];
    for (path, body) in bodies {
        assert!(body.len() < 64, "{path}: {} bytes", body.len());
        let started = Instant::now();
        let (status, text) = post(addr, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        assert!(text.contains("\"error\""), "{path}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    assert!(healthy(addr).await, "the replica stopped answering /health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_have_their_own_body_limit_far_below_the_admin_one() {
    let depmgr = format!("http://{}", free_addr());
    let cluster = Supervisors::start(1, &depmgr).await;
    let addr = &cluster.addrs[0];

    // The largest legitimate heartbeat passes the limit.
    let blob = proto::encode(&Heartbeat::largest()).expect("encode");
    assert_eq!(blob.len(), MAX_HEARTBEAT_ENCODED);
    let (status, text) = post(addr, "/v1/agent/heartbeat", blob).await;
    assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);

    // One byte over it, far under --max-body (4 MiB): refused, naming the
    // limit, with a declared length and without one (chunked).
    let needle = format!("over the heartbeat limit of {MAX_HEARTBEAT_BYTES} bytes");
    let over = vec![0u8; MAX_HEARTBEAT_BYTES + 1];
    let (status, text) = post(addr, "/v1/agent/heartbeat", over.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains(&needle), "{text}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/agent/heartbeat"))
        .timeout(Duration::from_secs(20))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("chunked POST");
    assert!(resp.content_length().is_some_and(|n| n > 0));
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains(&needle), "{text}");
    assert!(healthy(addr).await, "the replica stopped answering /health");
}

async fn deploy(addr: &str, name: &str) -> (StatusCode, String) {
    let spec = serde_json::json!({"name": name, "package": {"name": "p", "version": "1.0.0"}});
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/modules"))
        .timeout(Duration::from_secs(20))
        .json(&spec)
        .send()
        .await
        .expect("POST /v1/modules");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_past_the_state_cap_is_refused_before_it_is_proposed() {
    let depmgr = format!("http://{}", free_addr());
    let cap = 8000;
    let cluster =
        Supervisors::start_with(1, &depmgr, &["--max-state-bytes", &cap.to_string()]).await;
    let addr = &cluster.addrs[0];

    let mut refused = None;
    for i in 0..500 {
        let name = format!("m{i}");
        let (status, text) = deploy(addr, &name).await;
        if status == StatusCode::CONFLICT {
            refused = Some((i, name, text));
            break;
        }
        assert_eq!(status, StatusCode::CREATED, "{name}: {text}");
    }
    let (i, name, text) = refused.expect("no deploy refused under a cap of 8000 bytes");
    assert!(i >= 5, "refused the {i}th deploy already: {text}");
    let error: proto::ErrorBody = serde_json::from_str(&text).expect("a JSON error");
    assert!(
        error.error.contains(&format!("module {name:?}"))
            && error
                .error
                .contains(&format!("the limit of {cap} bytes (--max-state-bytes)")),
        "{text}"
    );
    // Not proposed: the module does not exist.
    let resp = reqwest::get(format!("http://{addr}/v1/modules/{name}"))
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Removing modules makes room again (each remove also records an
    // event: it frees about 13 bytes net of a 40-byte record).
    for m in 0..20 {
        let resp = reqwest::Client::new()
            .delete(format!("http://{addr}/v1/modules/m{m}"))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let (status, text) = deploy(addr, &name).await;
    assert_eq!(status, StatusCode::CREATED, "after a remove: {text}");
}

/// Opens `n` TCP connections to `addr` that send nothing (each one an
/// agent's idle kept-alive connection, as far as the server can tell).
async fn idle_connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let c = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
        held.push(c);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_up_to_max_connections_and_a_fleet_fits_the_default() {
    // Two connections allowed: with two held open, a third request is not
    // served; once they close, it is.
    let s = Supervisors::start_with(1, "http://127.0.0.1:1", &["--max-connections", "2"]).await;
    let addr = s.addrs[0].clone();
    assert!(healthy(&addr).await);
    let held = idle_connections(&addr, 2).await;
    let started = Instant::now();
    assert!(
        !healthy_within(&addr, Duration::from_secs(2)).await,
        "a third connection was served beside two held ones with --max-connections 2"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    drop(held);
    eventually("served once the held connections closed", T, || async {
        healthy(&addr).await.then_some(())
    })
    .await;
    drop(s);

    // The default serves more than a thousand agents' connections at once
    // (the listener's own default is 1024): the 1,101st request is served
    // while 1,100 connections are held.
    let s = Supervisors::start_with(1, "http://127.0.0.1:1", &[]).await;
    let addr = s.addrs[0].clone();
    let held = idle_connections(&addr, 1100).await;
    assert!(
        healthy_within(&addr, Duration::from_secs(5)).await,
        "not served beside 1,100 held connections with the default --max-connections"
    );
    drop(held);
}

async fn healthy_within(addr: &str, timeout: Duration) -> bool {
    reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .timeout(timeout)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
