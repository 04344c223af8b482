//! The agent binary against a fake supervisor and a fake depmgr, with real
//! module processes (the shell scripts in `tests/modules/`).

use std::path::Path;
use std::time::{Duration, Instant};

use proto::heartbeat::{ModuleStatus, ReportKind};
use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::{install, restore, stop};
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::{FakeSupervisor, Mode};
use testkit::package::{BuiltPackage, PackageBuilder};
use testkit::process::{pid_alive, signal};
use testkit::raw_tar::{EntryType, Raw};
use testkit::{eventually, free_addr};

const SLEEPER: &str = include_str!("modules/sleeper.sh");
const FORKER: &str = include_str!("modules/forker.sh");
const SETSID_FORKER: &str = include_str!("modules/setsid_forker.sh");
const HIDDEN_FORKER: &str = include_str!("modules/hidden_forker.sh");
const FLAKY: &str = include_str!("modules/flaky.sh");
const ENVDUMP: &str = include_str!("modules/envdump.sh");
const T: Duration = Duration::from_secs(10);

fn package(name: &str, script: &str, manifest_extra: &str) -> BuiltPackage {
    PackageBuilder::new(
        name,
        "1.0.0",
        &format!("command = \"bin/run\"\n{manifest_extra}"),
    )
    .file("bin/run", script, 0o755)
    .build()
}

struct World {
    tmp: tempfile::TempDir,
    sup: FakeSupervisor,
    pkgs: FakeDepmgr,
}

impl World {
    async fn new() -> World {
        World {
            tmp: tempfile::tempdir().expect("tempdir"),
            sup: FakeSupervisor::start().await,
            pkgs: FakeDepmgr::start().await,
        }
    }
    fn data(&self) -> std::path::PathBuf {
        self.tmp.path().join("data")
    }
    async fn agent(&self, f: impl FnOnce(&mut AgentArgs)) -> AgentProc {
        let data = self.data();
        let mut args = AgentArgs::new(&data, &self.sup.addr);
        f(&mut args);
        let a = AgentProc::spawn(args);
        a.ready().await;
        a
    }
}

#[tokio::test]
async fn exit_is_reported_within_one_round_trip() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    // A long period: only the edge-triggered heartbeat can be fast.
    let agent = w.agent(|a| a.heartbeat_ms = 5000).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    // The first heartbeat went before the directive was set: wait for one
    // period at most, then the install runs.
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let from = w.sup.beat_count();
    let killed = Instant::now();
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    let beat = eventually("a heartbeat showing web failed", T, || async {
        w.sup.first_beat_with(from, "web", ModuleStatus::Failed)
    })
    .await;
    let latency = beat.at.duration_since(killed);
    println!("kill -> heartbeat showing the failure: {latency:?}");
    assert!(latency < Duration::from_millis(1000), "took {latency:?}");
    let r = w.sup.wait_report("web", ReportKind::Failed, T).await;
    assert!(r.message.contains("signal 9"), "{r:?}");
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let w = World::new().await;
    let out = w.tmp.path().join("grandchild.pid");
    let web = package(
        "web",
        FORKER,
        &format!("[env]\nOUT = \"{}\"\n", out.display()),
    );
    w.pkgs.put(&web);
    let agent = w.agent(|a| a.stop_grace_ms = 300).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let leader = agent.wait_pid("web", T).await;
    let grandchild: u32 = eventually("grandchild pid file", T, || async {
        std::fs::read_to_string(&out).ok()?.trim().parse().ok()
    })
    .await;
    assert!(pid_alive(grandchild));
    w.sup.set_directives(vec![stop("web", 1)]);
    w.sup.wait_gone("web", T).await;
    eventually("module and grandchild dead", T, || async {
        (!pid_alive(leader) && !pid_alive(grandchild)).then_some(())
    })
    .await;
    // Forgotten: the status API no longer lists it.
    let s = agent.status().await.expect("status");
    assert!(s["modules"].as_array().expect("modules").is_empty(), "{s}");
}

