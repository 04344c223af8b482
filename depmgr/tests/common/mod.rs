//! What only depmgr's tests share: a real `depmgr` process on a temporary
//! data dir, and small helpers for raw HTTP and the data dir. Packages and
//! raw archives come from `testkit` (`package::sample`, `raw_tar::Raw`).
//!
//! [`Depmgr`] owns its child process in a `testkit` process set (stopped on
//! drop, its log printed when a test fails while holding it). The port is
//! chosen by the kernel (`--listen 127.0.0.1:0`) and read from the
//! `depmgr listening on <addr>` line of its output; readiness is
//! `GET /health` polled with a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::poll_until;
use testkit::process::{ProcessSet, Program};

pub const DEADLINE: Duration = Duration::from_secs(20);

const KEY: &str = "depmgr";

/// A running depmgr.
pub struct Depmgr {
    procs: ProcessSet,
    pid: u32,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl Depmgr {
    /// Starts depmgr on `data_dir` with extra flags and waits until it
    /// answers `GET /health`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Result<Depmgr> {
        // A log dir of its own per start, so the address read is this one's.
        let logs = data_dir.with_extension(format!(
            "logs-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let mut procs = ProcessSet::new(logs).tail_on_panic(usize::MAX);
        let program = Program::new(testkit::bin("depmgr"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "depmgr=debug,info");
        let pid = procs.spawn(KEY, program).context("spawn depmgr")?;
        let listening = poll_until(DEADLINE, || async {
            procs.log(KEY).lines().find_map(|l| {
                l.strip_prefix("depmgr listening on ")
                    .map(|a| a.trim().to_string())
            })
        })
        .await;
        let Some(addr) = listening else {
            bail!(
                "depmgr did not report its address; log:\n{}",
                procs.log(KEY)
            );
        };
        let me = Depmgr {
            procs,
            pid,
            addr,
            data_dir: data_dir.to_path_buf(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let healthy = poll_until(DEADLINE, || async {
            let answer = http.get(me.url("/health")).send().await;
            answer.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await;
        if healthy.is_none() {
            bail!("depmgr never became healthy; log:\n{}", me.stderr());
        }
        Ok(me)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> depmgr::client::Client {
        depmgr::client::Client::new(&self.base()).expect("client")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its output (the log lines are on stderr).
    pub fn stderr(&self) -> String {
        self.procs.log(KEY)
    }

    /// SIGTERM, then wait (with a deadline) for the exit status.
    pub async fn terminate(mut self) -> Result<ExitStatus> {
        self.procs
            .terminate(KEY, DEADLINE)
            .await
            .with_context(|| format!("depmgr did not exit within {DEADLINE:?}"))
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(mut self) -> Result<()> {
        self.procs.kill9(KEY).context("no child")?;
        Ok(())
    }
}

/// Files in `dir` (non-recursive), empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    depmgr::sha256_hex(bytes)
}

/// `n` pseudo-random (incompressible) bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A reqwest client for raw requests, with a deadline.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Status and `{"error"}` message of an answer.
pub async fn status_and_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<proto::ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or(text);
    (status, msg)
}
