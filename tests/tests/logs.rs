//! A module's output through the cluster, against real processes over
//! mutual TLS: `GET /v1/modules/{name}/logs` on a follower replica (relayed
//! from the module's agent) and `supctl logs`, with `-f` delivering a line
//! the module printed only after the follow started; a chatty module's
//! output files stay within `--log-max-bytes` × `--log-files` and lose no
//! line across rotations; an agent refuses to show output to anyone but a
//! supervisor.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use cluster_tests::{Options, TestCluster, spec};
use testkit::eventually;

const T: Duration = Duration::from_secs(60);

/// A package `name@1.0.0` whose command is the shell `script`, with
/// `MARKERS` pointing at the cluster's marker directory.
async fn push_script(c: &TestCluster, name: &str, script: &str) {
    let dir = c.dir.path().join(format!("pkg-{name}"));
    std::fs::create_dir_all(dir.join("bin")).expect("package dir");
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\ncommand = \"bin/run\"\n\n[env]\nMARKERS = \"{}\"\n",
        c.markers().display()
    );
    std::fs::write(dir.join("manifest.toml"), manifest).expect("manifest");
    let run = dir.join("bin/run");
    std::fs::write(&run, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    c.push_package(&dir).await;
}

/// Prints `tick N` every 50 ms and, while `<markers>/say-<module>` exists,
/// `heard <its content>`: a line that exists only once the test wrote it.
const TICKER: &str = r#"#!/bin/sh
i=0
while true; do
  if [ -e "$MARKERS/say-$MODULE_NAME" ]; then
    echo "heard $(cat "$MARKERS/say-$MODULE_NAME")"
  fi
  echo "tick $i"
  i=$((i+1))
  sleep 0.05
done
"#;

/// Prints numbered lines as fast as the shell can, 500 at a time.
const CHATTY: &str = r#"#!/bin/sh
i=0
while true; do
  seq $i $((i+499)) | sed 's/^/chatty line number /'
  i=$((i+500))
  sleep 0.01
done
"#;

fn say(c: &TestCluster, module: &str, token: &str) {
    let path = c.markers().join(format!("say-{module}"));
    let tmp = c.markers().join(format!(".say-{module}"));
    std::fs::write(&tmp, token).expect("marker");
    std::fs::rename(tmp, path).expect("marker");
}

