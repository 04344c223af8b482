//! TLS and authorization by identity, against real replicas holding real
//! certificates (made by `supctl ca` through `testkit::Certs`): forged Raft
//! RPCs, heartbeats for another node, the admin API's callers, plaintext
//! on the TLS port, certificate rotation and SIGHUP reload, and the
//! refusal to serve plaintext off loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::spec;
use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};
use reqwest::StatusCode;
use supervisor::raft::typ::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use testkit::fake_agent::FakeAgent;
use testkit::supervisors::Supervisors;
use testkit::{Certs, ProcessSet, Program, eventually, free_addr, free_port};
use tls::{Role, Tls, TlsFiles};

const T: Duration = Duration::from_secs(30);

/// depmgr's URL: nothing listens there (these tests deploy nothing that
/// needs a package; a deploy is accepted when depmgr cannot be reached).
fn depmgr_url() -> String {
    format!("https://{}", free_addr())
}

/// An HTTPS client presenting `tls` (`None`: no certificate, but the
/// server is still verified against the CA).
fn client(certs: &Certs, tls: Option<&Arc<Tls>>) -> reqwest::Client {
    let builder = match tls {
        Some(_) => tls::client::http_builder(tls, &[Role::Supervisor]),
        None => {
            let ca = std::fs::read(certs.ca()).expect("CA file");
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
                .https_only(true)
        }
    };
    builder
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Status and text of an answer.
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

async fn post_raft(
    http: &reqwest::Client,
    addr: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    send(
        http.post(format!("https://{addr}/raft/{path}"))
            .header("content-type", "application/octet-stream")
            .body(body),
    )
    .await
}

/// The value of the metric line `series` (`name` or `name{labels}`) of
/// the replica at `addr`.
async fn metric(certs: &Certs, addr: &str, series: &str) -> u64 {
    let (status, text) = send(client(certs, None).get(format!("https://{addr}/metrics"))).await;
    assert_eq!(status, StatusCode::OK, "/metrics is open: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Sum of `series` over every replica.
async fn metric_sum(certs: &Certs, cluster: &Supervisors, series: &str) -> u64 {
    let mut sum = 0;
    for addr in &cluster.addrs {
        sum += metric(certs, addr, series).await;
    }
    sum
}

/// The DER certificate the replica at `addr` serves to a new connection.
async fn served_certificate(certs: &Certs, addr: &str) -> Option<Vec<u8>> {
    let ca = std::fs::read(certs.ca()).expect("CA file");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let resp = http
        .get(format!("https://{addr}/health"))
        .send()
        .await
        .ok()?;
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// `role/name` issued by the cluster CA in a directory of its own: the
/// test kit keeps one file per name, and a replica holds `supervisor/1` as
/// `1.pem`.
fn issue_aside(certs: &Certs, dir: &std::path::Path, role: Role, name: &str) -> Arc<Tls> {
    std::fs::create_dir_all(dir).expect("dir");
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(certs.dir().join(f), dir.join(f)).expect("copy the CA");
    }
    let out = std::process::Command::new(testkit::bin("supctl"))
        .args(["ca", "issue"])
        .arg(dir)
        .args([role.as_str(), name])
        .output()
        .expect("supctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Tls::load(TlsFiles {
        ca: certs.ca(),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    })
    .expect("load")
}

/// Deploys `name` through `c`, retrying while leadership changes (a
/// conflict means an earlier try went through).
async fn deploy(c: &admin_api::AdminClient, name: &str) {
    eventually(&format!("{name} deployed"), T, || async {
        match c.deploy(&spec(name, None, 1)).await {
            Ok(_) => Some(()),
            Err(admin_api::ClientError::Api { status, .. }) if status == StatusCode::CONFLICT => {
                Some(())
            }
            Err(_) => None,
        }
    })
    .await;
}

/// The DER certificate in `role/name`'s files now.
fn certificate_on_disk(certs: &Certs, role: Role, name: &str) -> Vec<u8> {
    certs.load(role, name).current().cert[0].to_vec()
}

fn forged_append(term: u64, leader: u64) -> Vec<u8> {
    let req = AppendEntriesRequest {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    proto::encode(&req).expect("encode")
}

fn forged_vote(term: u64, candidate: u64) -> Vec<u8> {
    let req = VoteRequest {
        vote: Vote::new(term, candidate),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(term, candidate), 1 << 40)),
    };
    proto::encode(&req).expect("encode")
}

fn forged_snapshot(term: u64, leader: u64) -> Vec<u8> {
    let req = InstallSnapshotRequest {
        vote: Vote::new_committed(term, leader),
        meta: openraft::SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(term, leader), 1 << 40)),
            last_membership: StoredMembership::default(),
            snapshot_id: "forged".into(),
        },
        offset: 0,
        data: vec![],
        done: false,
    };
    proto::encode(&req).expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_rpcs_are_refused_and_change_nothing() {
    let certs = Arc::new(Certs::new());
    let cluster = Supervisors::start_tls(3, &depmgr_url(), &[], Some(certs.clone())).await;
    let leader = cluster.wait_leader(T).await;
    let before = cluster.view(leader).await.expect("cluster view");
    // Far above any term an election of this test could reach: a replica
    // that took the forgery would be at this term, led by the forger.
    let forged_term = before.term + 1_000_000;

    // A supervisor certificate of the CA, but not a member; and an agent
    // whose name is a member's id.
    let stranger = client(&certs, Some(&certs.load(Role::Supervisor, "9")));
    let aside = tempfile::tempdir().expect("dir");
    let agent = client(
        &certs,
        Some(&issue_aside(&certs, aside.path(), Role::Agent, "1")),
    );
    let anonymous = client(&certs, None);
    let mut refused = 0;
    for addr in &cluster.addrs {
        for (who, http, claims) in [
            ("supervisor/9", &stranger, 9),
            ("agent/1", &agent, 1),
            ("anonymous", &anonymous, 1),
        ] {
            for (path, body) in [
                ("append", forged_append(forged_term, claims)),
                ("vote", forged_vote(forged_term, claims)),
                ("snapshot", forged_snapshot(forged_term, claims)),
            ] {
                let (status, text) = post_raft(http, addr, path, body).await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{who} /raft/{path} at {addr}: {text}"
                );
                assert!(text.contains(who) && text.contains("\"error\""), "{text}");
                refused += 1;
            }
        }
    }

    // A member speaking for another member.
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let holder = cluster.ids[(i + 1) % 3];
        let claims = cluster.ids[(i + 2) % 3];
        let member = client(
            &certs,
            Some(&certs.load(Role::Supervisor, &holder.to_string())),
        );
        for (path, body) in [
            ("append", forged_append(forged_term, claims)),
            ("vote", forged_vote(forged_term, claims)),
            ("snapshot", forged_snapshot(forged_term, claims)),
        ] {
            let (status, text) = post_raft(&member, addr, path, body).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "supervisor/{holder} for {claims}: {text}"
            );
            assert!(
                text.contains(&format!("speaks for supervisor {claims}")),
                "{text}"
            );
            refused += 1;
        }
    }

    // No replica took the forged term or the forged leader.
    for i in 0..3 {
        let v = cluster.view(i).await.expect("cluster view");
        assert!(
            v.term < forged_term,
            "replica {} took the forged term: {v:?}",
            v.id
        );
        assert!(
            v.leader.is_some_and(|l| cluster.ids.contains(&l)),
            "replica {} follows no real leader: {v:?}",
            v.id
        );
    }
    let after = cluster
        .view(cluster.wait_leader(T).await)
        .await
        .expect("view");
    assert_eq!(
        (after.term, after.leader),
        (before.term, before.leader),
        "term and leader unchanged"
    );

    let counted = metric_sum(
        &certs,
        &cluster,
        "supervisor_auth_refused_total{surface=\"raft\"}",
    )
    .await;
    assert!(
        counted >= refused,
        "{counted} raft refusals counted, {refused} sent"
    );
    // The members still replicate to each other.
    deploy(&cluster.client(), "web").await;
    for i in 0..3 {
        eventually("the write applied on every replica", T, || async {
            let v = cluster.view(i).await?;
            (v.last_applied > after.last_applied).then_some(())
        })
        .await;
    }
}

