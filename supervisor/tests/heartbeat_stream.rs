//! The agents' heartbeat stream (`GET /v1/agent/stream`, upgraded to
//! frames) against a real replica with mutual TLS: heartbeats answered
//! frame by frame on one connection, the unary endpoint's refusals as
//! error frames that end the stream, the upgrade refused to anyone but an
//! agent, and a real agent keeping one stream for all its heartbeats.

use std::sync::Arc;
use std::time::Duration;

use proto::heartbeat::{
    Heartbeat, HeartbeatReply, MAX_HEARTBEAT_BYTES, ModuleTable, PackedStatuses, ReplyOutcome,
};
use reqwest::StatusCode;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::prom::Metrics;
use testkit::supervisors::Supervisors;
use testkit::{Certs, eventually, free_addr};
use tls::frames::{self, Kind};
use tls::{Role, Tls};
use tokio::io::{AsyncWriteExt, BufStream};

const T: Duration = Duration::from_secs(30);

type Stream = BufStream<reqwest::Upgraded>;

fn client(tls: &Arc<Tls>) -> reqwest::Client {
    tls::client::http_builder(Some(tls), &[Role::Supervisor])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Asks `addr` for the stream as `tls`: the upgraded connection, or the
/// status and body of the refusal.
async fn open(tls: &Arc<Tls>, addr: &str, upgrade: bool) -> Result<Stream, (StatusCode, String)> {
    let mut req = client(tls).get(format!("https://{addr}{}", frames::PATH));
    if upgrade {
        req = req
            .header("connection", "upgrade")
            .header("upgrade", frames::PROTOCOL);
    }
    let resp = req.send().await.expect("request");
    match resp.status() {
        StatusCode::SWITCHING_PROTOCOLS => {
            Ok(BufStream::new(resp.upgrade().await.expect("upgrade")))
        }
        status => Err((status, resp.text().await.expect("body"))),
    }
}

/// A heartbeat of `node` without modules, with its table on `seq` 2 (after
/// the leader asked for it).
fn heartbeat(node: &str, seq: u64) -> Vec<u8> {
    proto::encode(&Heartbeat {
        node: node.to_string(),
        incarnation: 1,
        seq,
        table_version: 1,
        table: (seq == 2).then(|| ModuleTable {
            addr: format!("{node}.test:7100"),
            labels: Default::default(),
            modules: vec![],
            cluster: 0,
        }),
        statuses: PackedStatuses::pack(&[]),
        reports: vec![],
    })
    .expect("encode")
}

/// Sends a frame and reads the answer frame.
async fn exchange(io: &mut Stream, kind: Kind, payload: &[u8]) -> (Kind, Vec<u8>) {
    frames::write(io, kind, payload).await.expect("write");
    tokio::time::timeout(T, frames::read(io, 64 << 20))
        .await
        .expect("an answer in time")
        .expect("a frame")
        .expect("not the end")
}

/// The stream ends (the replica closed it) within `T`.
async fn ends(io: &mut Stream) {
    let next = tokio::time::timeout(T, frames::read(io, 64 << 20))
        .await
        .expect("closed in time");
    assert!(
        !matches!(next, Ok(Some(_))),
        "nothing follows an error frame: {next:?}"
    );
}

/// A metric of the replica at `addr`, without labels (0 when absent).
async fn metric(certs: &Certs, addr: &str, name: &str) -> u64 {
    let text = client(&certs.operator())
        .get(format!("https://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let metrics = Metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    metrics.value(name, &[]).map_or(0, |v| v as u64)
}

/// The value of the metric `name` with `labels` on the agent's
/// `/metrics`, if it answers.
async fn agent_metric(agent: &AgentProc, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let text = tls::client::http_builder(agent.reader.as_ref(), &[Role::Agent])
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(format!("https://{}/metrics", agent.listen))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let metrics = Metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    metrics.value(name, labels).map(|v| v as u64)
}

/// One replica with mutual TLS (nothing listens at its depmgr URL), and
/// the index of the leader it became.
async fn one_replica() -> (Arc<Certs>, Supervisors, usize) {
    let certs = Arc::new(Certs::new());
    let cluster = Supervisors::start_tls(
        1,
        &format!("https://{}", free_addr()),
        &[],
        Some(certs.clone()),
    )
    .await;
    let leader = cluster.wait_leader(T).await;
    (certs, cluster, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_on_a_stream_are_answered_in_order_and_refusals_end_it() {
    let (certs, cluster, leader) = one_replica().await;
    let addr = cluster.addrs[leader].clone();
    let a = certs.load(Role::Agent, "a");

    // Heartbeats of node a, as agent/a: each answered on the same stream.
    let mut io = open(&a, &addr, true).await.expect("the stream opens");
    for seq in 1..=3 {
        let (kind, reply) = exchange(&mut io, Kind::Heartbeat, &heartbeat("a", seq)).await;
        assert_eq!(kind, Kind::Reply);
        let reply: HeartbeatReply = proto::decode(&reply).expect("a reply");
        assert!(
            matches!(reply.outcome, ReplyOutcome::Accepted { .. }),
            "heartbeat {seq}: {:?}",
            reply.outcome
        );
        if seq == 1 {
            assert!(
                reply.need_table,
                "a new node's first heartbeat carried no table"
            );
        }
    }
    assert_eq!(
        metric(&certs, &addr, "supervisor_heartbeat_streams").await,
        1
    );
    // The table it carried registered the node.
    let admin = cluster.client_of(leader);
    eventually("node a registered", T, || async {
        admin
            .nodes()
            .await
            .ok()?
            .iter()
            .any(|n| n.id == "a")
            .then_some(())
    })
    .await;

    // A heartbeat of another node on a's stream: an error frame naming
    // the certificate it needs, and the stream ends.
    let (kind, why) = exchange(&mut io, Kind::Heartbeat, &heartbeat("b", 4)).await;
    assert_eq!(kind, Kind::Error);
    let why = String::from_utf8(why).expect("utf-8");
    assert!(why.contains("needs the certificate agent/b"), "{why}");
    ends(&mut io).await;

    // Bytes that are no heartbeat: named, and the end.
    let mut io = open(&a, &addr, true).await.expect("the stream opens");
    let (kind, why) = exchange(&mut io, Kind::Heartbeat, b"not a heartbeat").await;
    assert_eq!(kind, Kind::Error);
    assert!(
        String::from_utf8_lossy(&why).contains("heartbeat: cannot decode"),
        "{why:?}"
    );
    ends(&mut io).await;

    // A frame over the heartbeat limit is refused from its header, before
    // its payload is read.
    let mut io = open(&a, &addr, true).await.expect("the stream opens");
    io.write_all(&frames::header(Kind::Heartbeat, MAX_HEARTBEAT_BYTES + 1))
        .await
        .expect("write");
    io.flush().await.expect("flush");
    let (kind, why) = tokio::time::timeout(T, frames::read(&mut io, 1 << 20))
        .await
        .expect("in time")
        .expect("a frame")
        .expect("not the end");
    assert_eq!(kind, Kind::Error);
    let why = String::from_utf8_lossy(&why).to_string();
    assert!(
        why.contains(&format!("over the {MAX_HEARTBEAT_BYTES} bytes allowed")),
        "{why}"
    );
    ends(&mut io).await;

    // No upgrade asked: 400 naming the headers. Not an agent: 403.
    let (status, body) = open(&a, &addr, false).await.expect_err("refused");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Upgrade: supervisor-heartbeat/1"), "{body}");
    let (status, body) = open(&certs.operator(), &addr, true)
        .await
        .expect_err("refused");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("not an agent"), "{body}");

    // Every stream closed: none counted any more.
    eventually("no stream left open", T, || async {
        (metric(&certs, &addr, "supervisor_heartbeat_streams").await == 0).then_some(())
    })
    .await;
}

/// A real agent, default flags: its heartbeats go on one stream, kept
/// across many heartbeats (well past its request timeout); with
/// `--heartbeat-stream false` none is opened and it still registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_one_stream_for_its_heartbeats() {
    let (certs, cluster, leader) = one_replica().await;
    let addr = cluster.addrs[leader].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    for (node, stream) in [("streamer", true), ("poster", false)] {
        let data = dir.path().join(node);
        let mut args = AgentArgs::new(&data, &addr);
        args.node = node;
        args.certs = Some(certs.clone());
        args.extra = vec!["--heartbeat-stream".into(), stream.to_string()];
        let agent = AgentProc::spawn(args);
        // 100 ms heartbeats, 500 ms request timeout: 30 heartbeats are
        // six timeouts long.
        eventually("30 heartbeats answered", T, || async {
            let sent =
                agent_metric(&agent, "agent_heartbeats_total", &[("result", "sent")]).await?;
            (sent >= 30).then_some(())
        })
        .await;
        let opened = agent_metric(&agent, "agent_heartbeat_streams_opened_total", &[])
            .await
            .expect("the agent's metrics");
        assert_eq!(
            opened,
            u64::from(stream),
            "{node}: streams opened for 30 heartbeats to one leader"
        );
        let failed = agent_metric(&agent, "agent_heartbeats_total", &[("result", "failed")]).await;
        assert_eq!(failed, Some(0), "{node}: no heartbeat failed");
        // (The previous agent's stream closes as it stops.)
        eventually("the replica serves the agent's stream only", T, || async {
            let streams = metric(&certs, &addr, "supervisor_heartbeat_streams").await;
            (streams == u64::from(stream)).then_some(())
        })
        .await;
        let nodes = cluster.client_of(leader).nodes().await.expect("nodes");
        assert!(nodes.iter().any(|n| n.id == node), "{node} registered");
    }
}

/// A replica that crashes breaks its agents' streams: the agent opens a new
/// one once the replica is back, and heartbeats on it again, one stream,
/// no failure, not falling back to requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_opens_a_new_stream_after_the_replica_restarts() {
    let (certs, mut cluster, leader) = one_replica().await;
    let addr = cluster.addrs[leader].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("phoenix");
    let mut args = AgentArgs::new(&data, &addr);
    args.node = "phoenix";
    args.certs = Some(certs.clone());
    let agent = AgentProc::spawn(args);
    let sent = || agent_metric(&agent, "agent_heartbeats_total", &[("result", "sent")]);
    eventually("10 heartbeats answered", T, || async {
        (sent().await? >= 10).then_some(())
    })
    .await;
    assert_eq!(
        agent_metric(&agent, "agent_heartbeat_streams_opened_total", &[]).await,
        Some(1)
    );

    cluster.restart(leader);
    cluster.wait_leader(T).await;
    // Back on a stream: the replica serves one, and heartbeats are
    // answered again.
    eventually("the agent is back on a stream", T, || async {
        let streams = metric(&certs, &addr, "supervisor_heartbeat_streams").await;
        (streams == 1).then_some(())
    })
    .await;
    let opened = agent_metric(&agent, "agent_heartbeat_streams_opened_total", &[])
        .await
        .expect("the agent's metrics");
    assert!(opened >= 2, "{opened} streams opened across the restart");
    let failed = agent_metric(&agent, "agent_heartbeats_total", &[("result", "failed")])
        .await
        .unwrap_or(0);
    let before = sent().await.expect("the agent's metrics");
    eventually("20 more heartbeats answered", T, || async {
        (sent().await? >= before + 20).then_some(())
    })
    .await;
    // Kept: no other stream opened, no heartbeat failed since.
    assert_eq!(
        agent_metric(&agent, "agent_heartbeat_streams_opened_total", &[]).await,
        Some(opened)
    );
    assert_eq!(
        agent_metric(&agent, "agent_heartbeats_total", &[("result", "failed")])
            .await
            .unwrap_or(0),
        failed
    );
    assert_eq!(
        metric(&certs, &addr, "supervisor_heartbeat_streams").await,
        1
    );
}