#[tokio::test]
async fn failing_probe_is_reported_as_failed() {
    let w = World::new().await;
    let web = package(
        "web",
        FLAKY,
        "[health]\nexec = [\"test\", \"-f\", \"healthy\"]\ninterval_ms = 100\ntimeout_ms = 500\nfailure_threshold = 2\n",
    );
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    w.sup.wait_status("web", ModuleStatus::Failed, T).await;
    let r = w.sup.wait_report("web", ReportKind::Failed, T).await;
    assert!(r.message.contains("health probe failed 2 times"), "{r:?}");
    // A failed module does not keep running unsupervised.
    eventually("the unhealthy process stopped", T, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn install_verifies_unpacks_dependencies_and_restores_from_cache() {
    let w = World::new().await;
    let out = w.tmp.path().join("env.txt");
    let base = PackageBuilder::new("base", "1.0.0", "")
        .file("share/greeting.txt", "from base", 0o644)
        .build();
    let web = package(
        "web",
        ENVDUMP,
        &format!(
            "args = [\"--port\", \"8080\"]\n[env]\nGREETING = \"hello\"\nOUT = \"{}\"\n[dependencies]\nbase = \"1.0.0\"\n",
            out.display()
        ),
    );
    w.pkgs.put(&base);
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        3,
        Fencing::AtMostOne,
        &[&base, &web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let first_pid = agent.wait_pid("web", T).await;
    let env = eventually("env dump", T, || async {
        std::fs::read_to_string(&out).ok()
    })
    .await;
    let module_dir = w.data().join("modules/web/3/web-1.0.0");
    for line in [
        "MODULE_NAME=web".to_string(),
        "MODULE_EPOCH=3".to_string(),
        "MODULE_NODE=node-a".to_string(),
        format!("MODULE_DIR={}", module_dir.display()),
        format!("PWD={}", module_dir.display()),
        "GREETING=hello".to_string(),
        "ARGS=--port 8080".to_string(),
        "BASE=from base".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line:?} in\n{env}");
    }
    assert!(
        w.data()
            .join("modules/web/3/base-1.0.0/share/greeting.txt")
            .is_file()
    );
    for p in [&base, &web] {
        assert!(
            w.data()
                .join(format!("cache/{}.tar.gz", p.digest))
                .is_file()
        );
    }
    assert_eq!(w.pkgs.fetches(), 2);

    // The restore needs no depmgr: it is gone now.
    w.pkgs.shutdown();
    std::fs::remove_file(&out).expect("rm");
    w.sup.set_directives(vec![
        install("web", 3, Fencing::AtMostOne, &[&base, &web], &w.pkgs.url),
        restore("web", 3, 1),
    ]);
    let seen = eventually("restore 1 executed and running", T, || async {
        w.sup
            .module("web")
            .filter(|s| s.restore_seq == 1 && s.status == ModuleStatus::Running)
    })
    .await;
    assert_eq!(seen.epoch, 3);
    let second_pid = agent.wait_pid("web", T).await;
    assert_ne!(first_pid, second_pid);
    assert!(!pid_alive(first_pid));
    eventually("env dump after restore", T, || async {
        std::fs::read_to_string(&out).ok()
    })
    .await;
    let s = agent.status().await.expect("status");
    assert_eq!(s["modules"][0]["restarts"], 1, "{s}");
    assert_eq!(s["modules"][0]["state"], "running", "{s}");
}

#[tokio::test]
async fn tampered_archive_is_refused() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    let mut tampered = web.bytes.clone();
    let n = tampered.len();
    tampered[n - 10] ^= 0xff;
    w.pkgs.put_bytes(&web.digest, tampered);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup
        .wait_status("web", ModuleStatus::InstallFailed, T)
        .await;
    let r = w.sup.wait_report("web", ReportKind::InstallFailed, T).await;
    assert!(r.message.contains("digest mismatch"), "{r:?}");
    assert!(!w.data().join("modules/web/1/web-1.0.0").exists());
    assert!(
        !w.data()
            .join(format!("cache/{}.tar.gz", web.digest))
            .exists()
    );
    // The repeated directive is a no-op: one fetch only, status unchanged.
    let fetches = w.pkgs.fetches();
    let n = w.sup.beat_count();
    eventually("a few more heartbeats", T, || async {
        (w.sup.beat_count() > n + 3).then_some(())
    })
    .await;
    assert_eq!(w.pkgs.fetches(), fetches);
    assert_eq!(
        w.sup.module("web").map(|s| s.status),
        Some(ModuleStatus::InstallFailed)
    );
    let s = agent.status().await.expect("the agent keeps running");
    assert!(
        s["modules"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("digest"),
        "{s}"
    );
}

#[tokio::test]
async fn escaping_archives_are_refused() {
    let w = World::new().await;
    let abs = format!("/tmp/agent-test-abs-{}", std::process::id());
    // Package dir is <data>/modules/<m>/1/<m>-1.0.0: five levels up is the
    // temp dir that holds <data>.
    let cases: Vec<(&str, Raw, &str)> = vec![
        (
            "dotdot",
            Raw::new().exec("../../../../../escaped.txt", b"x"),
            "escapes",
        ),
        ("absolute", Raw::new().exec(&abs, b"x"), "absolute"),
        (
            "link",
            Raw::new()
                .entry_with_mode(EntryType::Symlink, "up", "../../../../..", b"", 0o755)
                .exec("bin/run", SLEEPER.as_bytes()),
            "outside",
        ),
        (
            "through",
            Raw::new()
                .entry_with_mode(EntryType::Symlink, "dir", ".", b"", 0o755)
                .exec("dir/../../escaped2.txt", b"x"),
            "escapes",
        ),
    ];
    let mut directives = Vec::new();
    let mut needles = Vec::new();
    for (name, raw, needle) in cases {
        let manifest = proto::manifest::Manifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\ncommand = \"bin/run\""
        ))
        .expect("manifest");
        let built = BuiltPackage::from_bytes(name, "1.0.0", manifest, raw.gz());
        w.pkgs.put(&built);
        directives.push(install(name, 1, Fencing::AtMostOne, &[&built], &w.pkgs.url));
        needles.push((name.to_string(), needle.to_string()));
    }
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(directives);
    for (name, needle) in &needles {
        w.sup
            .wait_status(name, ModuleStatus::InstallFailed, T)
            .await;
        let r = w.sup.wait_report(name, ReportKind::InstallFailed, T).await;
        assert!(r.message.contains(needle.as_str()), "{name}: {r:?}");
    }
    assert!(!w.tmp.path().join("escaped.txt").exists());
    assert!(!w.tmp.path().join("escaped2.txt").exists());
    assert!(!Path::new(&abs).exists());
    assert!(agent.status().await.is_some(), "the agent keeps running");
}

