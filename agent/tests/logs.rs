//! A module's output through the real agent binary (fake supervisor and
//! depmgr, plaintext): a module that prints a burst and exits at once
//! loses no line (the shim drains the pipe before it exits), and
//! `GET /v1/modules/{name}/logs` answers the tail, a follow, 404 and 400.

use std::time::Duration;

use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::install;
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::FakeSupervisor;
use testkit::package::PackageBuilder;

const T: Duration = Duration::from_secs(20);

/// 20000 numbered lines through a pipe (written in blocks), then exit.
const BURST: &str = "#!/bin/sh\nseq 1 20000 | sed 's/^/burst /'\nexit 0\n";

/// `tick N` every 20 ms, forever.
const TICKER: &str =
    "#!/bin/sh\ni=0\nwhile true; do echo \"tick $i\"; i=$((i+1)); sleep 0.02; done\n";

async fn get(agent: &AgentProc, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", agent.listen))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("agent answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn every_line_of_a_module_that_exits_is_kept_and_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = FakeSupervisor::start().await;
    let pkgs = FakeDepmgr::start().await;
    let burst = PackageBuilder::new("burst", "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", BURST, 0o755)
        .build();
    let ticker = PackageBuilder::new("ticker", "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", TICKER, 0o755)
        .build();
    pkgs.put(&burst);
    pkgs.put(&ticker);
    let data = tmp.path().join("data");
    let mut args = AgentArgs::new(&data, &sup.addr);
    args.extra = vec![
        "--log-max-bytes".into(),
        "65536".into(),
        "--log-files".into(),
        "8".into(),
    ];
    let agent = AgentProc::spawn(args);
    agent.ready().await;
    sup.set_directives(vec![
        install("burst", 1, Fencing::AtLeastOne, &[&burst], &pkgs.url),
        install("ticker", 1, Fencing::AtLeastOne, &[&ticker], &pkgs.url),
    ]);

    // The burst: 20000 lines (about 230 kB, over 4 files) and the exit;
    // every line is kept, in order, across the rotations.
    let dir = data.join("modules/burst");
    let all = eventually("the burst's last line", T, || async {
        let all: String = (0..8)
            .rev()
            .map(|i| {
                let name = if i == 0 {
                    "output.log".to_string()
                } else {
                    format!("output.log.{i}")
                };
                std::fs::read_to_string(dir.join(name)).unwrap_or_default()
            })
            .collect();
        all.contains("burst 20000\n").then_some(all)
    })
    .await;
    let nums: Vec<u32> = all
        .lines()
        .filter_map(|l| l.strip_prefix("burst ")?.parse().ok())
        .collect();
    assert_eq!(nums, (1..=20000).collect::<Vec<u32>>());
    assert!(dir.join("output.log.3").exists(), "rotated");
    for i in 0..8 {
        let name = if i == 0 {
            "output.log".to_string()
        } else {
            format!("output.log.{i}")
        };
        let len = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        assert!(len <= 65536, "file {i}: {len} bytes");
    }

    // The tail, over the files.
    let (status, text) = get(&agent, "/v1/modules/burst/logs?tail=3").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "burst 19998\nburst 19999\nburst 20000\n");
    let (status, text) = get(&agent, "/v1/modules/burst/logs?tail=10000").await;
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), 10000);
    assert!(text.starts_with("burst 10001\n"), "{}", &text[..40]);

    // A follow delivers lines printed after it started.
    let mut resp = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/modules/ticker/logs?tail=1&follow=true",
            agent.listen
        ))
        .send()
        .await
        .expect("follow");
    assert_eq!(resp.status().as_u16(), 200);
    let mut seen = String::new();
    let mut first: Option<u64> = None;
    let more = tokio::time::timeout(T, async {
        while let Some(chunk) = resp.chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            let ticks: Vec<u64> = seen
                .lines()
                .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
                .collect();
            let Some(&start) = ticks.first() else {
                continue;
            };
            first.get_or_insert(start);
            // Ten ticks past the one the tail showed: printed while
            // following.
            if ticks.last().is_some_and(|&t| t >= start + 10) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(more, Ok(true), "followed: {seen}");

    // Errors.
    let (status, _) = get(&agent, "/v1/modules/nope/logs").await;
    assert_eq!(status, 404);
    let (status, text) = get(&agent, "/v1/modules/burst/logs?tail=lots").await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = get(&agent, "/v1/modules/burst/logs?tail=10001").await;
    assert_eq!(status, 400);
}