async fn heartbeat_status(http: &reqwest::Client, addr: &str, node: &str) -> (StatusCode, String) {
    let hb = proto::heartbeat::Heartbeat {
        node: node.to_string(),
        incarnation: 1,
        seq: 1,
        table_version: 1,
        table: None,
        statuses: proto::heartbeat::PackedStatuses::pack(&[]),
        reports: vec![],
    };
    send(
        http.post(format!("https://{addr}/v1/agent/heartbeat"))
            .body(proto::encode(&hb).expect("encode")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_the_admin_api_by_identity() {
    let certs = Arc::new(Certs::new());
    let cluster = Supervisors::start_tls(
        3,
        &depmgr_url(),
        &["--admin-token", "adm", "--read-token", "rd"],
        Some(certs.clone()),
    )
    .await;
    let leader = cluster.wait_leader(T).await;
    let follower = (leader + 1) % 3;
    let handshakes_failed = "supervisor_tls_handshakes_failed_total";

    // (c) Heartbeats: a's certificate speaks for a only.
    let a_cert = certs.load(Role::Agent, "a");
    let a = FakeAgent::start_tls("a", cluster.addrs.clone(), Some(a_cert.clone()));
    let forger = FakeAgent::start_tls("b", cluster.addrs.clone(), Some(a_cert.clone()));
    let as_a = client(&certs, Some(&a_cert));
    for addr in &cluster.addrs {
        let (status, text) = heartbeat_status(&as_a, addr, "b").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        assert!(
            text.contains("agent/a") && text.contains("agent/b"),
            "{text}"
        );
        let (status, text) = heartbeat_status(&client(&certs, None), addr, "b").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "anonymous heartbeat: {text}");
        let (status, text) =
            heartbeat_status(&client(&certs, Some(&certs.operator())), addr, "b").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "operator heartbeat: {text}");
    }
    let ops = client(&certs, Some(&certs.operator()));
    let leader_addr = &cluster.addrs[leader];
    eventually("a ready while the forger is refused", T, || async {
        let (status, text) = send(ops.get(format!("https://{leader_addr}/v1/nodes"))).await;
        let nodes: Vec<admin_api::NodeView> = serde_json::from_str(&text).ok()?;
        assert_eq!(status, StatusCode::OK);
        assert!(!nodes.iter().any(|n| n.id == "b"), "b was observed: {text}");
        let a_ready = nodes.iter().any(|n| n.id == "a" && n.status == "ready");
        (a_ready && a.accepted() >= 3 && forger.http_errors() >= 10).then_some(())
    })
    .await;
    assert_eq!(forger.accepted(), 0);
    drop(forger);
    let (_, text) = send(ops.get(format!("https://{leader_addr}/v1/nodes"))).await;
    assert!(!text.contains("\"b\""), "b never appears: {text}");
    let hb_refused = metric_sum(
        &certs,
        &cluster,
        "supervisor_auth_refused_total{surface=\"heartbeat\"}",
    )
    .await;
    assert!(hb_refused >= 19, "{hb_refused} heartbeat refusals counted");

    // (d) The admin API.
    for i in [leader, follower] {
        let base = format!("https://{}", cluster.addrs[i]);
        let modules = format!("{base}/v1/modules");
        let anonymous = client(&certs, None);
        let (status, text) = send(anonymous.get(&modules)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert!(
            text.contains("the admin API needs an operator certificate or the admin token"),
            "{text}"
        );
        let (status, text) = send(anonymous.get(&modules).bearer_auth("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        let (status, text) = send(ops.get(&modules)).await;
        assert_eq!(status, StatusCode::OK, "operator: {text}");
        let (status, text) = send(anonymous.get(&modules).bearer_auth("adm")).await;
        assert_eq!(status, StatusCode::OK, "admin token: {text}");
        let (status, text) = send(anonymous.get(&modules).bearer_auth("rd")).await;
        assert_eq!(status, StatusCode::OK, "read token GET: {text}");
        let (status, text) = send(
            anonymous
                .post(&modules)
                .bearer_auth("rd")
                .header("content-type", "application/json")
                .body(spec("nope", None, 1).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "read token POST: {text}");
        for (who, tls) in [
            ("agent/a", certs.load(Role::Agent, "a")),
            ("depmgr/depmgr", certs.load(Role::Depmgr, "depmgr")),
            ("supervisor/9", certs.load(Role::Supervisor, "9")),
        ] {
            let (status, text) = send(client(&certs, Some(&tls)).get(&modules)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {text}");
            assert!(text.contains(who), "{text}");
        }
        // Open to anyone.
        for path in ["/health", "/metrics"] {
            let (status, _) = send(anonymous.get(format!("{base}{path}"))).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        // `/ready` too: 200 or 503 by the quorum, never a refusal.
        let (status, text) = send(anonymous.get(format!("{base}/ready"))).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "/ready: {status} {text}"
        );
    }
    // Writes through a follower: forwarded to the leader over TLS, where
    // the follower's certificate is admitted (an operator's request carries
    // no token), and with the token.
    let via_follower = format!("https://{}/v1/modules", cluster.addrs[follower]);
    for (name, req) in [
        ("by-operator", ops.post(&via_follower)),
        (
            "by-token",
            client(&certs, None).post(&via_follower).bearer_auth("adm"),
        ),
    ] {
        let (status, text) = send(
            req.header("content-type", "application/json")
                .body(spec(name, None, 1).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {text}");
    }
    let (status, text) = send(ops.get(format!("https://{leader_addr}/v1/modules"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("by-operator") && text.contains("by-token") && !text.contains("nope"),
        "{text}"
    );

    // (e) Plaintext on the TLS port fails and is counted; so are refusals.
    let addr = &cluster.addrs[follower];
    let failed_before = metric(&certs, addr, handshakes_failed).await;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let answer = plain.get(format!("http://{addr}/health")).send().await;
    assert!(answer.is_err(), "plaintext HTTP answered: {answer:?}");
    // supctl's client without the TLS flags says what is missing.
    let err = admin_api::AdminClient::new(vec![addr.clone()], None)
        .with_timeout(Duration::from_secs(10))
        .cluster()
        .await
        .expect_err("a plaintext admin client against TLS");
    assert!(
        err.to_string().contains("answered in TLS: give --tls-ca"),
        "{err}"
    );
    eventually("the failed handshake counted", T, || async {
        (metric(&certs, addr, handshakes_failed).await > failed_before).then_some(())
    })
    .await;
    assert!(metric(&certs, addr, "supervisor_tls_handshakes_total").await > failed_before);
    assert!(
        metric(
            &certs,
            addr,
            "supervisor_auth_refused_total{surface=\"admin\"}"
        )
        .await
            >= 6,
        "admin refusals counted"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_rejoins_and_sighup_reloads() {
    let certs = Arc::new(Certs::new());
    let mut cluster = Supervisors::start_tls(3, &depmgr_url(), &[], Some(certs.clone())).await;
    let c = cluster.client();
    deploy(&c, "before").await;

    // (f) Replica 2 restarts with a new certificate and catches up.
    let two = cluster
        .ids
        .iter()
        .position(|id| *id == 2)
        .expect("replica 2");
    let old_two = certificate_on_disk(&certs, Role::Supervisor, "2");
    certs.reissue(Role::Supervisor, "2", &[]);
    let new_two = certificate_on_disk(&certs, Role::Supervisor, "2");
    assert_ne!(old_two, new_two);
    cluster.restart(two);
    deploy(&c, "after").await;
    let leader = cluster.wait_leader(T).await;
    let target = cluster.view(leader).await.expect("view").last_applied;
    eventually("replica 2 names the leader and catches up", T, || async {
        let v = cluster.view(two).await?;
        (v.leader == Some(cluster.ids[leader]) && v.last_applied >= target).then_some(())
    })
    .await;
    assert_eq!(
        served_certificate(&certs, &cluster.addrs[two]).await,
        Some(new_two)
    );

    // (g) Replica 1 reloads its certificate on SIGHUP, for new connections.
    let one = cluster
        .ids
        .iter()
        .position(|id| *id == 1)
        .expect("replica 1");
    let addr = cluster.addrs[one].clone();
    let old_one = certificate_on_disk(&certs, Role::Supervisor, "1");
    assert_eq!(
        served_certificate(&certs, &addr).await.as_ref(),
        Some(&old_one)
    );
    certs.reissue(Role::Supervisor, "1", &[]);
    let new_one = certificate_on_disk(&certs, Role::Supervisor, "1");
    assert_ne!(old_one, new_one);
    assert_eq!(
        served_certificate(&certs, &addr).await.as_ref(),
        Some(&old_one),
        "the new files are not used before SIGHUP"
    );
    let pid = cluster.pid(one).expect("replica 1 runs");
    testkit::process::signal(pid, nix::sys::signal::Signal::SIGHUP);
    eventually("replica 1 serves its new certificate", T, || async {
        (served_certificate(&certs, &addr).await? == new_one).then_some(())
    })
    .await;
    assert_eq!(cluster.pid(one), Some(pid), "the same process");
    assert!(cluster.log(one).contains("TLS certificate reloaded"));
    // Still a member: it applies new writes.
    deploy(&c, "reloaded").await;
    let leader = cluster.wait_leader(T).await;
    let target = cluster.view(leader).await.expect("view").last_applied;
    eventually("replica 1 applies after the reload", T, || async {
        (cluster.view(one).await?.last_applied >= target).then_some(())
    })
    .await;
}

/// The leader every answering replica among `live` names, when they agree.
async fn agreed_leader(cluster: &Supervisors, live: &[usize]) -> Option<u64> {
    let mut leaders = std::collections::BTreeSet::new();
    for i in live {
        leaders.insert(cluster.view(*i).await?.leader?);
    }
    (leaders.len() == 1).then(|| leaders.first().copied())?
}

/// `POST /v1/cluster/members` (or `DELETE .../{id}` when `add` is false),
/// retried while leadership moves; done when it went through earlier.
async fn membership_change(c: &admin_api::AdminClient, id: u64, add: Option<&str>) {
    let body = add.map(|addr| serde_json::json!({"id": id, "addr": addr}));
    let (method, path, done) = match add {
        Some(_) => (
            reqwest::Method::POST,
            "/v1/cluster/members".to_string(),
            StatusCode::CONFLICT,
        ),
        None => (
            reqwest::Method::DELETE,
            format!("/v1/cluster/members/{id}"),
            StatusCode::NOT_FOUND,
        ),
    };
    eventually(&format!("{method} supervisor {id}"), T, || async {
        match c
            .request::<_, serde_json::Value>(method.clone(), &path, body.as_ref())
            .await
        {
            Ok(_) => Some(()),
            Err(admin_api::ClientError::Api { status, .. }) if status == done => Some(()),
            Err(_) => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_membership_change_follows_a_leader_it_did_not_know() {
    let certs = Arc::new(Certs::new());
    let mut cluster = Supervisors::start_tls(3, &depmgr_url(), &[], Some(certs.clone())).await;
    let c = cluster.client();
    deploy(&c, "before").await;

    // A follower (the laggard) is down while 4, 5 and 6 join and the
    // leader of that time leaves: the laggard knows {1, 2, 3} only, and of
    // those only the other follower still runs.
    let leader = cluster.wait_leader(T).await;
    let laggard = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(laggard);
    for id in [4u64, 5, 6] {
        let i = cluster.add(id);
        let addr = cluster.addrs[i].clone();
        membership_change(&c, id, Some(&addr)).await;
    }
    membership_change(&c, cluster.ids[leader], None).await;
    cluster.kill(leader);

    // A new member leads: with the other follower paused, only 4, 5 and 6
    // can elect (three of {other, laggard, 4, 5, 6}). A paused follower
    // sends no appends of its own when it resumes.
    let newcomers = [3usize, 4, 5];
    let pid = cluster.pid(other).expect("the other follower runs");
    testkit::process::signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let new_leader = eventually("4, 5 and 6 elect one of them", T, || async {
        agreed_leader(&cluster, &newcomers)
            .await
            .filter(|l| *l >= 4)
    })
    .await;
    testkit::process::signal(pid, nix::sys::signal::Signal::SIGCONT);
    let live = [other, 3, 4, 5];
    eventually("the other follower names the new leader", T, || async {
        agreed_leader(&cluster, &live).await.filter(|l| *l >= 4)
    })
    .await;
    deploy(&c, "while-the-laggard-was-down").await;
    let target = {
        let l = cluster
            .ids
            .iter()
            .position(|x| *x == new_leader)
            .expect("leader index");
        cluster.view(l).await.expect("view").last_applied
    };

    // The laggard comes back knowing {1, 2, 3} only: the other follower
    // vouches for the members it does not know, and it catches up from
    // them (the only replicas with the log it lacks that are not paused
    // followers of its own era).
    let known: Vec<u64> = cluster.ids[..3].to_vec();
    cluster.restart_knowing(laggard, &known);
    eventually("the laggard catches up and names a leader", T, || async {
        let v = cluster.view(laggard).await?;
        (v.last_applied >= target && v.leader.is_some_and(|l| l >= 4)).then_some(())
    })
    .await;
    let v = cluster.view(laggard).await.expect("view of the laggard");
    let mut ids: Vec<u64> = v.members.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want: Vec<u64> = [cluster.ids[laggard], cluster.ids[other], 4, 5, 6].to_vec();
    want.sort();
    assert_eq!(ids, want, "{v:?}");
    let log = cluster.log(laggard);
    let vouched = format!(
        "admitted for Raft: a member of supervisor {}'s membership",
        cluster.ids[other]
    );
    assert!(
        log.contains(&vouched),
        "the laggard admitted the new members on the other follower's word:\n{}",
        cluster.log_tail(laggard, 40)
    );
}

fn run_supervisor(args: &[String]) -> (Option<i32>, String) {
    // A supervisor that starts instead of refusing is killed (and the
    // test fails) after 20 s.
    let out = testkit::process::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_supervisor")).args(args),
        Duration::from_secs(20),
    )
    .expect("the supervisor exits by itself");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn args(listen: &str, data_dir: &std::path::Path, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--id",
        "1",
        "--listen",
        listen,
        "--peers",
        &format!("1={listen}"),
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(data_dir.display().to_string());
    a.extend(extra.iter().cloned());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_only_on_loopback_and_certificates_checked_at_start() {
    let tmp = tempfile::tempdir().expect("dir");
    let data = tmp.path().join("data");
    let port = free_port();
    let everywhere = format!("0.0.0.0:{port}");

    let (code, err) = run_supervisor(&args(&everywhere, &data, &[]));
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure"),
        "{err}"
    );
    assert!(!data.exists(), "nothing made on disk");

    // The wrong certificate, or an http:// depmgr with TLS, or only some
    // of the flags: exit 2, one line, the data dir untouched.
    let certs = Certs::new();
    let loopback = free_addr();
    let https = ["--depmgr".to_string(), depmgr_url()];
    for (extra, expect) in [
        (
            [certs.flags(Role::Supervisor, "2"), https.to_vec()].concat(),
            "the certificate names supervisor/2, but this supervisor (--id 1) needs the certificate supervisor/1",
        ),
        (
            [certs.flags(Role::Agent, "a"), https.to_vec()].concat(),
            "the certificate names agent/a, but this supervisor (--id 1) needs the certificate supervisor/1",
        ),
        (
            [
                certs.flags(Role::Supervisor, "1"),
                vec!["--depmgr".into(), "http://127.0.0.1:7000".into()],
            ]
            .concat(),
            "must be an https:// URL",
        ),
        (
            certs.flags(Role::Supervisor, "1")[..4].to_vec(),
            "missing --tls-key",
        ),
    ] {
        let (code, err) = run_supervisor(&args(&loopback, &data, &extra));
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{expect:?} not in {err}");
        assert!(!data.exists(), "nothing made on disk: {err}");
    }

    // With --insecure it serves plaintext on every address.
    let mut procs = ProcessSet::new(tmp.path().join("logs"));
    let program = Program::new(env!("CARGO_BIN_EXE_supervisor")).args(args(
        &everywhere,
        &data,
        &["--insecure".into()],
    ));
    procs.spawn("s1", program).expect("spawn");
    let http = reqwest::Client::new();
    eventually("the --insecure replica answers", T, || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}
