//! The `depmgr` process with TLS: real certificates made by `supctl ca`
//! ([`testkit::Certs`]); uploads only from operators, reads from any
//! certificate of the CA, strangers (another CA, an expired certificate,
//! plaintext) refused at the handshake and counted.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use depmgr::client::{Client, Timeouts};
use testkit::depmgr_proc::{DEADLINE, DepmgrProc};
use testkit::package::{manifest, sample};
use testkit::process::{ProcessSet, Program, output_within};
use testkit::{Certs, eventually, poll_until};
use tls::{Role, Tls};

/// A client of `server` presenting `tls`'s certificate.
fn client_as(server: &DepmgrProc, tls: &Arc<Tls>) -> Result<Client> {
    Ok(Client::with_tls(
        &server.base(),
        Timeouts::default(),
        Some(tls),
    )?)
}

/// A reqwest client trusting the CA of `certs` (depmgr's certificate is
/// issued for 127.0.0.1), presenting `identity` (PEM certificate and key
/// files) if given, checking nothing else of its own.
fn raw_client(certs: &Certs, identity: Option<(&Path, &Path)>) -> Result<reqwest::Client> {
    let ca = std::fs::read(certs.ca())?;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert)?;
        pem.extend(std::fs::read(key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// The value of a counter in depmgr's `/metrics`, read with the operator.
async fn metric(server: &DepmgrProc, name: &str) -> Result<u64> {
    let http = tls::client::http_builder(server.operator.as_ref(), &[Role::Depmgr]).build()?;
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .with_context(|| format!("no {name} in\n{text}"))?
        .trim()
        .parse()
        .context("counter value")
}

/// Waits until counter `name` is at least `min`.
async fn metric_at_least(server: &DepmgrProc, name: &str, min: u64) -> u64 {
    eventually(&format!("{name} >= {min}"), DEADLINE, || async {
        metric(server, name).await.ok().filter(|v| *v >= min)
    })
    .await
}

#[tokio::test]
async fn uploads_need_an_operator_and_reads_any_certificate_of_the_ca() -> Result<()> {
    let certs = Certs::new();
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start_tls(&tmp.path().join("data"), &[], Some(&certs)).await?;
    assert!(server.base().starts_with("https://"));
    let bytes = sample("web", "1.0.0", &[], b"hello");
    let agent = client_as(&server, &certs.load(Role::Agent, "node-a"))?;

    // An agent certificate may not upload: 403 naming it and the need.
    let err = agent
        .push("web", "1.0.0", bytes.clone())
        .await
        .expect_err("an agent uploaded");
    match &err {
        depmgr::Error::Http {
            status: 403,
            message,
        } => assert!(
            message.contains("agent/node-a") && message.contains("operator"),
            "{message}"
        ),
        other => panic!("expected a 403, got {other}"),
    }
    assert!(server.client().list().await?.is_empty(), "nothing stored");

    // The operator may: 201, then 200 for the same bytes.
    let (answer, created) = server.client().push("web", "1.0.0", bytes.clone()).await?;
    assert!(created);
    let (_, created) = server.client().push("web", "1.0.0", bytes.clone()).await?;
    assert!(!created);

    // Anonymous: nothing but /health.
    let anon = raw_client(&certs, None)?;
    let r = anon.get(server.url("/health")).send().await?;
    assert_eq!(r.status(), 200);
    for path in [
        format!("/v1/archives/{}", answer.digest),
        "/v1/packages/web/1.0.0/archive".to_string(),
        "/v1/packages".to_string(),
        "/metrics".to_string(),
    ] {
        let (status, msg) = status_and_error(anon.get(server.url(&path)).send().await?).await;
        assert_eq!(status, 401, "{path}: {msg}");
        assert!(msg.contains("certificate"), "{msg}");
    }
    let r = anon
        .put(server.url("/v1/packages/web/2.0.0"))
        .body(sample("web", "2.0.0", &[], b"x"))
        .send()
        .await?;
    assert_eq!(r.status(), 401);

    // An agent certificate downloads (by digest, as agents do).
    let dest = tmp.path().join("web.tgz");
    agent.download_digest(&answer.digest, &dest).await?;
    assert_eq!(std::fs::read(&dest)?, bytes);
    assert_eq!(agent.list().await?.len(), 1);

    // One warn line per refusal, naming the peer; all of them counted.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("request refused")
            && l.contains("agent/node-a@")),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("request refused: "))
            .count(),
        6
    );
    assert_eq!(metric(&server, "depmgr_auth_refused_total").await?, 6);

    // supctl's package commands over TLS: the operator pushes, an agent
    // certificate is refused.
    use depmgr::cli::{DepmgrAddr, PackageCmd, run_with_tls};
    let src = tmp.path().join("api-src");
    std::fs::create_dir_all(src.join("bin"))?;
    std::fs::write(src.join("manifest.toml"), manifest("api", "1.0.0", &[]))?;
    std::fs::write(src.join("bin/run"), "#!/bin/sh\n")?;
    let addr = DepmgrAddr {
        depmgr: server.addr.clone(), // bare host:port: https with TLS
    };
    let push = |tls: Arc<Tls>| {
        run_with_tls(
            PackageCmd::Push {
                dir: src.clone(),
                addr: addr.clone(),
            },
            Some(tls),
        )
    };
    let err = push(certs.load(Role::Agent, "node-a"))
        .await
        .expect_err("agent push");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    push(certs.operator()).await?;
    run_with_tls(
        PackageCmd::List { addr: addr.clone() },
        Some(certs.operator()),
    )
    .await?;
    assert_eq!(server.client().show("api", "1.0.0").await?.name, "api");
    Ok(())
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused_at_the_handshake_and_counted() -> Result<()> {
    let certs = Certs::new();
    let other = Certs::new();
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start_tls(&tmp.path().join("data"), &[], Some(&certs)).await?;
    assert_eq!(
        metric(&server, "depmgr_tls_handshakes_failed_total").await?,
        0
    );

    // A client of the other CA: depmgr's certificate is not one it trusts.
    let stranger = client_as(&server, &other.operator())?;
    let err = stranger.list().await.expect_err("another CA's client");
    assert!(matches!(err, depmgr::Error::Transport(_)), "{err}");
    metric_at_least(&server, "depmgr_tls_handshakes_failed_total", 1).await;

    // A client that trusts our CA but presents the other CA's operator
    // certificate: depmgr refuses it at the handshake.
    let f = other.issue(Role::Operator, "ops");
    let raw = raw_client(&certs, Some((&f.cert, &f.key)))?;
    let answer = raw.get(server.url("/v1/packages")).send().await;
    assert!(
        answer.is_err(),
        "another CA's certificate was taken: {answer:?}"
    );
    metric_at_least(&server, "depmgr_tls_handshakes_failed_total", 2).await;
    assert_eq!(metric(&server, "depmgr_auth_refused_total").await?, 0);

    // Plaintext to the TLS port: nothing, and counted.
    let answer = http()
        .get(format!("http://{}/health", server.addr))
        .send()
        .await;
    assert!(
        !answer.as_ref().is_ok_and(|r| r.status().is_success()),
        "plaintext was answered: {answer:?}"
    );
    metric_at_least(&server, "depmgr_tls_handshakes_failed_total", 3).await;
    assert!(metric(&server, "depmgr_tls_handshakes_total").await? >= 1);
    Ok(())
}