fn supctl(c: &TestCluster, args: &[&str]) -> Output {
    c.supctl().args(args).output().expect("run supctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow_through_any_supervisor() {
    let mut c = TestCluster::start(Options {
        agents: vec!["a".into()],
        ..Options::default()
    })
    .await;
    push_script(&c, "ticker", TICKER).await;
    c.admin()
        .deploy(&spec("ticker", Some("a"), 3, 1))
        .await
        .expect("deploy");
    c.wait_module("ticker", "ticker running", T, |m| m.state == "running")
        .await;

    // A follower relays it: not forwarded to the leader.
    let leader = c.wait_leader(T).await;
    let follower = c.admin_of((leader + 1) % c.supervisors.addrs.len());
    let tail = eventually("three ticks in the tail", T, || async {
        let text = follower
            .logs("ticker", Some(3), false)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (text.lines().count() == 3 && text.lines().all(|l| l.starts_with("tick "))).then_some(text)
    })
    .await;
    assert!(tail.ends_with('\n'), "{tail:?}");

    // Follow, then make the module print a line it could not have printed
    // before: it must arrive on the open stream.
    let mut stream = follower
        .logs("ticker", Some(1), true)
        .await
        .expect("follow");
    let token = format!("token-{}", std::process::id());
    say(&c, "ticker", &token);
    let mut seen = String::new();
    let heard = tokio::time::timeout(T, async {
        while let Some(chunk) = stream.next_chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&format!("heard {token}\n")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "followed output:\n{seen}");
    drop(stream);

    // supctl logs: the tail, then -f with another token.
    let out = supctl(&c, &["logs", "ticker", "--tail", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(stdout.contains("heard token-"), "{stdout}");

    let mut child = c
        .supctl()
        .args(["logs", "ticker", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supctl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line (the tail) says the follow has started.
    let first = tokio::time::timeout(T, lines.recv()).await;
    assert!(
        matches!(first, Ok(Some(_))),
        "supctl logs -f printed nothing"
    );
    let token2 = format!("second-{}", std::process::id());
    say(&c, "ticker", &token2);
    let found = tokio::time::timeout(T, async {
        while let Some(line) = lines.recv().await {
            if line == format!("heard {token2}") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, Ok(true), "supctl logs -f did not show the new line");

    // Errors name why.
    let out = supctl(&c, &["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown module"), "{stderr}");

    // The agent shows output to supervisors only: an operator is refused.
    let operator = c.operator().expect("TLS");
    let resp = tls::client::http_builder(Some(&operator), &[tls::Role::Agent])
        .build()
        .expect("client")
        .get(format!(
            "https://{}/v1/modules/ticker/logs",
            c.agent_addrs["a"]
        ))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("agent answers");
    assert_eq!(resp.status().as_u16(), 403);

    // An open follow does not hold up a shutdown: the agent ends its
    // stream when it stops, the relay and the client's stream end with
    // it, and every program exits cleanly.
    let mut open = follower
        .logs("ticker", Some(1), true)
        .await
        .expect("follow");
    let first = tokio::time::timeout(T, open.next_chunk()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    let exits = c.stop_all().await;
    for (name, status) in &exits {
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not stop cleanly: {status:?}"
        );
    }
    let ended = tokio::time::timeout(T, async {
        loop {
            match open.next_chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the followed stream did not end");
}

/// `output.log` (0) and its rotated files `output.log.<i>`.
fn output_file(dir: &Path, i: u64) -> std::path::PathBuf {
    if i == 0 {
        dir.join("output.log")
    } else {
        dir.join(format!("output.log.{i}"))
    }
}

/// Checks the bound: files 0 .. `files` - 1 each at most `max` bytes (so
/// at most `max` × `files` together), none beyond (the next few
/// looked at one by one, not listed: a listing races with rotation).
fn assert_bounded(dir: &Path, max: u64, files: u64) {
    for i in 0..files {
        let len = std::fs::metadata(output_file(dir, i)).map_or(0, |m| m.len());
        assert!(len <= max, "{}: {len} bytes", output_file(dir, i).display());
    }
    for i in files..files + 5 {
        assert!(
            !output_file(dir, i).exists(),
            "{} exists",
            output_file(dir, i).display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_module_stays_within_its_log_bound() {
    const MAX: u64 = 16 * 1024;
    const FILES: u64 = 3;
    let c = TestCluster::start(Options {
        supervisors: 1,
        agents: vec!["a".into()],
        agent_flags: vec![
            "--log-max-bytes".into(),
            MAX.to_string(),
            "--log-files".into(),
            FILES.to_string(),
        ],
        ..Options::default()
    })
    .await;
    push_script(&c, "chatty", CHATTY).await;
    c.admin()
        .deploy(&spec("chatty", Some("a"), 3, 1))
        .await
        .expect("deploy");
    let dir = c.agent_data_dir("a").join("modules/chatty");
    // Until far more than the bound went through: the oldest file kept
    // starts past line 20000 (about 500 kB printed, 10 times the bound).
    let oldest = output_file(&dir, FILES - 1);
    eventually("20000 lines printed", T, || async {
        let text = std::fs::read_to_string(&oldest).ok()?;
        let first: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("chatty line number")?.trim().parse().ok())?;
        (first > 20_000).then_some(())
    })
    .await;
    // While it runs: every file within its bound, no more files.
    assert_bounded(&dir, MAX, FILES);
    // The tail through the cluster: consecutive lines.
    let text = c
        .admin()
        .logs("chatty", Some(50), false)
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    // Whole lines only (the module writes in blocks: the last may be
    // unfinished).
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let nums: Vec<u64> = whole
        .lines()
        .filter_map(|l| l.strip_prefix("chatty line number")?.trim().parse().ok())
        .collect();
    assert!(nums.len() >= 48, "{text}");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{text}");

    // Stopped, the files hold one unbroken run of lines up to the last.
    c.admin().remove("chatty").await.expect("remove");
    eventually("chatty gone", T, || async {
        let modules = c.admin().modules().await.ok()?;
        (!modules.iter().any(|m| m.name == "chatty")).then_some(())
    })
    .await;
    assert_bounded(&dir, MAX, FILES);
    let total: u64 = std::fs::read_dir(&dir)
        .expect("module dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("output.log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(total <= MAX * FILES, "{total} bytes of output kept");
    let all: String = (0..FILES)
        .rev()
        .map(|i| std::fs::read_to_string(output_file(&dir, i)).unwrap_or_default())
        .collect();
    // The module was killed mid-write: an unfinished last line is not one.
    let all = match all.rfind('\n') {
        Some(end) => &all[..=end],
        None => "",
    };
    let nums: Vec<u64> = all
        .lines()
        .filter_map(|l| l.strip_prefix("chatty line number")?.trim().parse().ok())
        .collect();
    assert!(nums.len() > 1000, "{} lines", nums.len());
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "a line was lost across the rotations"
    );
}
