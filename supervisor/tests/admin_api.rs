//! The admin API over real HTTP against a 3-replica cluster: every endpoint,
//! every bad-input case, forwarding from followers, membership changes.

mod common;

use std::time::Duration;

use common::spec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::eventually;
use testkit::fake_agent::FakeAgent;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::supervisors::{Supervisors, wait_module};

const T: Duration = Duration::from_secs(30);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_every_bad_input() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::start(3, &depmgr.url).await;
    let _agents: Vec<FakeAgent> = ["a", "b"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    let leader = cluster.wait_leader(T).await;
    let follower = (leader + 1) % 3;
    let api = Api::new(&cluster.addrs[follower]); // everything through a follower
    eventually("both nodes registered", T, || async {
        let (_, v) = api.get("/v1/nodes").await;
        (v.as_array()?.len() == 2).then_some(())
    })
    .await;

    // Cluster view from every replica agrees on the leader.
    for i in 0..3 {
        let (s, v) = Api::new(&cluster.addrs[i]).get("/v1/cluster").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["leader"], json!(cluster.ids[leader]));
        assert_eq!(v["members"].as_array().unwrap().len(), 3);
        assert!(v["term"].as_u64().unwrap() >= 1 && v["last_applied"].as_u64().unwrap() >= 1);
    }

    // Deploy (forwarded to the leader), then the module views.
    let (s, v) = api
        .post("/v1/modules", &spec("web", Some("a"), 2).to_string())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "web");
    let epoch = v["epoch"].as_u64().expect("epoch");
    let (s, v) = api.get("/v1/modules/web").await;
    assert_eq!(s, StatusCode::OK);
    for field in [
        "name",
        "node",
        "epoch",
        "state",
        "restore_attempts",
        "failovers",
        "package",
    ] {
        assert!(v.get(field).is_some(), "module view lacks {field}: {v}");
    }
    assert_eq!(v["package"], json!({"name": "web", "version": "1.0.0"}));
    let (s, v) = api.get("/v1/modules").await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (s, v) = api.get("/v1/modules?stale=true").await;
    assert_eq!(
        (s, v.as_array().unwrap().len()),
        (StatusCode::OK, 1),
        "stale read from the follower"
    );

    // Bad module specs: each refused with a message naming the problem.
    let base = spec("bad", None, 2);
    let mut cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "module spec"),
        (
            json!({"name": "x"}).to_string(),
            StatusCode::BAD_REQUEST,
            "package",
        ),
        (
            spec("web", None, 2).to_string(),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            spec("pinned", Some("nowhere"), 2).to_string(),
            StatusCode::NOT_FOUND,
            "placement.node",
        ),
        (
            spec("zero", None, 0).to_string(),
            StatusCode::BAD_REQUEST,
            "restart.attempts",
        ),
        (
            spec("bad name!", None, 2).to_string(),
            StatusCode::BAD_REQUEST,
            "module name",
        ),
    ];
    let mut unknown = base.clone();
    unknown["package"]["flavour"] = json!("x");
    cases.push((unknown.to_string(), StatusCode::BAD_REQUEST, "flavour"));
    let mut badver = base.clone();
    badver["package"]["version"] = json!("one");
    cases.push((badver.to_string(), StatusCode::BAD_REQUEST, "version"));
    let mut fencing = base.clone();
    fencing["fencing"] = json!("sometimes");
    cases.push((fencing.to_string(), StatusCode::BAD_REQUEST, "fencing"));
    for (body, status, needle) in &cases {
        let (s, v) = api.post("/v1/modules", body).await;
        assert_eq!(s, *status, "{body} → {v}");
        assert!(
            error_of(&v).contains(needle),
            "{body}: {v} should name {needle}"
        );
    }
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(5 << 20));
    let (s, _) = api.post("/v1/modules", &huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing was half-applied.
    let (_, v) = api.get("/v1/modules").await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    // Unknown names.
    let (s, v) = api.get("/v1/modules/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("nope"));
    let (s, _) = api.delete("/v1/modules/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.post("/v1/nodes/nowhere/drain", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unknown paths, wrong methods and malformed queries answer JSON errors
    // too, naming the problem.
    let (s, v) = api.get("/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("/v1/nope"), "{v}");
    let (s, v) = api.delete("/v1/events").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(&v).contains("DELETE"), "{v}");
    let (s, v) = api.get("/v1/events?after=x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("after"), "{v}");

    // Events: oldest first, `after` filters.
    let (s, v) = api.get("/v1/events").await;
    assert_eq!(s, StatusCode::OK);
    let events = v.as_array().unwrap().clone();
    assert!(events.len() >= 3);
    let idx: Vec<u64> = events
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    let (_, later) = api.get(&format!("/v1/events?after={}", idx[1])).await;
    // Events recorded since (e.g. a package pre-staged) may follow.
    let later = later.as_array().unwrap();
    assert!(later.len() >= events.len() - 2);
    assert_eq!(&later[..events.len() - 2], &events[2..]);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "module_deployed" && e["module"] == "web")
    );

    // Nodes and drain.
    let (s, v) = api.get("/v1/nodes").await;
    assert_eq!(s, StatusCode::OK);
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "a")
        .expect("node a")
        .clone();
    assert_eq!(a["status"], "ready");
    assert_eq!(a["addr"], "a.test:7100");
    let c = cluster.client();
    wait_module(&c, "web", "web running", T, |m| m.state == "running").await;
    let (s, v) = api.post("/v1/nodes/a/drain", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = api.post("/v1/nodes/a/drain", "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    let moved = wait_module(&c, "web", "web drained to b", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("b")
    })
    .await;
    assert!(moved.epoch > Some(epoch));
    assert_eq!(moved.failovers, 0, "a drain is not a failure");
    let (_, v) = api.get("/v1/nodes").await;
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "a")
        .expect("node a")
        .clone();
    assert_eq!(a["status"], "draining");
    assert_eq!(a["modules"], json!([]));

    // Remove: `stopped` until b's agent has stopped its copy, then gone.
    let (s, v) = api.delete("/v1/modules/web").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["removed"].clone(), v["state"].clone()),
        (json!(true), json!("stopped")),
        "{v}"
    );
    assert_eq!(v["waiting_for"], json!(["b"]), "{v}");
    eventually("web gone once b stopped it", T, || async {
        let (s, _) = api.get("/v1/modules/web").await;
        (s == StatusCode::NOT_FOUND).then_some(())
    })
    .await;

    // Malformed heartbeats are refused without disturbing the cluster.
    let (s, v) = api.post("/v1/agent/heartbeat", "garbage").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("heartbeat"));

    // Health and metrics.
    let (s, _) = api.get("/health").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().expect("text");
    assert!(
        text.contains("supervisor_term") && text.contains("supervisor_heartbeats_total"),
        "{text}"
    );

    // Membership: add a fourth replica (learner, then voter), remove one.
    let (s, v) = api.post("/v1/cluster/members", "{\"id\": 4}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .post(
            "/v1/cluster/members",
            &json!({"id": 4, "addr": "nohost"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let i4 = cluster.add(4);
    let (s, v) = api
        .post(
            "/v1/cluster/members",
            &json!({"id": 4, "addr": cluster.addrs[i4]}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api.get("/v1/cluster").await;
    let voters = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, 4, "{v}");
    let (s, v) = api
        .post(
            "/v1/cluster/members",
            &json!({"id": 4, "addr": cluster.addrs[i4]}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let victim = cluster.ids[follower];
    // The new replica learns who leads and where (it forwards there once it
    // has applied the membership naming the leader's address).
    eventually("the new replica knows the leader's address", T, || async {
        cluster.view(i4).await?.leader_addr
    })
    .await;
    let (s, v) = Api::new(&cluster.addrs[i4])
        .delete(&format!("/v1/cluster/members/{victim}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = Api::new(&cluster.addrs[i4])
        .delete("/v1/cluster/members/99")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    cluster.kill(follower);
    // The cluster keeps serving writes with the new member set.
    let c4 = cluster.client_of(i4);
    let d = eventually("deploy after membership change", T, || async {
        c4.deploy(&spec("api", None, 2)).await.ok()
    })
    .await;
    assert_eq!(d.name, "api");
    let (_, v) = Api::new(&cluster.addrs[i4]).get("/v1/cluster").await;
    let ids: Vec<u64> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&victim) && ids.contains(&4), "{v}");
}

/// The kinds of the events about `module` or `node` (`None`: any), oldest
/// first.
async fn kinds_of(api: &Api, module: Option<&str>, node: Option<&str>) -> Vec<String> {
    let (_, v) = api.get("/v1/events?after=0&limit=10000").await;
    v.as_array()
        .expect("events")
        .iter()
        .filter(|e| module.is_none_or(|m| e["module"] == m))
        .filter(|e| node.is_none_or(|n| e["node"] == n))
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect()
}

/// The operator's ways back over HTTP: undrain, reset, forgetting a down
/// node, a removal shown `stopped` while the copy runs; every refusal
/// with its status and a message naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ways_back_undrain_reset_node_rm_and_stopped_removal() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start(1, &depmgr.url).await;
    let agents: Vec<FakeAgent> = ["a", "b"]
        .iter()
        .map(|n| FakeAgent::start(n, cluster.addrs.clone()))
        .collect();
    let b = &agents[1];
    let api = Api::new(&cluster.addrs[0]);
    let c = cluster.client();
    eventually("both nodes registered", T, || async {
        let (_, v) = api.get("/v1/nodes").await;
        (v.as_array()?.len() == 2).then_some(())
    })
    .await;

    // Refusals: unknown names 404, wrong states 409, each naming why.
    for (method, path, status, message) in [
        (
            "POST",
            "/v1/nodes/nowhere/undrain",
            404,
            "unknown node \"nowhere\"",
        ),
        (
            "POST",
            "/v1/nodes/a/undrain",
            409,
            "node \"a\" is not draining",
        ),
        (
            "DELETE",
            "/v1/nodes/nowhere",
            404,
            "unknown node \"nowhere\"",
        ),
        (
            "DELETE",
            "/v1/nodes/a",
            409,
            "node \"a\" is ready, not down: only a down node can be removed",
        ),
        (
            "POST",
            "/v1/modules/nope/reset",
            404,
            "unknown module \"nope\"",
        ),
    ] {
        let method: reqwest::Method = method.parse().expect("method");
        let (s, v) = api.call(method, path, None).await;
        assert_eq!(s.as_u16(), status, "{path}: {v}");
        assert!(error_of(&v).contains(message), "{path}: {v}");
    }

    // Reset: refused while the module runs; after it failed everywhere
    // and the cause is fixed, it runs again with its counters cleared.
    let (s, v) = api
        .post("/v1/modules", &spec("web", Some("a"), 1).to_string())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_module(&c, "web", "web running", T, |m| m.state == "running").await;
    let (s, v) = api.post("/v1/modules/web/reset", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        error_of(&v).contains("module \"web\" is running, not failed"),
        "{v}"
    );
    for agent in &agents {
        agent.set_failing("web", true);
    }
    let failed = wait_module(&c, "web", "web failed", T, |m| m.state == "failed").await;
    assert!(
        failed.failovers >= 1 && !failed.tried_nodes.is_empty(),
        "{failed:?}"
    );
    for agent in &agents {
        agent.set_failing("web", false);
    }
    let (s, v) = api.post("/v1/modules/web/reset", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "pending", "{v}");
    let again = wait_module(&c, "web", "web running after reset", T, |m| {
        m.state == "running"
    })
    .await;
    assert_eq!(
        (again.failovers, again.restore_attempts),
        (0, 0),
        "{again:?}"
    );
    assert!(
        again.tried_nodes.is_empty() && again.epoch > failed.epoch,
        "{again:?}"
    );
    assert!(
        kinds_of(&api, Some("web"), None)
            .await
            .contains(&"module_reset".to_string())
    );
    let (s, v) = api.post("/v1/modules/web/reset", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "reset twice: {v}");

    // Undrain: b drained, then takes modules again.
    let (s, v) = api.post("/v1/nodes/b/drain", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.post("/v1/nodes/b/undrain", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["node"].clone(), v["status"].clone()),
        (json!("b"), json!("ready")),
        "{v}"
    );
    assert_eq!(
        kinds_of(&api, None, Some("b"))
            .await
            .last()
            .map(String::as_str),
        Some("node_undrained")
    );
    let (s, v) = api
        .post("/v1/modules", &spec("api", Some("b"), 1).to_string())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_module(&c, "api", "api running on the undrained b", T, |m| {
        m.state == "running" && m.node.as_deref() == Some("b")
    })
    .await;

    // A removed module whose copy does not stop stays `stopped`.
    b.stuck(true);
    let (s, v) = api.delete("/v1/modules/api").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["state"].clone(), v["waiting_for"].clone()),
        (json!("stopped"), json!(["b"])),
        "{v}"
    );
    let seen = b.accepted();
    eventually("b heartbeats on with its copy", T, || async {
        (b.accepted() >= seen + 5).then_some(())
    })
    .await;
    let (s, v) = api.get("/v1/modules/api").await;
    assert_eq!(
        (s, v["state"].clone()),
        (StatusCode::OK, json!("stopped")),
        "{v}"
    );
    assert!(error_of(&api.delete("/v1/modules/api").await.1).contains("already being removed"));
    assert!(b.is_running("api"));
    b.stuck(false);
    eventually("api gone once b stopped it", T, || async {
        let (s, _) = api.get("/v1/modules/api").await;
        (s == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(!b.is_running("api"));
    let kinds = kinds_of(&api, Some("api"), None).await;
    assert!(
        kinds.ends_with(&["module_stopping".to_string(), "module_removed".to_string()]),
        "{kinds:?}"
    );

    // Node removal: b goes silent; accepted once it is down.
    b.pause(true);
    eventually("b down", T, || async {
        let nodes = c.nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.id == "b" && n.status == "down")
            .then_some(())
    })
    .await;
    let (s, v) = api.delete("/v1/nodes/b").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["node"].clone(), v["removed"].clone()),
        (json!("b"), json!(true)),
        "{v}"
    );
    let nodes = c.nodes().await.expect("nodes");
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert!(
        kinds_of(&api, None, Some("b"))
            .await
            .contains(&"node_removed".to_string())
    );
    let (s, v) = api.delete("/v1/nodes/b").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Its agent comes back: a new node.
    b.pause(false);
    eventually("b registered again", T, || async {
        let nodes = c.nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.id == "b" && n.status == "ready")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_when_set() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start_with(1, &depmgr.url, &["--admin-token", "s3cret"]).await;
    let api = Api::new(&cluster.addrs[0]);
    let (s, v) = api.get("/v1/modules").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).contains("token"));
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/modules", cluster.addrs[0]))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = api.get("/health").await;
    assert_eq!(s, StatusCode::OK, "health needs no token");
    let (s, _) = api.get("/ready").await;
    assert!(
        s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
        "ready needs no token: {s}"
    );
}

#[test]
fn bad_flags_and_unusable_data_dir_exit_2_with_one_line() {
    let bin = env!("CARGO_BIN_EXE_supervisor");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "--id",
        "4",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "/tmp/x",
        "--peers",
        "1=h:1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--id 4 is not one of --peers"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _) = run(&["--id", "1"]);
    assert_eq!(code, Some(2));
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("precious.txt"), "keep me").expect("write");
    let (code, err) = run(&[
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--peers",
        "1=127.0.0.1:1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a raft-store data dir"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["precious.txt"]);
}
