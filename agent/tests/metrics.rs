//! `/metrics` of the agent binary (against a fake supervisor and a fake
//! depmgr), parsed: heartbeats are counted, a package download is counted
//! and timed in `agent_package_download_seconds`; and `--log-format json`
//! writes one JSON object per log line.

use std::time::Duration;

use proto::heartbeat::ReportKind;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::prefetch;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::FakeSupervisor;
use testkit::package::PackageBuilder;
use testkit::prom::scrape;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn metrics_count_heartbeats_and_time_downloads_and_logs_are_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = FakeSupervisor::start().await;
    let pkgs = FakeDepmgr::start().await;
    let web = PackageBuilder::new("web", "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", "#!/bin/sh\nexec sleep 1000\n", 0o755)
        .build();
    pkgs.put(&web);
    let data = tmp.path().join("data");
    let mut args = AgentArgs::new(&data, &sup.addr);
    args.extra = vec!["--log-format".into(), "json".into()];
    let agent = AgentProc::spawn(args);
    agent.ready().await;

    let before = scrape(&agent.listen).await.expect("scrape");
    before
        .check_histogram("agent_package_download_seconds")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before.count("agent_package_download_seconds"), 0.0);
    assert_eq!(
        before
            .types
            .get("agent_heartbeats_total")
            .map(String::as_str),
        Some("counter")
    );
    eventually("heartbeats counted", T, || async {
        let m = scrape(&agent.listen).await?;
        (m.value("agent_heartbeats_total", &[("result", "sent")])? >= 2.0).then_some(())
    })
    .await;

    // A prefetch downloads the package: counted, sized and timed.
    sup.set_directives(vec![prefetch("web", 5, &[&web], &pkgs.url)]);
    sup.wait_report("web", ReportKind::Prestaged, T).await;
    let m = scrape(&agent.listen).await.expect("scrape");
    m.check_histogram("agent_package_download_seconds")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.count("agent_package_download_seconds"), 1.0);
    assert_eq!(
        m.value("agent_package_downloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("agent_package_download_bytes_total", &[]),
        Some(web.bytes.len() as f64)
    );
    assert_eq!(m.value("agent_tls_handshakes_failed_total", &[]), Some(0.0));

    let log = agent.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}
