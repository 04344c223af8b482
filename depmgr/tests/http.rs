//! The dependency manager over real HTTP: a `depmgr` process on a
//! temporary data dir, driven with `depmgr::client` and raw requests.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::*;
use depmgr::Error;
use testkit::depmgr_proc::DepmgrProc;
use testkit::package::{manifest, sample};
use testkit::raw_tar::{EntryType, Raw, gzip};

#[tokio::test]
async fn push_list_show_download_with_matching_digest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let client = server.client();

    let bytes = sample("web", "1.0.0", &[("base", "^1")], b"hello");
    let (answer, created) = client.push("web", "1.0.0", bytes.clone()).await?;
    assert!(created);
    assert_eq!(answer.digest, sha256(&bytes));
    assert_eq!(answer.size, bytes.len() as u64);
    client
        .push("web", "1.10.0", sample("web", "1.10.0", &[], b"x"))
        .await?;
    client
        .push("web", "1.9.0", sample("web", "1.9.0", &[], b"y"))
        .await?;
    client
        .push("api", "0.1.0", sample("api", "0.1.0", &[], b"z"))
        .await?;

    // Listing: names sorted, versions by semver (1.9.0 before 1.10.0).
    let list: serde_json::Value = http()
        .get(server.url("/v1/packages"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        list,
        serde_json::json!([
            {"name": "api", "versions": ["0.1.0"]},
            {"name": "web", "versions": ["1.0.0", "1.9.0", "1.10.0"]},
        ])
    );

    // Show: the contract's fields.
    let info: serde_json::Value = http()
        .get(server.url("/v1/packages/web/1.0.0"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(info["name"], "web");
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["digest"], sha256(&bytes));
    assert_eq!(info["size"], bytes.len() as u64);
    assert_eq!(info["manifest"]["command"], "bin/run");
    assert_eq!(info["dependencies"], serde_json::json!({"base": "^1"}));

    // Download by name and version: same bytes, ETag and Content-Length.
    let resp = http()
        .get(server.url("/v1/packages/web/1.0.0/archive"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str()?.to_string();
    assert_eq!(etag.trim_matches('"'), sha256(&bytes));
    assert_eq!(resp.content_length(), Some(bytes.len() as u64));
    let body = resp.bytes().await?;
    assert_eq!(sha256(&body), sha256(&bytes));

    // ... with the client, to a file, checked.
    let dest = tmp.path().join("web.tar.gz");
    let digest = client.download("web", "1.0.0", &dest).await?;
    assert_eq!(digest, sha256(&bytes));
    assert_eq!(std::fs::read(&dest)?, bytes);

    // ... and by digest.
    let dest2 = tmp.path().join("by-digest.tar.gz");
    client.download_digest(&digest, &dest2).await?;
    assert_eq!(std::fs::read(&dest2)?, bytes);
    let resp = http()
        .get(server.url(&format!("/v1/archives/{digest}")))
        .header("if-none-match", format!("\"{digest}\""))
        .send()
        .await?;
    assert_eq!(resp.status(), 304);
    let (status, msg) = status_and_error(
        http()
            .get(server.url(&format!("/v1/archives/{}", "0".repeat(64))))
            .send()
            .await?,
    )
    .await;
    assert_eq!((status, msg.contains("no archive")), (404, true), "{msg}");
    let (status, msg) =
        status_and_error(http().get(server.url("/v1/archives/xyz")).send().await?).await;
    assert_eq!((status, msg.contains("digest")), (400, true), "{msg}");

    // A digest mismatch is detected by the client and leaves no file.
    let wrong = "1".repeat(64);
    let err = client
        .download_digest(&wrong, &tmp.path().join("nope"))
        .await
        .expect_err("unknown digest");
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err}");
    assert!(!tmp.path().join("nope").exists());
    Ok(())
}

#[tokio::test]
async fn downloads_stop_at_the_byte_cap_and_leave_no_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let bytes = sample("big", "1.0.0", &[], &random_bytes(200_000, 7));
    let digest = sha256(&bytes);
    server.client().push("big", "1.0.0", bytes.clone()).await?;
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out)?;

    // Announced size over the cap: refused before anything is written.
    let capped = server
        .client()
        .with_max_download_bytes(bytes.len() as u64 - 1);
    let err = capped
        .download_digest(&digest, &out.join("a.tar.gz"))
        .await
        .expect_err("over the cap");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("download cap"), "{err}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));

    // Exactly the cap is fine.
    let exact = server.client().with_max_download_bytes(bytes.len() as u64);
    exact
        .download_digest(&digest, &out.join("a.tar.gz"))
        .await?;
    assert_eq!(std::fs::read(out.join("a.tar.gz"))?, bytes);

    // A server that announces no length is cut off at the cap while
    // streaming, and the partial file is removed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let endless = axum::Router::new().route(
        "/v1/archives/{digest}",
        axum::routing::get(|| async {
            let chunk = bytes::Bytes::from(vec![0u8; 64 << 10]);
            let chunks = std::iter::repeat_n(chunk, 1000).map(Ok::<_, std::io::Error>);
            axum::body::Body::from_stream(futures::stream::iter(chunks))
        }),
    );
    let served = tokio::spawn(async move { axum::serve(listener, endless).await });
    let client = depmgr::client::Client::new(&addr.to_string())?.with_max_download_bytes(1 << 20);
    let err = client
        .download_digest(&digest, &out.join("b.tar.gz"))
        .await
        .expect_err("endless");
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert_eq!(files_in(&out), ["a.tar.gz"]);
    served.abort();
    Ok(())
}

