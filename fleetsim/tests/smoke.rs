//! The simulator as a user runs it, small: every phase must finish and
//! report its figures (a phase that gives up prints "NOT ALL", "only" or
//! "had not"; those fail this test).

use std::process::Command;

#[test]
fn a_small_fleet_runs_every_phase_to_the_end() {
    if let Err(e) = testkit::bins::find_dir(&["supervisor"]) {
        panic!("{e}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "--agents",
            "20",
            "--modules",
            "5",
            "--heartbeat-ms",
            "200",
            "--secs",
            "3",
            "--sample-secs",
            "1",
            "--crash-rate",
            "10",
            "--storm",
            "40",
            "--lose-nodes",
            "2",
        ])
        .output()
        .expect("run fleetsim");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleetsim failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "20 nodes ready",
        "100 of 100 modules installed on their nodes",
        "heartbeats offered",
        "crash-to-restore-order: p50",
        "storm: 40 modules failed at once; every restore order out",
        "node loss: 2 nodes stopped; all 10 of their modules installed elsewhere",
        "catch-up: POST /v1/cluster/members answered",
        "replica 4 applied index",
        "elections: term",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    for failure in ["NOT ALL", "only ", "had not", "did not join"] {
        assert!(!text.contains(failure), "{failure:?} in:\n{text}");
    }
}
