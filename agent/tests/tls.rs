//! The agent binary with TLS: real certificates made by `supctl ca`
//! ([`testkit::Certs`]), fake supervisors and a fake depmgr holding the
//! right certificate or an impostor's, and the status API read with and
//! without a client certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proto::heartbeat::{ModuleStatus, ReportKind};
use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc, agent_status};
use testkit::directives::install;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::{FakeSupervisor, Mode};
use testkit::package::{BuiltPackage, PackageBuilder};
use testkit::process::{ProcessSet, Program, output_within, pid_alive};
use testkit::{Certs, eventually, free_addr, free_port};
use tls::{Identity, Role};

const SLEEPER: &str = include_str!("modules/sleeper.sh");
const T: Duration = Duration::from_secs(10);

fn package(name: &str) -> BuiltPackage {
    PackageBuilder::new(name, "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", SLEEPER, 0o755)
        .build()
}

fn agent_a() -> Identity {
    Identity::new(Role::Agent, "node-a").expect("identity")
}

/// A reqwest client that trusts the cluster CA (so the agent's server
/// certificate, issued for 127.0.0.1, is accepted) and presents no
/// certificate of its own.
fn anonymous(certs: &Certs) -> reqwest::Client {
    let ca = std::fs::read(certs.ca()).expect("ca.pem");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA certificate"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn spawn(certs: &Arc<Certs>, data: &Path, supervisors: Vec<String>) -> AgentProc {
    let mut args = AgentArgs::new(data, &supervisors[0]);
    args.supervisors = supervisors;
    args.certs = Some(certs.clone());
    AgentProc::spawn(args)
}

/// Neither a depmgr certificate nor an agent certificate makes a
/// supervisor: the handshake fails before the heartbeat is sent, so the
/// impostor's accepted reply (lease, install directive) and its leader
/// hint are never read.
#[tokio::test]
async fn impostor_supervisors_renew_no_lease_install_nothing_and_give_no_hint() {
    let certs = Arc::new(Certs::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgs = FakeDepmgr::start_tls(certs.load(Role::Depmgr, "depmgr")).await;
    let web = package("web");
    pkgs.put(&web);
    // Where a followed hint would lead: a real supervisor certificate.
    let hinted = FakeSupervisor::start_tls(certs.load(Role::Supervisor, "1")).await;
    let as_depmgr = FakeSupervisor::start_tls(certs.load(Role::Depmgr, "depmgr")).await;
    as_depmgr.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &pkgs.url,
    )]);
    let as_agent = FakeSupervisor::start_tls(certs.load(Role::Agent, "node-b")).await;
    as_agent.set_mode(Mode::NotLeader(Some(hinted.addr.clone())));

    let agent = spawn(
        &certs,
        &tmp.path().join("data"),
        vec![as_depmgr.addr.clone(), as_agent.addr.clone()],
    );
    agent.ready().await;
    // Eight heartbeats in a row failed (each would have been accepted
    // within one round trip had the certificate been taken), both
    // certificates named in the log.
    eventually("both impostors refused at the handshake", T, || async {
        let log = agent.log_text();
        (log.contains("the server is depmgr/depmgr, expected a supervisor certificate")
            && log.contains("the server is agent/node-b, expected a supervisor certificate")
            && log.contains("failures=8"))
        .then_some(())
    })
    .await;
    let s = agent.status().await.expect("status");
    assert!(s["leader"].is_null(), "{s}");
    assert_eq!(s["lease_ms_left"], 0, "{s}");
    assert!(s["modules"].as_array().expect("modules").is_empty(), "{s}");
    assert_eq!(pkgs.fetches(), 0, "nothing was downloaded");
    assert_eq!(hinted.beat_count(), 0, "the impostor's hint was followed");
    assert_eq!(as_depmgr.beat_count(), 0, "a heartbeat reached an impostor");
    assert_eq!(as_agent.beat_count(), 0, "a heartbeat reached an impostor");
}