#[tokio::test]
async fn same_bytes_is_200_other_bytes_is_409() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let url = server.url("/v1/packages/web/1.0.0");
    let one = sample("web", "1.0.0", &[], b"one");
    let two = sample("web", "1.0.0", &[], b"two");

    let r = http().put(&url).body(one.clone()).send().await?;
    assert_eq!(r.status(), 201);
    let answer: serde_json::Value = r.json().await?;
    assert_eq!(answer["digest"], sha256(&one));
    assert_eq!(answer["name"], "web");
    assert_eq!(answer["version"], "1.0.0");

    let r = http().put(&url).body(one.clone()).send().await?;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await?;
    assert_eq!(answer["digest"], sha256(&one));

    let (status, msg) = status_and_error(http().put(&url).body(two.clone()).send().await?).await;
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains("web@1.0.0") && msg.contains("immutable"),
        "{msg}"
    );

    // Still the first bytes.
    let body = http()
        .get(server.url("/v1/packages/web/1.0.0/archive"))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(sha256(&body), sha256(&one));
    assert_eq!(files_in(&server.data_dir.join("archives")), [sha256(&one)]);
    assert!(files_in(&server.data_dir.join("tmp")).is_empty());

    // Many concurrent uploads of one new version with different bytes:
    // exactly one wins, the rest are 409, no 5xx.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let bytes = sample("race", "1.0.0", &[], &[i; 100]);
        let url = server.url("/v1/packages/race/1.0.0");
        tasks.push(tokio::spawn(async move {
            http()
                .put(url)
                .body(bytes)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await??);
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    Ok(())
}

#[tokio::test]
async fn closure_of_a_three_level_tree_is_in_install_order() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let client = server.client();
    // app -> (mid, util); mid -> (base, util); util -> base.
    let mut digests = std::collections::BTreeMap::new();
    for (name, deps) in [
        ("app", vec![("mid", "1.0.0"), ("util", "2.0.0")]),
        ("mid", vec![("base", "1.0.0"), ("util", "2.0.0")]),
        ("util", vec![("base", "1.0.0")]),
        ("base", vec![]),
    ] {
        let version = if name == "util" { "2.0.0" } else { "1.0.0" };
        let bytes = sample(name, version, &deps, name.as_bytes());
        digests.insert(name, sha256(&bytes));
        client.push(name, version, bytes).await?;
    }
    let resp = http()
        .get(server.url("/v1/packages/app/1.0.0/closure"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let order: serde_json::Value = resp.json().await?;
    assert_eq!(
        order,
        serde_json::json!([
            {"name": "base", "version": "1.0.0", "digest": digests["base"]},
            {"name": "util", "version": "2.0.0", "digest": digests["util"]},
            {"name": "mid", "version": "1.0.0", "digest": digests["mid"]},
            {"name": "app", "version": "1.0.0", "digest": digests["app"]},
        ])
    );
    // The typed client reads the same thing.
    let typed = client.closure("app", "1.0.0").await?;
    assert_eq!(typed.len(), 4);
    assert_eq!(typed[3].name, "app");
    // The configuration package the supervisor sends to an agent.
    let cp = client.config_package("app", "1.0.0").await?;
    assert_eq!(cp.manifest.name, "app");
    assert_eq!(
        cp.own_artifact().map(|a| a.digest.as_str()),
        Some(digests["app"].as_str())
    );
    assert_eq!(cp.artifacts, typed);
    // A leaf's closure is itself.
    let leaf = client.closure("base", "1.0.0").await?;
    assert_eq!(leaf.len(), 1);
    Ok(())
}

#[tokio::test]
async fn semver_requirements_resolve_to_the_highest_stored_match() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let client = server.client();
    for v in ["1.1.0", "1.2.0", "1.4.1", "2.0.0", "1.5.0-beta.1"] {
        client
            .push("base", v, sample("base", v, &[], v.as_bytes()))
            .await?;
    }
    client
        .push(
            "app",
            "1.0.0",
            sample("app", "1.0.0", &[("base", "^1.2")], b""),
        )
        .await?;
    client
        .push(
            "pinned",
            "1.0.0",
            sample("pinned", "1.0.0", &[("base", "1.2.0")], b""),
        )
        .await?;
    client
        .push(
            "range",
            "1.0.0",
            sample("range", "1.0.0", &[("base", ">=1.0, <1.3")], b""),
        )
        .await?;

    let resolved = |order: Vec<proto::manifest::ArtifactRef>| {
        order
            .iter()
            .map(|a| format!("{}@{}", a.name, a.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        resolved(client.closure("app", "1.0.0").await?),
        ["base@1.4.1", "app@1.0.0"]
    );
    assert_eq!(
        resolved(client.closure("pinned", "1.0.0").await?),
        ["base@1.2.0", "pinned@1.0.0"]
    );
    assert_eq!(
        resolved(client.closure("range", "1.0.0").await?),
        ["base@1.2.0", "range@1.0.0"]
    );

    // A newer match, once stored, is what the requirement resolves to.
    client
        .push("base", "1.9.0", sample("base", "1.9.0", &[], b"new"))
        .await?;
    let order = client.closure("app", "1.0.0").await?;
    assert_eq!(resolved(order.clone()), ["base@1.9.0", "app@1.0.0"]);
    assert_eq!(order[0].digest, client.show("base", "1.9.0").await?.digest);

    // A requirement nothing matches: 409 naming the package and versions.
    client
        .push(
            "future",
            "1.0.0",
            sample("future", "1.0.0", &[("base", "^3")], b""),
        )
        .await?;
    let (status, msg) = status_and_error(
        http()
            .get(server.url("/v1/packages/future/1.0.0/closure"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains("base ^3") && msg.contains("no stored version of base"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_dependencies_and_cycles_are_4xx_naming_the_package() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let client = server.client();
    client
        .push(
            "app",
            "1.0.0",
            sample("app", "1.0.0", &[("mid", "1.0.0")], b""),
        )
        .await?;
    client
        .push(
            "mid",
            "1.0.0",
            sample("mid", "1.0.0", &[("ghost", "1.0.0")], b""),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, msg) = status_and_error(
        http()
            .get(server.url("/v1/packages/app/1.0.0/closure"))
            .send()
            .await?,
    )
    .await;
    assert!(Instant::now() < deadline);
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains("ghost") && msg.contains("app@1.0.0 -> mid@1.0.0"),
        "{msg}"
    );

    // a -> b -> c -> a (each uploaded before its dependency existed).
    for (name, dep) in [("a", "b"), ("b", "c"), ("c", "a")] {
        client
            .push(name, "1.0.0", sample(name, "1.0.0", &[(dep, "^1")], b""))
            .await?;
    }
    let (status, msg) = status_and_error(
        http()
            .get(server.url("/v1/packages/b/1.0.0/closure"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains("cycle") && msg.contains("b@1.0.0 -> c@1.0.0 -> a@1.0.0 -> b@1.0.0"),
        "{msg}"
    );

    // The requested package itself unknown: 404.
    let (status, msg) = status_and_error(
        http()
            .get(server.url("/v1/packages/nope/1.0.0/closure"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(status, 404, "{msg}");
    assert!(msg.contains("nope"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn unknown_names_are_404_and_malformed_ones_400() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    server
        .client()
        .push("web", "1.0.0", sample("web", "1.0.0", &[], b""))
        .await?;
    for (path, status, needle) in [
        ("/v1/packages/nope/1.0.0", 404, "package nope is not stored"),
        (
            "/v1/packages/web/2.0.0",
            404,
            "no version 2.0.0 (stored: 1.0.0)",
        ),
        ("/v1/packages/web/2.0.0/archive", 404, "no version 2.0.0"),
        ("/v1/packages/nope", 404, "nope"),
        (
            "/v1/packages/web/1.0/archive",
            400,
            "not an exact semver version",
        ),
        ("/v1/packages/-web/1.0.0", 400, "must start with a letter"),
        ("/v1/nothing-here", 404, "no such endpoint"),
    ] {
        let (got, msg) = status_and_error(http().get(server.url(path)).send().await?).await;
        assert_eq!(got, status, "{path}: {msg}");
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let one: serde_json::Value = http()
        .get(server.url("/v1/packages/web"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        one,
        serde_json::json!({"name": "web", "versions": ["1.0.0"]})
    );
    Ok(())
}

#[tokio::test]
async fn bad_uploads_are_400_naming_the_problem_and_store_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let limit: usize = 1 << 20;
    let server = DepmgrProc::start(
        &tmp.path().join("data"),
        &[
            "--max-archive-bytes",
            "1048576",
            "--max-unpacked-bytes",
            "4194304",
        ],
    )
    .await?;
    let put = |name: &str, version: &str| server.url(&format!("/v1/packages/{name}/{version}"));
    let valid = || Raw::valid("web", "1.0.0");
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        ("empty body", put("web", "1.0.0"), vec![], "empty"),
        (
            "not gzip",
            put("web", "1.0.0"),
            b"just some text".to_vec(),
            "not gzip",
        ),
        (
            "gzip, not tar",
            put("web", "1.0.0"),
            gzip(&[42u8; 3000]),
            "not a valid .tar.gz",
        ),
        (
            "truncated",
            put("web", "1.0.0"),
            {
                let b = valid().file("data", &random_bytes(50_000, 1)).gz();
                b[..b.len() / 2].to_vec()
            },
            "not a valid .tar.gz",
        ),
        (
            "no manifest",
            put("web", "1.0.0"),
            Raw::new().file("bin/run", b"x").gz(),
            "no manifest.toml",
        ),
        (
            "manifest not at the root",
            put("web", "1.0.0"),
            Raw::new()
                .file(
                    "web/manifest.toml",
                    manifest("web", "1.0.0", &[]).as_bytes(),
                )
                .gz(),
            "must be at the root",
        ),
        (
            "invalid manifest",
            put("web", "1.0.0"),
            Raw::new()
                .file(
                    "manifest.toml",
                    b"name = \"web\"\nversion = \"1.0.0\"\nbogus = 1",
                )
                .gz(),
            "bogus",
        ),
        (
            "name mismatch",
            put("api", "1.0.0"),
            valid().gz(),
            "names package \"web\"",
        ),
        (
            "version mismatch",
            put("web", "1.0.1"),
            valid().gz(),
            "has version 1.0.0",
        ),
        (
            "command missing",
            put("web", "1.0.0"),
            Raw::new()
                .file("manifest.toml", manifest("web", "1.0.0", &[]).as_bytes())
                .gz(),
            "command \"bin/run\"",
        ),
        (
            "dot-dot entry",
            put("web", "1.0.0"),
            valid().file("../evil", b"x").gz(),
            "escapes the package root",
        ),
        (
            "nested dot-dot",
            put("web", "1.0.0"),
            valid().file("bin/../../evil", b"x").gz(),
            "escapes",
        ),
        (
            "absolute entry",
            put("web", "1.0.0"),
            valid().file("/etc/evil", b"x").gz(),
            "absolute",
        ),
        (
            "symlink outside",
            put("web", "1.0.0"),
            valid()
                .entry(EntryType::Symlink, "bin/etc", "../../etc", b"")
                .gz(),
            "points outside",
        ),
        (
            "absolute symlink",
            put("web", "1.0.0"),
            valid()
                .entry(EntryType::Symlink, "passwd", "/etc/passwd", b"")
                .gz(),
            "points outside",
        ),
        (
            "write through symlink",
            put("web", "1.0.0"),
            valid()
                .entry(EntryType::Symlink, "lnk", "bin", b"")
                .file("lnk/x", b"x")
                .gz(),
            "below symlink",
        ),
        (
            "hard link outside",
            put("web", "1.0.0"),
            valid()
                .entry(EntryType::Link, "h", "../../etc/shadow", b"")
                .gz(),
            "hard link",
        ),
        (
            "device node",
            put("web", "1.0.0"),
            valid().entry(EntryType::Char, "dev", "", b"").gz(),
            "unsupported type",
        ),
        (
            "gzip bomb",
            put("web", "1.0.0"),
            valid().file("zeros", &vec![0u8; 8 << 20]).gz(),
            "unpacks to more than 4194304 bytes",
        ),
        (
            "too large",
            put("web", "1.0.0"),
            {
                // Incompressible, so still over the limit once gzip'd.
                valid().file("noise", &random_bytes(limit + 1000, 2)).gz()
            },
            "larger than the limit of 1048576 bytes",
        ),
        (
            "bad name in the URL",
            put("-web", "1.0.0"),
            valid().gz(),
            "must start with a letter",
        ),
        (
            "bad version in the URL",
            put("web", "1.0"),
            valid().gz(),
            "not an exact semver version",
        ),
    ];
    for (what, url, body, needle) in cases {
        let resp = http().put(&url).body(body).send().await;
        let (status, msg) = match resp {
            Ok(r) => status_and_error(r).await,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(status, 400, "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        ensure!(
            files_in(&server.data_dir.join("tmp")).is_empty(),
            "{what}: tmp not empty"
        );
    }

    // Too large without Content-Length (chunked): refused while streaming,
    // once the limit is passed. The body stays open so the server has read
    // everything sent when it answers.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let req = http()
        .put(put("web", "1.0.0"))
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let feeder = async {
        use futures::SinkExt;
        let chunk = random_bytes(64 << 10, 3);
        for _ in 0..(limit / chunk.len() + 1) {
            tx.send(Ok(chunk.clone())).await.expect("send");
        }
        tx
    };
    let (resp, _keep_open) = tokio::join!(req, feeder);
    let (status, msg) = status_and_error(resp?).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("larger than the limit"), "{msg}");

    // Too large by Content-Length: refused before any byte of the body.
    let (_tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let resp = http()
        .put(put("web", "1.0.0"))
        .header("content-length", (limit as u64 * 10).to_string())
        .body(reqwest::Body::wrap_stream(rx))
        .send()
        .await?;
    let (status, msg) = status_and_error(resp).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("larger than the limit"), "{msg}");

    // Nothing stored, anywhere.
    let list: serde_json::Value = http()
        .get(server.url("/v1/packages"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list, serde_json::json!([]));
    assert!(files_in(&server.data_dir.join("archives")).is_empty());
    assert!(files_in(&server.data_dir.join("tmp")).is_empty());

    // And the good archive is accepted afterwards.
    let r = http()
        .put(put("web", "1.0.0"))
        .body(valid().gz())
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("depmgr_uploads_total{result=\"created\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("depmgr_package_versions 1"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn cli_push_list_show_closure() -> Result<()> {
    use depmgr::cli::{DepmgrAddr, PackageCmd, run};
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let addr = DepmgrAddr {
        depmgr: server.addr.clone(), // host:port without a scheme is fine
    };
    let src = tmp.path().join("web-src");
    std::fs::create_dir_all(src.join("bin"))?;
    std::fs::write(src.join("manifest.toml"), manifest("web", "1.0.0", &[]))?;
    std::fs::write(src.join("bin/run"), "#!/bin/sh\n")?;
    run(PackageCmd::Push {
        dir: src.clone(),
        addr: addr.clone(),
    })
    .await?;
    // Pushing the same directory again gives the same digest: 200, not 409.
    run(PackageCmd::Push {
        dir: src.clone(),
        addr: addr.clone(),
    })
    .await?;
    run(PackageCmd::List { addr: addr.clone() }).await?;
    run(PackageCmd::Show {
        package: "web@1.0.0".into(),
        addr: addr.clone(),
    })
    .await?;
    run(PackageCmd::Closure {
        package: "web@1.0.0".into(),
        addr: addr.clone(),
    })
    .await?;
    let err = run(PackageCmd::Show {
        package: "web@9.9.9".into(),
        addr: addr.clone(),
    })
    .await
    .expect_err("unknown version");
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    let digest = server.client().show("web", "1.0.0").await?.digest;
    assert_eq!(digest, sha256(&depmgr::archive::pack_dir(&src)?));
    Ok(())
}

#[tokio::test]
async fn health_and_metrics() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let r = http().get(server.url("/health")).send().await?;
    assert_eq!(r.status(), 200);
    let r = http().get(server.url("/metrics")).send().await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("text/plain")
    );
    let text = r.text().await?;
    assert!(
        text.contains("# TYPE depmgr_uploads_total counter"),
        "{text}"
    );
    assert!(text.contains("depmgr_package_versions 0"), "{text}");
    Ok(())
}

/// `/metrics` parses as Prometheus text; the upload and download counters
/// move after an upload and a download; `--log-format json` writes one
/// JSON object per log line.
#[tokio::test]
async fn metrics_parse_and_count_and_logs_are_json() -> Result<()> {
    use testkit::prom::Metrics;
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &["--log-format", "json"]).await?;
    let scrape = || async {
        let text = http()
            .get(server.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Metrics::parse(&text).map_err(anyhow::Error::msg)
    };
    let before = scrape().await?;
    for (name, kind) in [
        ("depmgr_uploads_total", "counter"),
        ("depmgr_downloads_total", "counter"),
        ("depmgr_download_bytes_total", "counter"),
        ("depmgr_package_versions", "gauge"),
    ] {
        ensure!(
            before.types.get(name).map(String::as_str) == Some(kind),
            "{name}: {:?}",
            before.types.get(name)
        );
    }
    ensure!(before.value("depmgr_uploads_total", &[("result", "created")]) == Some(0.0));
    let client = server.client();
    let bytes = sample("web", "1.0.0", &[], b"hello");
    client.push("web", "1.0.0", bytes.clone()).await?;
    let digest = sha256(&bytes);
    let target = tmp.path().join("web.tar.gz");
    client.download_digest(&digest, &target).await?;
    let after = scrape().await?;
    ensure!(after.value("depmgr_uploads_total", &[("result", "created")]) == Some(1.0));
    ensure!(after.value("depmgr_package_versions", &[]) == Some(1.0));
    ensure!(after.value("depmgr_downloads_total", &[]) == Some(1.0));
    ensure!(after.value("depmgr_download_bytes_total", &[]) == Some(bytes.len() as f64));
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .collect();
    ensure!(!lines.is_empty(), "no JSON log line: {log}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)?;
        ensure!(v["level"].is_string(), "{line}");
    }
    Ok(())
}
