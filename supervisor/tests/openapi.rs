//! `GET /v1/openapi.json`: the admin API described from the code. Every
//! route of the admin router is described by construction (the router is
//! built from the handlers' `#[utoipa::path]` annotations); this test
//! checks the other way: every described path and method is served (a
//! request reaches a handler, not the "no such endpoint" fallback or a 405),
//! and every admin endpoint of the reference (docs/reference.md) is
//! described.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::supervisors::Supervisors;

const T: Duration = Duration::from_secs(30);

/// `METHOD /path` of every admin endpoint in the reference's section on
/// the supervisor's HTTP API.
fn documented_in_reference() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md"))
            .expect("docs/reference.md");
    // The supervisor's section only (depmgr and the agent have their own).
    let text = text
        .split("\n## Supervisor HTTP API")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("the supervisor's section");
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(cell) = cell.split('`').next() else {
            continue;
        };
        let mut words = cell.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) || !path.starts_with("/v1/") {
            continue;
        }
        if path.starts_with("/v1/agent/") || path == "/v1/openapi.json" {
            continue;
        }
        // `/v1/rollouts/{id}/pause`, `/resume`, `/cancel` on one line.
        let path = path.split('?').next().unwrap_or(path).trim_end_matches(',');
        out.insert(format!("{method} {path}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_route_is_served_and_every_endpoint_described() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start(1, &depmgr.url).await;
    cluster.wait_leader(T).await;
    let base = format!("http://{}", cluster.addrs[0]);
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{base}/v1/openapi.json"))
        .timeout(T)
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut described = BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            let Some(op) = item.get(method) else {
                continue;
            };
            assert!(
                op["responses"]["200"].is_object() || op["responses"]["201"].is_object(),
                "{method} {path}: no success answer described"
            );
            described.insert(format!("{} {path}", method.to_uppercase()));
            // Dummy values for the path parameters: unknown ids and names
            // (nothing is changed by these requests).
            let url = path
                .replace("{id}", "987654")
                .replace("{name}", "no-such-thing")
                .replace("{version}", "9.9.9")
                .replace("{action}", "pause");
            let url = if path.starts_with("/v1/nodes/") {
                url.replace("987654", "no-such-node")
            } else {
                url
            };
            let req = http
                .request(
                    method.to_uppercase().parse().expect("method"),
                    format!("{base}{url}"),
                )
                .timeout(T);
            let req = if method == "get" || method == "delete" {
                req
            } else {
                req.header("content-type", "application/json").body("{}")
            };
            let resp = req.send().await.expect("request");
            let status = resp.status();
            // A stream answers at once and never ends: its head is enough.
            let body = if path.ends_with("/stream") {
                assert_eq!(status.as_u16(), 200, "{method} {url}");
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            assert_ne!(status.as_u16(), 405, "{method} {url}: {body}");
            assert!(
                !body.contains("no such endpoint"),
                "{method} {url} is described but not served: {status} {body}"
            );
        }
    }
    let reference = documented_in_reference();
    assert!(reference.len() >= 15, "{reference:?}");
    let missing: Vec<&String> = reference.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "in docs/reference.md but not in /v1/openapi.json: {missing:?}"
    );
    let undocumented: Vec<&String> = described.difference(&reference).collect();
    assert!(
        undocumented.is_empty(),
        "in /v1/openapi.json but not in docs/reference.md: {undocumented:?}"
    );
}