/// With a supervisor certificate everything works (heartbeats carry the
/// agent's certificate, the archive comes over https from the depmgr
/// certificate); when that leader points at an impostor, the agent
/// cannot follow and fences its at-most-one module as with no leader.
#[tokio::test]
async fn a_supervisor_certificate_leads_and_an_impostor_it_points_to_is_not_followed() {
    let certs = Arc::new(Certs::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgs = FakeDepmgr::start_tls(certs.load(Role::Depmgr, "depmgr")).await;
    let web = package("web");
    let other = package("other");
    pkgs.put(&web);
    pkgs.put(&other);
    let leader = FakeSupervisor::start_tls(certs.load(Role::Supervisor, "1")).await;
    leader.set_lease_ms(1500);
    leader.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &pkgs.url,
    )]);
    assert!(pkgs.url.starts_with("https://"), "{}", pkgs.url);
    let agent = spawn(&certs, &tmp.path().join("data"), vec![leader.addr.clone()]);
    agent.ready().await;
    leader.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let beats = leader.beats();
    assert!(
        beats.iter().all(|b| b.peer == Some(agent_a())),
        "heartbeats without the agent's certificate: {:?}",
        beats.iter().map(|b| &b.peer).collect::<Vec<_>>()
    );
    assert_eq!(pkgs.fetch_peers(), vec![Some(agent_a())]);
    let s = agent.status().await.expect("status");
    assert_eq!(s["leader"], leader.addr.as_str(), "{s}");

    // A plaintext depmgr URL is refused with TLS: the install fails,
    // saying why, and nothing is fetched.
    leader.send_once(install(
        "other",
        1,
        Fencing::AtLeastOne,
        &[&other],
        &pkgs.url.replace("https://", "http://"),
    ));
    let r = leader
        .wait_report("other", ReportKind::InstallFailed, T)
        .await;
    assert!(
        r.message.contains("http://") && r.message.contains("https://"),
        "{r:?}"
    );
    assert_eq!(pkgs.fetches(), 1);

    // The leader now points at an impostor holding an agent certificate,
    // which would accept the heartbeats and keep ordering web to run.
    let impostor = FakeSupervisor::start_tls(certs.load(Role::Agent, "node-b")).await;
    impostor.set_lease_ms(60_000);
    impostor.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &pkgs.url,
    )]);
    leader.set_mode(Mode::NotLeader(Some(impostor.addr.clone())));
    eventually("web fenced: its lease ran out", T, || async {
        let s = agent.status().await?;
        let fenced = s["modules"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "web" && m["state"] == "fenced");
        (fenced && !pid_alive(pid)).then_some(())
    })
    .await;
    assert!(
        agent
            .log_text()
            .contains("the server is agent/node-b, expected a supervisor certificate"),
        "the refused certificate is not in the log:\n{}",
        agent.log_text()
    );
    assert_eq!(impostor.beat_count(), 0, "a heartbeat reached the impostor");
    // Not renewed (the impostor's would be a minute): what is left is at
    // most what the fence leaves before the end (the stop grace and a
    // margin), and less than any lease granted since.
    let s = agent.status().await.expect("status");
    assert!(s["lease_ms_left"].as_u64() < Some(1000), "{s}");
    assert!(s["leader"].is_null(), "{s}");
}

/// The certificate must be this node's: another node's, or another role's,
/// is an exit 2 naming both identities, with nothing on disk changed.
#[tokio::test]
async fn a_certificate_of_another_node_or_role_exits_2_naming_both() {
    let certs = Certs::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    for (role, name, held) in [
        (Role::Agent, "node-b", "agent/node-b"),
        (Role::Depmgr, "depmgr", "depmgr/depmgr"),
    ] {
        let out = output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
                .args(["--node", "node-a", "--listen", &free_addr()])
                .args(["--supervisors", "127.0.0.1:1"])
                .arg("--data-dir")
                .arg(&data)
                .args(certs.flags(role, name))
                .env_remove("RUST_LOG"),
            T,
        )
        .expect("the agent exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(held) && stderr.contains("agent/node-a"),
            "{stderr}"
        );
        assert!(!data.exists(), "the data dir was created: {stderr}");
    }
    // Only some of the flags: exit 2 naming the missing ones.
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["--node", "node-a", "--listen", &free_addr()])
            .args(["--supervisors", "127.0.0.1:1"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--tls-ca")
            .arg(certs.ca()),
        T,
    )
    .expect("the agent exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--tls-key"),
        "{stderr}"
    );
    assert!(!data.exists());
}

