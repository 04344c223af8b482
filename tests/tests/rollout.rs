//! Versions with real processes: updates as health-gated rollouts through
//! `supctl update`, a bad version reverted, and a version that fails
//! everywhere quarantined.
//!
//! The module of these tests appends `node epoch version pid uptime` to a
//! ledger every 50 ms (`/proc/uptime`: one clock for every process of the
//! host), so the ledger shows which versions ran where and when: for an
//! `at-most-one` module the last line of the old version comes before the
//! first line of the new one; for an `at-least-one` module the two
//! overlap, so there is no gap at all. A bad version exits at once.

use std::path::Path;
use std::time::Duration;

use cluster_tests::{Options, TestCluster};
use proto::record::EventKind;
use testkit::eventually;
use testkit::spec::ModuleSpec;
use tokio::sync::Mutex;

/// One cluster at a time: the machine is small.
static SERIAL: Mutex<()> = Mutex::const_new(());
const T: Duration = Duration::from_secs(40);

/// Writes the package `web@<version>`: a ledger writer, or (`bad`) a
/// program that exits 1 at once.
fn ledger_package(dir: &Path, version: &str, ledger: &Path, bad: bool) {
    std::fs::create_dir_all(dir.join("bin")).expect("package dir");
    let manifest = format!(
        "name = \"web\"\nversion = \"{version}\"\ncommand = \"bin/run\"\n\n[env]\nLEDGER = \"{}\"\nVERSION = \"{version}\"\n",
        ledger.display()
    );
    std::fs::write(dir.join("manifest.toml"), manifest).expect("manifest");
    let script = if bad {
        "#!/bin/sh\necho \"version $VERSION cannot start\" >&2\nexit 1\n"
    } else {
        r#"#!/bin/sh
while :; do
  read up _ < /proc/uptime
  echo "$MODULE_NODE $MODULE_EPOCH $VERSION $$ $up" >> "$LEDGER"
  sleep 0.05
done
"#
    };
    let run = dir.join("bin/run");
    std::fs::write(&run, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One ledger line.
#[derive(Debug, Clone)]
struct Line {
    node: String,
    version: String,
    /// Seconds since boot, 10 ms resolution.
    at: f64,
}

fn ledger(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Line {
                node: f.first()?.to_string(),
                version: f.get(2)?.to_string(),
                at: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// When `old` last wrote and `new` first wrote (seconds since boot).
fn last_and_first(lines: &[Line], old: &str, new: &str) -> (f64, f64) {
    let last = lines
        .iter()
        .filter(|l| l.version == old)
        .map(|l| l.at)
        .fold(f64::MIN, f64::max);
    let first = lines
        .iter()
        .filter(|l| l.version == new)
        .map(|l| l.at)
        .fold(f64::MAX, f64::min);
    (last, first)
}

/// A cluster with `web@1.0.0` and `1.0.1` (good) and `1.0.2` (bad)
/// published, and the spec files of the updates written.
async fn cluster(fencing: &str) -> (TestCluster, std::path::PathBuf) {
    let c = TestCluster::start(Options::default()).await;
    let ledger_path = c.dir.path().join("ledger");
    for (version, bad) in [("1.0.0", false), ("1.0.1", false), ("1.0.2", true)] {
        let pkg = c.dir.path().join(format!("pkg-{version}"));
        ledger_package(&pkg, version, &ledger_path, bad);
        c.push_package(&pkg).await;
        let spec = ModuleSpec::new("web")
            .package("web", version)
            .restart(2, 100, 500)
            .max_nodes(2)
            .node(Some("a"))
            .fencing(fencing)
            .json();
        std::fs::write(
            c.dir.path().join(format!("web-{version}.json")),
            spec.to_string(),
        )
        .expect("spec file");
    }
    c.admin()
        .deploy(
            &serde_json::from_str(
                &std::fs::read_to_string(c.dir.path().join("web-1.0.0.json")).expect("spec"),
            )
            .expect("json"),
        )
        .await
        .expect("deploy");
    eventually("1.0.0 writes on a", T, || async {
        ledger(&ledger_path)
            .iter()
            .any(|l| l.node == "a" && l.version == "1.0.0")
            .then_some(())
    })
    .await;
    // Healthy (revision 1 good: a failed update can go back to it).
    c.wait_module("web", "web running", T, |m| m.state == "running")
        .await;
    (c, ledger_path)
}

/// `supctl update <spec>` of `web-<version>.json`: its exit status,
/// stdout and stderr.
fn supctl_update(c: &TestCluster, version: &str) -> (bool, String, String) {
    let out = c
        .supctl()
        .arg("update")
        .arg(c.dir.path().join(format!("web-{version}.json")))
        .arg("--timeout")
        .arg("60")
        .output()
        .expect("run supctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `version` has written `n` more lines than now.
async fn more_lines(path: &Path, version: &str, n: usize) {
    let count = |v: &str| ledger(path).iter().filter(|l| l.version == v).count();
    let seen = count(version);
    eventually(&format!("{n} more lines of {version}"), T, || async {
        (count(version) >= seen + n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_at_most_one_never_overlaps_and_a_bad_version_is_reverted() {
    let _serial = SERIAL.lock().await;
    let (c, ledger_path) = cluster("at-most-one").await;

    // 1.0.0 → 1.0.1: supctl waits for the health gate and says so.
    let (ok, stdout, stderr) = supctl_update(&c, "1.0.1");
    assert!(ok, "supctl update failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("web: revision 2 running on a (web@1.0.1)"),
        "{stdout}"
    );
    assert!(stderr.contains("rolling out revision 2"), "{stderr}");
    let m = c.admin().module("web").await.expect("module");
    let r = m.rollout.clone().expect("rollout");
    assert_eq!((r.from, r.to, r.state.as_str()), (1, 2, "completed"));
    assert_eq!((m.revision, m.state.as_str()), (2, "running"));
    more_lines(&ledger_path, "1.0.1", 10).await;
    let lines = ledger(&ledger_path);
    let (last_old, first_new) = last_and_first(&lines, "1.0.0", "1.0.1");
    assert!(
        last_old < first_new,
        "at-most-one: 1.0.0 wrote at {last_old} after 1.0.1 started at {first_new}"
    );
    assert!(
        lines.iter().all(|l| l.node == "a"),
        "updated in place on a: {:?}",
        lines.iter().find(|l| l.node != "a")
    );

    // 1.0.2 exits at start: reverted to revision 2, supctl fails with why.
    let (ok, stdout, stderr) = supctl_update(&c, "1.0.2");
    assert!(!ok, "a reverted update must fail:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("revision 3 failed and was reverted to revision 2"),
        "{stderr}"
    );
    let m = c
        .wait_module("web", "web back on 1.0.1, running", T, |m| {
            m.state == "running" && m.package.version == "1.0.1"
        })
        .await;
    let r = m.rollout.clone().expect("rollout");
    assert_eq!((r.from, r.to, r.state.as_str()), (3, 2, "reverted"));
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("before it was healthy"),
        "{r:?}"
    );
    more_lines(&ledger_path, "1.0.1", 10).await;
    let history = c.admin().history("web").await.expect("history");
    let outcomes: Vec<(u32, &str, bool)> = history
        .iter()
        .map(|r| (r.revision, r.outcome.as_str(), r.good))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "superseded", true),
            (2, "active", true),
            (3, "failed", false)
        ]
    );
    let kinds: Vec<EventKind> = c
        .events_of("web")
        .await
        .iter()
        .filter_map(|e| e.event_kind())
        .collect();
    for k in [
        EventKind::RolloutStarted,
        EventKind::RolloutCompleted,
        EventKind::RolloutReverted,
    ] {
        assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
    }
    assert!(!kinds.contains(&EventKind::FailoverStarted), "{kinds:?}");

    // Bad input: an update while nothing is wrong but the package is
    // unknown to depmgr: 404 naming it, nothing changes.
    let mut spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.dir.path().join("web-1.0.1.json")).expect("spec"),
    )
    .expect("json");
    spec["package"]["version"] = "9.9.9".into();
    let err = c
        .admin()
        .update("web", &spec)
        .await
        .expect_err("unknown version");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");
    assert!(err.to_string().contains("web@9.9.9"), "{err}");
    assert_eq!(c.admin().module("web").await.expect("module").revision, 2);
    // A rollback goes back to revision 1 (the previous good one).
    let out = c
        .supctl()
        .args(["rollback", "web", "--timeout", "60"])
        .output()
        .expect("supctl rollback");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    more_lines(&ledger_path, "1.0.0", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_at_least_one_starts_the_new_copy_before_the_old_stops() {
    let _serial = SERIAL.lock().await;
    let (c, ledger_path) = cluster("at-least-one").await;
    let (ok, stdout, stderr) = supctl_update(&c, "1.0.1");
    assert!(ok, "supctl update failed:\n{stdout}\n{stderr}");
    let m = c.admin().module("web").await.expect("module");
    let new_node = m.node.clone().expect("placed");
    assert_ne!(new_node, "a", "the new copy starts on another node");
    more_lines(&ledger_path, "1.0.1", 10).await;
    let lines = ledger(&ledger_path);
    let (last_old, first_new) = last_and_first(&lines, "1.0.0", "1.0.1");
    assert!(
        first_new < last_old,
        "at-least-one: 1.0.1 started at {first_new}, after 1.0.0 stopped at {last_old} (a gap)"
    );
    // The old copy is stopped once the new one is healthy.
    eventually("the old copy stops on a", T, || async {
        let copies = c.running_copies("web").await;
        (copies.len() == 1 && copies[0].0 == new_node).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_everywhere_is_quarantined_and_stops_moving() {
    let _serial = SERIAL.lock().await;
    let c = TestCluster::start(Options::default()).await;
    let ledger_path = c.dir.path().join("ledger");
    let pkg = c.dir.path().join("pkg-bad");
    ledger_package(&pkg, "6.6.6", &ledger_path, true);
    c.push_package(&pkg).await;
    let modules = [("m1", "a"), ("m2", "b"), ("m3", "c")];
    for (name, node) in modules {
        c.admin()
            .deploy(
                &ModuleSpec::new(name)
                    .package("web", "6.6.6")
                    .restart(1, 100, 500)
                    .max_nodes(3)
                    .node(Some(node))
                    .json(),
            )
            .await
            .expect("deploy");
    }
    let q = eventually("web@6.6.6 quarantined", T, || async {
        let q = c.admin().quarantined().await.ok()?;
        q.into_iter().find(|q| q.package.to_string() == "web@6.6.6")
    })
    .await;
    assert!(q.nodes.len() >= 2, "{q:?}");
    for (name, _) in modules {
        c.wait_module(name, "waiting for the quarantine", T, |m| {
            m.state == "failing_over" && m.reason.as_deref().unwrap_or("").contains("quarantined")
        })
        .await;
    }
    let failovers = |ms: Vec<admin_api::ModuleView>| ms.iter().map(|m| m.failovers).sum::<u32>();
    let at_quarantine = failovers(c.admin().modules().await.expect("modules"));
    assert!(
        at_quarantine <= 3,
        "{at_quarantine} failovers before the quarantine stopped them"
    );
    // Nothing of it runs or is installed any more, and it stays so over
    // the next heartbeats (asserted over 3 s: absence cannot be waited for).
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ms = c.admin().modules().await.expect("modules");
        assert_eq!(failovers(ms.clone()), at_quarantine, "no more failovers");
        assert!(ms.iter().all(|m| m.state == "failing_over"), "{ms:?}");
    }
    // A deploy of it is refused, naming the quarantine.
    let err = c
        .admin()
        .deploy(&ModuleSpec::new("m4").package("web", "6.6.6").json())
        .await
        .expect_err("quarantined");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert!(err.to_string().contains("quarantined"), "{err}");
    // supctl lists and lifts it.
    let out = c.supctl().args(["quarantine"]).output().expect("supctl");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("web@6.6.6"),
        "{out:?}"
    );
    let out = c
        .supctl()
        .args(["quarantine", "lift", "web@6.6.6"])
        .output()
        .expect("supctl");
    assert!(out.status.success(), "{out:?}");
    let kinds: Vec<EventKind> = c
        .admin()
        .events(0)
        .await
        .expect("events")
        .iter()
        .filter_map(|e| e.event_kind())
        .collect();
    assert!(kinds.contains(&EventKind::PackageQuarantined));
    assert!(kinds.contains(&EventKind::QuarantineLifted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supctl_rollout_updates_every_module_of_a_package_and_pauses_on_failure() {
    use admin_api::views::StartRollout;
    let _serial = SERIAL.lock().await;
    let (c, ledger_path) = cluster("at-most-one").await;
    // A second module on web@1.0.0, on b.
    let spec = ModuleSpec::new("api")
        .package("web", "1.0.0")
        .restart(2, 100, 500)
        .max_nodes(2)
        .node(Some("b"))
        .json();
    c.admin().deploy(&spec).await.expect("deploy api");
    c.wait_module("api", "api running", T, |m| m.state == "running")
        .await;
    // A version depmgr does not have: 404 naming it, nothing started.
    let err = c
        .admin()
        .start_rollout(&StartRollout {
            package: "web".into(),
            version: "9.9.9".into(),
            max_parallel: 1,
            max_failures: 0,
        })
        .await
        .expect_err("unknown version");
    assert_eq!(
        err.status(),
        Some(admin_api::StatusCode::NOT_FOUND),
        "{err}"
    );
    assert!(err.to_string().contains("web@9.9.9"), "{err}");
    assert!(c.admin().rollouts().await.expect("rollouts").is_empty());

    let out = c
        .supctl()
        .args([
            "rollout",
            "web@1.0.1",
            "--max-parallel",
            "2",
            "--timeout",
            "60",
        ])
        .output()
        .expect("supctl rollout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rollout 1 of web@1.0.1: 2 updated, 0 failed, 0 skipped, 0 not started"),
        "{stdout}"
    );
    for m in c.admin().modules().await.expect("modules") {
        assert_eq!(
            (m.package.version.as_str(), m.revision),
            ("1.0.1", 2),
            "{m:?}"
        );
    }
    more_lines(&ledger_path, "1.0.1", 10).await;
    // 1.0.2 cannot start: the first module (api, in name order) is
    // reverted, the rollout pauses before the second.
    let out = c
        .supctl()
        .args([
            "rollout",
            "web@1.0.2",
            "--max-parallel",
            "1",
            "--timeout",
            "60",
        ])
        .output()
        .expect("supctl rollout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 failed, 0 skipped, 1 not started; paused: 1 modules failed (api)"),
        "{stderr}"
    );
    let f = c.admin().rollout(2).await.expect("rollout 2");
    assert_eq!(
        (f.state.as_str(), f.pending.clone()),
        ("paused", vec!["web".to_string()])
    );
    let web = c.admin().module("web").await.expect("web");
    assert_eq!((web.package.version.as_str(), web.revision), ("1.0.1", 2));
    c.wait_module("api", "api back on 1.0.1", T, |m| {
        m.state == "running" && m.package.version == "1.0.1"
    })
    .await;
    // One open rollout per package: a third is refused until the paused
    // one is cancelled.
    let third = StartRollout {
        package: "web".into(),
        version: "1.0.0".into(),
        max_parallel: 2,
        max_failures: 0,
    };
    let err = c.admin().start_rollout(&third).await.expect_err("open one");
    assert_eq!(err.status(), Some(admin_api::StatusCode::CONFLICT), "{err}");
    let out = c
        .supctl()
        .args(["rollouts", "cancel", "2"])
        .output()
        .expect("supctl rollouts cancel");
    assert!(out.status.success(), "{out:?}");
    let f = c.admin().start_rollout(&third).await.expect("after cancel");
    assert_eq!(f.pending, ["api", "web"]);
    // Driven by the cluster, not by a client: nobody follows this one.
    eventually("rollout 3 completed", Duration::from_secs(60), || async {
        let f = c.admin().rollout(3).await.ok()?;
        (f.state == "completed").then_some(f)
    })
    .await;
    for m in c.admin().modules().await.expect("modules") {
        assert_eq!(m.package.version, "1.0.0", "{m:?}");
    }
    let out = c.supctl().args(["rollouts"]).output().expect("list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("cancelled") && list.contains("completed"),
        "{list}"
    );
}
