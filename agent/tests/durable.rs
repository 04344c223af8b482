//! Faults beyond the network, for the node manager: the real agent binary
//! against a fake supervisor and a fake depmgr.
//!
//! - Durable before it takes effect: with its data dir on a full
//!   filesystem the agent cannot save a directive's epoch record, so it
//!   executes nothing (no placement, no download, no process) and says so
//!   (status API refusals, a report to the leader); once space is back the
//!   leader's repeat installs and runs the module.
//! - What runs is what was verified: a directive whose manifest differs
//!   from the `manifest.toml` inside the digest-verified archive fails its
//!   install, naming the field, and the directive's command never runs.

use std::path::Path;
use std::time::Duration;

use proto::heartbeat::{Directive, ModuleStatus, ReportKind};
use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::install;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::FakeSupervisor;
use testkit::package::PackageBuilder;

const SLEEPER: &str = include_str!("modules/sleeper.sh");
const T: Duration = Duration::from_secs(15);

use testkit::tmpfs::Tmpfs;

/// The status API's refusals.
async fn refusals(agent: &AgentProc) -> Vec<String> {
    let Some(s) = agent.status().await else {
        return vec![];
    };
    s["refused"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_full_data_dir_executes_nothing_until_space_is_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let disk = match Tmpfs::mount(&data, "8m") {
        Ok(t) => t,
        Err(why) => {
            println!(
                "SKIPPED a_full_data_dir_executes_nothing_until_space_is_back: \
                 needs root and permission to mount a tmpfs: {why}"
            );
            return;
        }
    };
    let sup = FakeSupervisor::start().await;
    let pkgs = FakeDepmgr::start().await;
    let web = PackageBuilder::new("web", "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", SLEEPER, 0o755)
        .build();
    pkgs.put(&web);
    let agent = AgentProc::spawn(AgentArgs::new(&data, &sup.addr));
    agent.ready().await;
    disk.fill();

    sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &pkgs.url,
    )]);
    let needle = "install directive for epoch 1 not executed: cannot persist the epoch record";
    let report = sup.wait_report("web", ReportKind::InstallFailed, T).await;
    assert!(
        report.message.starts_with(needle) && report.message.contains("No space left on device"),
        "{report:?}"
    );
    let refused = eventually("the refusal in the status API", T, || async {
        refusals(&agent)
            .await
            .into_iter()
            .find(|r| r.starts_with(&format!("web: {needle}")))
    })
    .await;
    assert!(refused.contains("No space left on device"), "{refused}");
    assert!(
        agent.log_text().contains(needle),
        "no log line names the error:\n{}",
        agent.log_text()
    );

    // The leader keeps repeating the directive: still nothing executes.
    let from = sup.beat_count();
    eventually("five more heartbeats", T, || async {
        (sup.beat_count() >= from + 5).then_some(())
    })
    .await;
    let s = agent.status().await.expect("the agent keeps running");
    assert!(
        s["modules"].as_array().expect("modules").is_empty(),
        "a module entered the table: {s}"
    );
    assert!(sup.module("web").is_none(), "the leader sees web held");
    assert!(
        !data.join("modules/web").exists(),
        "a placement dir appeared"
    );
    assert_eq!(pkgs.fetches(), 0, "the package was downloaded");
    let state = std::fs::read_to_string(data.join("state.json")).expect("state.json");
    assert!(!state.contains("\"web\""), "state.json names web:\n{state}");
    let reports = sup
        .reports()
        .iter()
        .filter(|r| r.module == "web" && r.message.starts_with(needle))
        .count();
    assert!(reports >= 1);

    // Space is back: the repeat installs and runs the module.
    std::fs::remove_file(disk.ballast()).expect("remove the ballast");
    sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    assert!(testkit::process::pid_alive(pid));
    assert!(data.join("modules/web/1/web-1.0.0/bin/run").is_file());
    let state = std::fs::read_to_string(data.join("state.json")).expect("state.json");
    let state: serde_json::Value = serde_json::from_str(&state).expect("state.json is JSON");
    assert_eq!(state["epochs"]["web"]["highest"], 1, "{state}");
    drop(agent);
}

/// A module whose script leaves `marker` behind when it runs.
fn marking(marker: &Path) -> String {
    format!(
        "#!/bin/sh\ntouch '{}'\nexec sleep 100000\n",
        marker.display()
    )
}

#[tokio::test]
async fn a_directive_manifest_that_differs_from_the_archive_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let sup = FakeSupervisor::start().await;
    let pkgs = FakeDepmgr::start().await;
    let ran_x = tmp.path().join("x-ran");
    let ran_y = tmp.path().join("y-ran");
    // The archive's manifest.toml runs bin/run (Y); bin/evil (X) is in the
    // archive too, but no verified manifest names it.
    let build = |name: &str| {
        PackageBuilder::new(
            name,
            "1.0.0",
            "command = \"bin/run\"\n[env]\nMODE = \"safe\"\n",
        )
        .file("bin/run", marking(&ran_y).into_bytes(), 0o755)
        .file("bin/evil", marking(&ran_x).into_bytes(), 0o755)
        .build()
    };
    let web = build("web");
    let api = build("api");
    pkgs.put(&web);
    pkgs.put(&api);
    let agent = AgentProc::spawn(AgentArgs::new(&data, &sup.addr));
    agent.ready().await;

    let mut command = install("web", 1, Fencing::AtMostOne, &[&web], &pkgs.url);
    if let Directive::Install(i) = &mut command {
        i.package.manifest.command = "bin/evil".into();
    }
    let mut env = install("api", 1, Fencing::AtMostOne, &[&api], &pkgs.url);
    if let Directive::Install(i) = &mut env {
        i.package.manifest.env.insert("MODE".into(), "evil".into());
    }
    sup.set_directives(vec![command, env]);
    for (name, diff) in [
        ("web", r#"(command: "bin/evil" vs "bin/run")"#),
        ("api", r#"(env: {"MODE": "evil"} vs {"MODE": "safe"})"#),
    ] {
        sup.wait_status(name, ModuleStatus::InstallFailed, T).await;
        let r = sup.wait_report(name, ReportKind::InstallFailed, T).await;
        assert_eq!(
            r.message,
            format!("the directive's manifest differs from the package's manifest.toml {diff}"),
            "{name}"
        );
        eventually(&format!("{name}'s placement removed"), T, || async {
            (!data.join(format!("modules/{name}/1")).exists()).then_some(())
        })
        .await;
    }
    let s = agent.status().await.expect("status");
    for m in s["modules"].as_array().expect("modules") {
        assert!(m["pid"].is_null(), "a process runs: {s}");
        assert!(
            m["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("differs from the package's manifest.toml")),
            "{s}"
        );
    }
    assert!(!ran_x.exists(), "the directive's command ran");
    assert!(!ran_y.exists(), "a refused install ran something");
    assert!(
        agent
            .log_text()
            .contains("install failed: the directive's manifest differs"),
        "{}",
        agent.log_text()
    );
}
