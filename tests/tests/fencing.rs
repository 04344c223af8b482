//! Process-tree fencing with real processes: an `at-most-one` module whose
//! script starts a server without `exec`, and that server double-forks,
//! leaves the process group (`setsid`) and clears its environment
//! (`env -i`), so neither the process group, nor the parent-death signal,
//! nor the agent's environment sweep reaches it. The server appends
//! `node epoch pid uptime` to a ledger every 50 ms (`/proc/uptime`, one
//! clock for every process of the host). The ledger proves at-most-one:
//! the last line written on the old node comes before the first line on
//! the new one, and no process of the old copy is alive once it moved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_tests::{Options, TestCluster};
use testkit::eventually;
use testkit::process::pid_alive;
use testkit::spec::ModuleSpec;
use tokio::sync::Mutex;

/// One cluster at a time: the machine is small.
static SERIAL: Mutex<()> = Mutex::const_new(());
const T: Duration = Duration::from_secs(40);

/// The package of the forking module: `bin/run` stays a shell (no `exec`)
/// and starts the ledger writer through a double fork.
fn forking_package(dir: &Path, name: &str, ledger: &Path) {
    std::fs::create_dir_all(dir.join("bin")).expect("package dir");
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ncommand = \"bin/run\"\n\n[env]\nLEDGER = \"{}\"\n",
        ledger.display()
    );
    std::fs::write(dir.join("manifest.toml"), manifest).expect("manifest");
    let script = r#"#!/bin/sh
( env -i PATH=/usr/bin:/bin LEDGER="$LEDGER" NODE="$MODULE_NODE" EPOCH="$MODULE_EPOCH" \
    setsid /bin/sh -c 'while :; do
      read up _ < /proc/uptime
      echo "$NODE $EPOCH $$ $up" >> "$LEDGER"
      sleep 0.05
    done' & )
while :; do sleep 1; done
"#;
    let run = dir.join("bin/run");
    std::fs::write(&run, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One ledger line.
#[derive(Debug, Clone)]
struct Line {
    node: String,
    pid: u32,
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
                pid: f.get(2)?.parse().ok()?,
                at: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// Starts the cluster, deploys the forking module on node `a` and waits
/// until its server writes to the ledger there.
async fn deployed(name: &str) -> (TestCluster, PathBuf) {
    let c = TestCluster::start(Options::default()).await;
    let ledger_path = c.dir.path().join(format!("ledger-{name}"));
    let pkg = c.dir.path().join(format!("pkg-{name}"));
    forking_package(&pkg, name, &ledger_path);
    c.push_package(&pkg).await;
    c.admin()
        .deploy(
            &ModuleSpec::new(name)
                .restart(2, 100, 500)
                .max_nodes(2)
                .node(Some("a"))
                .fencing("at-most-one")
                .json(),
        )
        .await
        .expect("deploy");
    eventually("the server writes on a", T, || async {
        ledger(&ledger_path)
            .iter()
            .any(|l| l.node == "a")
            .then_some(())
    })
    .await;
    (c, ledger_path)
}

/// Waits until the module writes on another node, then checks the ledger:
/// every line of `a` precedes every line of the new node, and no writer of
/// `a` is alive.
async fn moved_without_overlap(c: &TestCluster, ledger_path: &Path) {
    let new_node = eventually("the server writes on another node", T, || async {
        ledger(ledger_path)
            .iter()
            .find(|l| l.node != "a")
            .map(|l| l.node.clone())
    })
    .await;
    // Some more lines on the new node, so a surviving old copy would show.
    let seen = ledger(ledger_path).len();
    eventually("ten more lines", T, || async {
        (ledger(ledger_path).len() >= seen + 10).then_some(())
    })
    .await;
    let lines = ledger(ledger_path);
    let last_old = lines
        .iter()
        .filter(|l| l.node == "a")
        .map(|l| l.at)
        .fold(f64::MIN, f64::max);
    let first_new = lines
        .iter()
        .filter(|l| l.node == new_node)
        .map(|l| l.at)
        .fold(f64::MAX, f64::min);
    assert!(
        last_old < first_new,
        "the copy on a wrote at {last_old} s, after the copy on {new_node} started writing at {first_new} s (ledger tail: {:?}; agent a log: {})",
        &lines[lines.len().saturating_sub(8)..],
        c.log_tail("agent-a", 20)
    );
    let old_pids: BTreeSet<u32> = lines
        .iter()
        .filter(|l| l.node == "a")
        .map(|l| l.pid)
        .collect();
    for pid in old_pids {
        assert!(
            !pid_alive(pid),
            "the server of the copy on a (pid {pid}) is still alive"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forking_module_dies_with_its_sigkilled_agent_and_never_overlaps_its_successor() {
    let _serial = SERIAL.lock().await;
    let (mut c, ledger_path) = deployed("forker").await;
    let writers: BTreeSet<u32> = ledger(&ledger_path).iter().map(|l| l.pid).collect();
    c.kill_agent("a");
    // Not restarted: the shim alone sees its agent gone and kills the tree.
    eventually(
        "the server dies with its agent",
        Duration::from_secs(5),
        || async { writers.iter().all(|&p| !pid_alive(p)).then_some(()) },
    )
    .await;
    moved_without_overlap(&c, &ledger_path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_does_not_extend_the_lease_of_a_forking_module() {
    let _serial = SERIAL.lock().await;
    let (c, ledger_path) = deployed("stalled").await;
    // SIGSTOP: the agent can neither renew nor fence; the shim holds the
    // lease deadline and kills the tree when it passes.
    c.pause_agent("a", true);
    moved_without_overlap(&c, &ledger_path).await;
    c.pause_agent("a", false);
    // Back, the agent starts nothing: the module runs once, elsewhere.
    eventually("a no longer lists the module", T, || async {
        let s = c.agent_status("a").await?;
        (!s["modules"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "stalled"))
        .then_some(())
    })
    .await;
    let lines = ledger(&ledger_path);
    let seen = lines.len();
    eventually("ten more lines", T, || async {
        (ledger(&ledger_path).len() >= seen + 10).then_some(())
    })
    .await;
    let a_after: Vec<Line> = ledger(&ledger_path)
        .into_iter()
        .skip(seen)
        .filter(|l| l.node == "a")
        .collect();
    assert!(a_after.is_empty(), "a wrote again: {a_after:?}");
}