/// Runs depmgr with `args` to its end, expecting exit status 2 and one
/// line on stderr, which it returns.
fn refused(args: &[String]) -> Result<String> {
    let out = output_within(Command::new(testkit::bin("depmgr")).args(args), DEADLINE)?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    Ok(stderr)
}

fn args(listen: &str, data: &Path, extra: Vec<String>) -> Vec<String> {
    let mut a = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--data-dir".to_string(),
        data.display().to_string(),
    ];
    a.extend(extra);
    a
}

#[tokio::test]
async fn expired_certificates_are_refused_at_start_and_at_the_handshake() -> Result<()> {
    let certs = Certs::new();
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");

    // depmgr holding an expired certificate does not start.
    certs.issue(Role::Depmgr, "depmgr");
    certs.reissue(Role::Depmgr, "depmgr", &["--days", "-1"]);
    let e = refused(&args(
        "127.0.0.1:0",
        &data,
        certs.flags(Role::Depmgr, "depmgr"),
    ))?;
    assert!(
        e.to_lowercase().contains("expired") && e.contains("depmgr.pem"),
        "{e}"
    );
    assert!(!data.exists(), "the data dir was created");
    // Nor with a certificate of another role.
    let e = refused(&args(
        "127.0.0.1:0",
        &data,
        certs.flags(Role::Operator, "ops"),
    ))?;
    assert!(
        e.contains("operator/ops") && e.contains("role depmgr"),
        "{e}"
    );
    assert!(!data.exists(), "the data dir was created");

    // With a valid one it starts; a client presenting an expired
    // certificate is refused at the handshake.
    certs.reissue(Role::Depmgr, "depmgr", &[]);
    let server = DepmgrProc::start_tls(&data, &[], Some(&certs)).await?;
    certs.reissue(Role::Operator, "old", &["--days", "-1"]);
    let f = certs.issue(Role::Operator, "old");
    let raw = raw_client(&certs, Some((&f.cert, &f.key)))?;
    let answer = raw.get(server.url("/v1/packages")).send().await;
    assert!(
        answer.is_err(),
        "an expired certificate was taken: {answer:?}"
    );
    metric_at_least(&server, "depmgr_tls_handshakes_failed_total", 1).await;
    eventually("the refused handshake in the log", DEADLINE, || async {
        let log = server.log();
        log.lines()
            .any(|l| l.contains("TLS handshake refused") && l.to_lowercase().contains("expired"))
            .then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_needs_insecure() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let e = refused(&args("0.0.0.0:0", &data, vec![]))?;
    for flag in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
        assert!(e.contains(flag), "{flag} not named: {e}");
    }
    assert!(!data.exists(), "the data dir was created");

    // Only some TLS flags: exit 2 naming the missing ones.
    let certs = Certs::new();
    let e = refused(&args(
        "127.0.0.1:0",
        &data,
        vec!["--tls-ca".into(), certs.ca().display().to_string()],
    ))?;
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");

    // --insecure (here through its environment variable) serves.
    let mut procs = ProcessSet::new(tmp.path()).tail_on_panic(usize::MAX);
    let mut program = Program::new(testkit::bin("depmgr")).env("DEPMGR_INSECURE", "true");
    for a in args("0.0.0.0:0", &data, vec![]) {
        program = program.arg(a);
    }
    procs.spawn("depmgr", program)?;
    let port = poll_until(DEADLINE, || async {
        procs.log("depmgr").lines().find_map(|l| {
            l.strip_prefix("depmgr listening on 0.0.0.0:")
                .map(|p| p.trim().to_string())
        })
    })
    .await
    .with_context(|| format!("no address in\n{}", procs.log("depmgr")))?;
    let health = eventually("plaintext /health", DEADLINE, || async {
        http()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    assert_eq!(health.status(), 200);
    let status = procs.terminate("depmgr", DEADLINE).await.context("exit")?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_serving() -> Result<()> {
    let certs = Certs::new();
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start_tls(&tmp.path().join("data"), &[], Some(&certs)).await?;
    // Rotation: a new certificate and key for the same identity.
    certs.reissue(Role::Depmgr, "depmgr", &[]);
    testkit::process::signal(server.pid(), nix::sys::signal::Signal::SIGHUP);
    eventually("the reload in the log", DEADLINE, || async {
        server
            .log()
            .contains("TLS certificate reloaded")
            .then_some(())
    })
    .await;
    // Still there (SIGHUP's default would have ended it), serving TLS.
    assert!(server.client().list().await?.is_empty());
    let status = server.terminate().await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}