/// `/health` is open; `/v1/status` (and any other path) needs a
/// certificate of the CA, of any role.
#[tokio::test]
async fn status_needs_a_certificate_of_the_ca_and_health_does_not() {
    let certs = Arc::new(Certs::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = FakeSupervisor::start_tls(certs.load(Role::Supervisor, "1")).await;
    let agent = spawn(&certs, &tmp.path().join("data"), vec![sup.addr.clone()]);
    agent.ready().await;
    let base = format!("https://{}", agent.listen);
    let anon = anonymous(&certs);

    let r = anon
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    for path in ["/v1/status", "/v1/nope"] {
        let r = anon
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 401, "{path}");
        let body: proto::ErrorBody = r.json().await.expect("JSON error");
        assert!(body.error.contains("certificate"), "{}", body.error);
    }
    eventually("the refusal in the log", T, || async {
        agent
            .log_text()
            .contains("request refused: no client certificate")
            .then_some(())
    })
    .await;

    // Any role of the CA reads it: the operator, another node's agent.
    let s = agent.status().await.expect("status with the operator cert");
    assert_eq!(s["node"], "node-a", "{s}");
    assert_eq!(s["tls"]["enabled"], true, "{s}");
    assert_eq!(s["tls"]["identity"], "agent/node-a", "{s}");
    assert_eq!(s["tls"]["auth_refused_total"], 2, "{s}");
    let other = certs.load(Role::Agent, "node-b");
    let s = testkit::agent_proc::agent_status_tls(&agent.listen, Some(&other)).await;
    assert_eq!(s.expect("status with an agent cert")["node"], "node-a");
    // Nobody gets it in plaintext.
    assert!(agent_status(&agent.listen).await.is_none());
}

/// Without TLS flags, plaintext only on loopback: a non-loopback
/// `--listen` is an exit 2 naming the flags, unless `--insecure`.
#[tokio::test]
async fn plaintext_on_a_non_loopback_address_needs_insecure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["--node", "node-a", "--listen", &listen])
            .args(["--supervisors", "127.0.0.1:1"])
            .arg("--data-dir")
            .arg(&data)
            .env_remove("RUST_LOG"),
        T,
    )
    .expect("the agent exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for flag in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }
    assert!(!data.exists(), "the data dir was created: {stderr}");

    // --insecure (here through its environment variable) starts it.
    let mut procs = ProcessSet::new(tmp.path()).tail_on_panic(60);
    procs
        .spawn(
            "agent",
            Program::new(env!("CARGO_BIN_EXE_agent"))
                .args(["--node", "node-a", "--listen", &listen])
                .args(["--supervisors", "127.0.0.1:1"])
                .arg("--data-dir")
                .arg(&data)
                .env("AGENT_INSECURE", "true"),
        )
        .expect("spawn");
    let local = format!("127.0.0.1:{port}");
    let s = eventually("the status API over plaintext", T, || agent_status(&local)).await;
    assert_eq!(s["node"], "node-a");
    assert_eq!(s["tls"]["enabled"], false, "{s}");
    let status = procs.terminate("agent", T).await.expect("exit");
    assert!(status.success(), "{status:?}");
}

/// Plaintext to the TLS port gets nothing, and the failed handshake is
/// counted in `/v1/status`; SIGHUP reloads the certificate.
#[tokio::test]
async fn plaintext_to_the_tls_port_fails_and_is_counted_and_sighup_reloads() {
    let certs = Arc::new(Certs::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = FakeSupervisor::start_tls(certs.load(Role::Supervisor, "1")).await;
    let agent = spawn(&certs, &tmp.path().join("data"), vec![sup.addr.clone()]);
    agent.ready().await;
    let s = agent.status().await.expect("status");
    assert_eq!(s["tls"]["handshakes_failed_total"], 0, "{s}");
    assert!(s["tls"]["handshakes_total"].as_u64() >= Some(1), "{s}");

    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let answer = plain
        .get(format!("http://{}/health", agent.listen))
        .send()
        .await;
    assert!(
        !answer.as_ref().is_ok_and(|r| r.status().is_success()),
        "plaintext was answered: {answer:?}"
    );
    let s = eventually("the failed handshake counted", T, || async {
        let s = agent.status().await?;
        (s["tls"]["handshakes_failed_total"].as_u64() >= Some(1)).then_some(s)
    })
    .await;
    println!("tls counters: {}", s["tls"]);

    // SIGHUP reloads the certificate (rotated here) and the agent goes on.
    certs.reissue(Role::Agent, "node-a", &[]);
    testkit::process::signal(agent.pid(), nix::sys::signal::Signal::SIGHUP);
    eventually("the reload in the log", T, || async {
        agent
            .log_text()
            .contains("TLS certificate reloaded")
            .then_some(())
    })
    .await;
    assert!(pid_alive(agent.pid()));
    assert_eq!(agent.status().await.expect("status")["node"], "node-a");
}