#[tokio::test]
async fn missing_command_fails_the_install() {
    let w = World::new().await;
    let web = PackageBuilder::new("web", "1.0.0", "command = \"bin/nope\"\n")
        .file("bin/run", SLEEPER, 0o755)
        .build();
    w.pkgs.put(&web);
    let _agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    let r = w.sup.wait_report("web", ReportKind::InstallFailed, T).await;
    assert!(r.message.contains("bin/nope does not exist"), "{r:?}");
}

#[tokio::test]
async fn stale_epoch_directives_are_refused() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        10,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    w.sup
        .send_once(install("web", 5, Fencing::AtMostOne, &[&web], &w.pkgs.url));
    w.sup.send_once(restore("web", 9, 1));
    w.sup.send_once(stop("web", 4));
    let stale = eventually("three stale-directive reports", T, || async {
        let r: Vec<_> = w
            .sup
            .reports()
            .into_iter()
            .filter(|r| r.kind == ReportKind::StaleDirective)
            .collect();
        (r.len() >= 3).then_some(r)
    })
    .await;
    assert!(
        stale
            .iter()
            .all(|r| r.module == "web" && r.message.contains("older")),
        "{stale:?}"
    );
    let seen = w.sup.module("web").expect("web");
    assert_eq!((seen.epoch, seen.status), (10, ModuleStatus::Running));
    assert_eq!(agent.module_pid("web").await, Some(pid));
    let s = agent.status().await.expect("status");
    assert_eq!(s["refused"].as_array().map(Vec::len), Some(3), "{s}");
}

