//! The short partition-test campaign the README's test command runs: three
//! fixed seeds of 60 s of faults each, on namespaced hosts (needs root,
//! iproute2, iptables and util-linux's unshare; `.ci/setup` installs them).
//! Long campaigns: see docs/reliability.md.

use std::process::Command;

#[test]
fn three_seeds_of_faults_break_no_promise() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .args(["--seed", "1", "--seeds", "3", "--secs", "60", "--out"])
        .arg(out.path())
        .status()
        .expect("running the jepsen harness");
    if !status.success() {
        // Keep the histories for the failure's investigation.
        let kept = out.keep();
        panic!(
            "the partition tests failed ({status}); histories and logs in {}",
            kept.display()
        );
    }
}