#[tokio::test]
async fn lease_expiry_fences_at_most_one_and_spares_at_least_one() {
    let w = World::new().await;
    let amo = package("amo", SLEEPER, "");
    let alo = package("alo", SLEEPER, "");
    w.pkgs.put(&amo);
    w.pkgs.put(&alo);
    w.sup.set_lease_ms(1500);
    let agent = w.agent(|a| a.stop_grace_ms = 200).await;
    w.sup.set_directives(vec![
        install("amo", 1, Fencing::AtMostOne, &[&amo], &w.pkgs.url),
        install("alo", 2, Fencing::AtLeastOne, &[&alo], &w.pkgs.url),
    ]);
    w.sup.wait_status("amo", ModuleStatus::Running, T).await;
    w.sup.wait_status("alo", ModuleStatus::Running, T).await;
    let amo_pid = agent.wait_pid("amo", T).await;
    let alo_pid = agent.wait_pid("alo", T).await;

    // The leader goes silent. The agent's lease runs from the *sending* of
    // the last accepted heartbeat, which is before its arrival here.
    w.sup.set_mode(Mode::Hang);
    let last_accepted = w.sup.beats().last().expect("beats").at;
    let lease_end = last_accepted + Duration::from_millis(1500);
    let dead_at = eventually("the at-most-one module is stopped", T, || async {
        (!pid_alive(amo_pid)).then(Instant::now)
    })
    .await;
    assert!(
        dead_at < lease_end,
        "at-most-one module died {:?} after the lease ended",
        dead_at.duration_since(lease_end)
    );
    println!(
        "at-most-one module dead {:?} before the lease ended",
        lease_end.duration_since(dead_at)
    );
    tokio::time::sleep_until((lease_end + Duration::from_millis(500)).into()).await;
    assert!(pid_alive(alo_pid), "the at-least-one module keeps running");

    // The leader is back: the agent reports the fence and waits for orders.
    w.sup.set_directives(vec![]);
    w.sup.set_mode(Mode::Accept);
    w.sup.wait_status("amo", ModuleStatus::Fenced, T).await;
    let r = w.sup.wait_report("amo", ReportKind::Fenced, T).await;
    assert!(r.message.contains("lease expired"), "{r:?}");
    assert_eq!(
        w.sup.module("alo").map(|s| s.status),
        Some(ModuleStatus::Running)
    );
    assert_eq!(agent.module_pid("alo").await, Some(alo_pid));
    // Not restarted on its own; a restore brings it back.
    assert_eq!(agent.module_pid("amo").await, None);
    w.sup.set_directives(vec![restore("amo", 1, 1)]);
    w.sup.wait_status("amo", ModuleStatus::Running, T).await;
}

#[tokio::test]
async fn a_lease_as_long_as_the_stop_grace_keeps_at_most_one_running() {
    // The documented pairing: leases of 1 s, agents with the default stop
    // grace (1 s) and heartbeats every 200 ms. The fence shortens its grace
    // to half the lease instead of fencing every module at once.
    let w = World::new().await;
    let amo = package("amo", SLEEPER, "");
    w.pkgs.put(&amo);
    w.sup.set_lease_ms(1000);
    let agent = w
        .agent(|a| {
            a.stop_grace_ms = 1000;
            a.heartbeat_ms = 200;
        })
        .await;
    w.sup.set_directives(vec![install(
        "amo",
        1,
        Fencing::AtMostOne,
        &[&amo],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("amo", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("amo", T).await;
    // When it dies, taken by a thread woken by the kernel (a polling loop
    // on a loaded machine sees it up to a poll interval late).
    let exit = testkit::process::watch_exit(pid).expect("pidfd of the module");
    // Three leases long: the same process runs, and nothing is fenced.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(pid_alive(pid), "the at-most-one module was stopped");
        assert_eq!(
            w.sup.module("amo").map(|s| s.status),
            Some(ModuleStatus::Running)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(agent.module_pid("amo").await, Some(pid));
    assert!(
        agent
            .log_text()
            .contains("the granted lease is short for the stop grace"),
        "the agent says why it shortens the grace"
    );

    // And the fence still beats the lease's end when the leader goes
    // silent.
    w.sup.set_mode(Mode::Hang);
    let last_accepted = w.sup.beats().last().expect("beats").at;
    let lease_end = last_accepted + Duration::from_millis(1000);
    let dead_at = tokio::task::spawn_blocking(move || exit.recv_timeout(T))
        .await
        .expect("join")
        .expect("the at-most-one module is stopped");
    assert!(
        dead_at < lease_end,
        "at-most-one module died {:?} after the lease ended",
        dead_at.duration_since(lease_end)
    );
}

#[tokio::test]
async fn sigkill_of_the_agent_takes_its_modules_along() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    let mut agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtLeastOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    signal(agent.pid(), nix::sys::signal::Signal::SIGKILL);
    agent.wait_exit(T).await;
    eventually("the module died with its agent", T, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_incarnation_and_epochs() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    let mut agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        7,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let first_incarnation = w.sup.beats()[0].hb.incarnation;

    // Clean shutdown: modules stopped, a last heartbeat says so, exit 0.
    let status = agent.terminate(T).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log_text());
    assert!(!pid_alive(pid));
    assert_eq!(
        w.sup.module("web").map(|s| s.status),
        Some(ModuleStatus::Stopped)
    );
    drop(agent);

    // Back on the same data dir, with depmgr gone and a new leader.
    w.pkgs.shutdown();
    let sup2 = FakeSupervisor::start().await;
    let data = w.data();
    let mut args = AgentArgs::new(&data, &sup2.addr);
    args.heartbeat_ms = 100;
    let agent = AgentProc::spawn(args);
    agent.ready().await;
    let first = eventually("first heartbeat", T, || async {
        sup2.beats().first().cloned()
    })
    .await;
    assert_eq!(first.hb.incarnation, first_incarnation + 1);
    let table = first.hb.table.expect("first heartbeat carries the table");
    assert_eq!(table.modules.len(), 1);
    assert_eq!(
        (table.modules[0].module.as_str(), table.modules[0].epoch),
        ("web", 7)
    );
    assert_eq!(
        first.hb.statuses.to_statuses(),
        Some(vec![ModuleStatus::Stopped])
    );
    assert_eq!(
        agent.module_pid("web").await,
        None,
        "not restarted on its own"
    );

    sup2.send_once(install(
        "web",
        6,
        Fencing::AtMostOne,
        &[&web],
        "http://127.0.0.1:1",
    ));
    let r = sup2.wait_report("web", ReportKind::StaleDirective, T).await;
    assert_eq!(r.epoch, 6);
    sup2.set_directives(vec![restore("web", 7, 1)]);
    sup2.wait_status("web", ModuleStatus::Running, T).await;
    let s = agent.status().await.expect("status");
    assert_eq!(s["modules"][0]["epoch"], 7);
    assert_eq!(s["incarnation"], first_incarnation + 1);
}

#[tokio::test]
async fn follows_the_leader_hint_and_skips_unreachable_supervisors() {
    let w = World::new().await;
    let follower = FakeSupervisor::start().await;
    follower.set_mode(Mode::NotLeader(Some(w.sup.addr.clone())));
    let dead = free_addr();
    let data = w.data();
    let mut args = AgentArgs::new(&data, &dead);
    args.supervisors = vec![dead, follower.addr.clone()];
    let agent = AgentProc::spawn(args);
    agent.ready().await;
    let beat = eventually("a heartbeat at the leader", T, || async {
        w.sup.beats().first().cloned()
    })
    .await;
    assert!(beat.hb.table.is_some(), "a new leader gets the table");
    assert!(follower.beat_count() >= 1);
    let deadline = Instant::now() + T;
    let s = loop {
        let s = agent.status().await.expect("status");
        if s["leader"] == w.sup.addr.as_str() {
            break s;
        }
        assert!(Instant::now() < deadline, "leader never shown: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(s["lease_ms_left"].as_u64().unwrap_or(0) > 0, "{s}");
}

#[tokio::test]
async fn bad_flags_and_unusable_data_dir_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let file = file.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--node", "a", "--listen", "127.0.0.1:1"], "--data-dir"),
        (
            vec![
                "--node",
                "a",
                "--listen",
                "nope",
                "--data-dir",
                "/tmp/x",
                "--supervisors",
                "h:1",
            ],
            "--listen",
        ),
        (
            vec![
                "--node",
                "a",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                "/tmp/x",
                "--supervisors",
                "h:1",
                "--heartbeat-ms",
                "0",
            ],
            "--heartbeat-ms",
        ),
        (
            vec![
                "--node",
                "a",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &file,
                "--supervisors",
                "h:1",
            ],
            "not-a-dir",
        ),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read(&file).expect("read"),
        b"x",
        "nothing changed on disk"
    );
    // A listen address in use: exit 2, and the (new) data dir is not created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let fresh = tmp.path().join("fresh");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args([
            "--node",
            "a",
            "--listen",
            &taken_addr,
            "--supervisors",
            "h:1",
        ])
        .arg("--data-dir")
        .arg(&fresh)
        .env_remove("RUST_LOG")
        .output()
        .expect("run agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&taken_addr), "{stderr}");
    assert!(!fresh.exists(), "the data dir was created: {stderr}");
}

#[tokio::test]
async fn grandchildren_die_with_a_killed_agent() {
    let w = World::new().await;
    let out = w.tmp.path().join("grandchild.pid");
    let web = package(
        "web",
        SETSID_FORKER,
        &format!("[env]\nOUT = \"{}\"\n", out.display()),
    );
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtLeastOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let grandchild: u32 = eventually("grandchild pid file", T, || async {
        std::fs::read_to_string(&out).ok()?.trim().parse().ok()
    })
    .await;
    signal(agent.pid(), nix::sys::signal::Signal::SIGKILL);
    // Not restarted: the module's shim sees its agent gone and kills the
    // whole tree, the grandchild in its own session too.
    eventually(
        "the module and its grandchild died with the agent",
        T,
        || async { (!pid_alive(pid) && !pid_alive(grandchild)).then_some(()) },
    )
    .await;
    // The shim logs the kill once it is done.
    let log_path = agent.data_dir.join("modules/web/output.log");
    eventually("the shim says why in output.log", T, || async {
        std::fs::read_to_string(&log_path)
            .ok()?
            .contains("module-shim: the agent is gone")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn grandchildren_left_by_a_killed_shim_and_agent_are_swept_at_restart() {
    let w = World::new().await;
    let out = w.tmp.path().join("grandchild.pid");
    let web = package(
        "web",
        SETSID_FORKER,
        &format!("[env]\nOUT = \"{}\"\n", out.display()),
    );
    w.pkgs.put(&web);
    let mut agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let grandchild: u32 = eventually("grandchild pid file", T, || async {
        std::fs::read_to_string(&out).ok()?.trim().parse().ok()
    })
    .await;
    // The shim itself is killed (its pid is the module's parent), then
    // the agent: nothing is left to kill the grandchild, which left the
    // module's process group.
    let shim = parent_of(pid);
    signal(shim, nix::sys::signal::Signal::SIGKILL);
    signal(agent.pid(), nix::sys::signal::Signal::SIGKILL);
    agent.wait_exit(T).await;
    eventually("the module died with its shim", T, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    assert!(pid_alive(grandchild));
    drop(agent);
    let agent = w.agent(|_| {}).await;
    eventually("the grandchild swept at restart", T, || async {
        (!pid_alive(grandchild)).then_some(())
    })
    .await;
    assert!(
        agent.log_text().contains("killed leftovers"),
        "{}",
        agent.log_text()
    );
}

/// With a cgroup per module (cgroup v1 freezer, writable as root on this
/// host), even a grandchild with an empty environment in a session of its
/// own, left when its shim and its agent are killed with SIGKILL, is found
/// and killed at restart: the environment sweep cannot see it, the cgroup
/// holds it.
#[tokio::test]
async fn a_hidden_grandchild_left_by_a_killed_shim_is_swept_from_its_cgroup() {
    let probe = std::path::Path::new("/sys/fs/cgroup/freezer/sup-modules");
    if std::fs::create_dir_all(probe).is_err() {
        println!("SKIPPED: no writable cgroup v1 freezer hierarchy here");
        return;
    }
    let w = World::new().await;
    let out = w.tmp.path().join("grandchild.pid");
    let web = package(
        "web",
        HIDDEN_FORKER,
        &format!("[env]\nOUT = \"{}\"\n", out.display()),
    );
    w.pkgs.put(&web);
    let mut agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    let grandchild: u32 = eventually("grandchild pid file", T, || async {
        std::fs::read_to_string(&out).ok()?.trim().parse().ok()
    })
    .await;
    let shim = parent_of(pid);
    signal(shim, nix::sys::signal::Signal::SIGKILL);
    signal(agent.pid(), nix::sys::signal::Signal::SIGKILL);
    agent.wait_exit(T).await;
    eventually("the module died with its shim", T, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    assert!(pid_alive(grandchild), "nothing else killed it");
    drop(agent);
    let agent = w.agent(|_| {}).await;
    eventually("the hidden grandchild swept at restart", T, || async {
        (!pid_alive(grandchild)).then_some(())
    })
    .await;
    assert!(
        agent.log_text().contains("in their cgroups"),
        "{}",
        agent.log_text()
    );
}

/// The parent pid of `pid`, from `/proc`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ppid")
}

#[tokio::test]
async fn a_newer_epoch_replaces_the_running_placement() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        1,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let old = agent.wait_pid("web", T).await;
    w.sup.set_directives(vec![install(
        "web",
        4,
        Fencing::AtMostOne,
        &[&web],
        &w.pkgs.url,
    )]);
    let seen = eventually("epoch 4 running", T, || async {
        w.sup
            .module("web")
            .filter(|s| s.epoch == 4 && s.status == ModuleStatus::Running)
    })
    .await;
    assert_eq!(seen.restore_seq, 0);
    let new = agent.wait_pid("web", T).await;
    assert_ne!(old, new);
    eventually("old process gone", T, || async {
        (!pid_alive(old)).then_some(())
    })
    .await;
    eventually("old placement removed", T, || async {
        (!w.data().join("modules/web/1").exists()).then_some(())
    })
    .await;
    assert!(w.data().join("modules/web/4/web-1.0.0/bin/run").is_file());
    // The replaced placement's exit is not a failure of the module.
    assert!(
        !w.sup.reports().iter().any(|r| r.kind == ReportKind::Failed),
        "{:?}",
        w.sup.reports()
    );
    // A late directive for the old placement is refused.
    w.sup.send_once(restore("web", 1, 1));
    w.sup
        .wait_report("web", ReportKind::StaleDirective, T)
        .await;
}

#[tokio::test]
async fn a_restore_waits_its_backoff_and_reports_its_seq() {
    let w = World::new().await;
    let web = package("web", SLEEPER, "");
    w.pkgs.put(&web);
    let agent = w.agent(|_| {}).await;
    w.sup.set_directives(vec![install(
        "web",
        2,
        Fencing::AtLeastOne,
        &[&web],
        &w.pkgs.url,
    )]);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    let pid = agent.wait_pid("web", T).await;
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    w.sup.wait_status("web", ModuleStatus::Failed, T).await;
    let mut order = match restore("web", 2, 1) {
        proto::heartbeat::Directive::Restore(r) => r,
        other => panic!("{other:?}"),
    };
    order.backoff_ms = 800;
    let ordered = Instant::now();
    // Repeated in every reply, as the leader does until it sees the effect.
    w.sup
        .set_directives(vec![proto::heartbeat::Directive::Restore(order)]);
    let restoring = w.sup.wait_status("web", ModuleStatus::Restoring, T).await;
    assert_eq!(restoring.restore_seq, 1);
    w.sup.wait_status("web", ModuleStatus::Running, T).await;
    assert!(
        ordered.elapsed() >= Duration::from_millis(800),
        "restarted after {:?}, before the backoff",
        ordered.elapsed()
    );
    // The repeats were no-ops: one restart only.
    let n = w.sup.beat_count();
    eventually("a few more heartbeats", T, || async {
        (w.sup.beat_count() > n + 3).then_some(())
    })
    .await;
    let s = agent.status().await.expect("status");
    assert_eq!(s["modules"][0]["restarts"], 1, "{s}");
    assert_eq!(s["modules"][0]["state"], "running", "{s}");
}
