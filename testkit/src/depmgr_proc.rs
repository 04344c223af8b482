//! A real `depmgr` process on a data dir, for depmgr's own tests and its
//! download benchmark.
//!
//! [`DepmgrProc`] owns the child in a [`ProcessSet`] (stopped on drop; its
//! whole log printed when a test fails while holding it). The port is chosen
//! by the kernel (`--listen 127.0.0.1:0`) and read from the
//! `depmgr listening on <addr>` line of its output; readiness is
//! `GET /health` polled with a deadline. Each start logs to a directory of
//! its own next to the data dir, so a restart on the same data dir reads its
//! own address.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::bins::bin;
use crate::poll::poll_until;
use crate::process::{ProcessSet, Program};

/// How long a start, a health check or a clean stop may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

const KEY: &str = "depmgr";

/// A running depmgr.
pub struct DepmgrProc {
    procs: ProcessSet,
    pid: u32,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub data_dir: PathBuf,
}

impl DepmgrProc {
    /// Starts the release `depmgr` on `data_dir` with `extra` flags (and
    /// `RUST_LOG=depmgr=debug,info`) and waits until it answers
    /// `GET /health`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> io::Result<DepmgrProc> {
        Self::start_program(&bin("depmgr"), data_dir, extra, "depmgr=debug,info").await
    }

    /// As [`DepmgrProc::start`], with the binary and `RUST_LOG` given.
    pub async fn start_program(
        program: &Path,
        data_dir: &Path,
        extra: &[&str],
        rust_log: &str,
    ) -> io::Result<DepmgrProc> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(io::Error::other)?
            .as_nanos();
        let mut procs = ProcessSet::new(data_dir.with_extension(format!("logs-{nanos}")))
            .tail_on_panic(usize::MAX);
        let program = Program::new(program)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", rust_log);
        let pid = procs.spawn(KEY, program)?;
        let listening = poll_until(DEADLINE, || async {
            procs.log(KEY).lines().find_map(|l| {
                l.strip_prefix("depmgr listening on ")
                    .map(|a| a.trim().to_string())
            })
        })
        .await;
        let Some(addr) = listening else {
            return Err(io::Error::other(format!(
                "depmgr did not report its address; log:\n{}",
                procs.log(KEY)
            )));
        };
        let me = DepmgrProc {
            procs,
            pid,
            addr,
            data_dir: data_dir.to_path_buf(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(io::Error::other)?;
        let healthy = poll_until(DEADLINE, || async {
            let answer = http.get(me.url("/health")).send().await;
            answer.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await;
        if healthy.is_none() {
            return Err(io::Error::other(format!(
                "depmgr never became healthy; log:\n{}",
                me.log()
            )));
        }
        Ok(me)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:<port>`.
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
    pub fn log(&self) -> String {
        self.procs.log(KEY)
    }

    /// SIGTERM, then waits (up to [`DEADLINE`]) for the exit status.
    pub async fn terminate(mut self) -> io::Result<ExitStatus> {
        self.procs.terminate(KEY, DEADLINE).await.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("depmgr did not exit within {DEADLINE:?}"),
            )
        })
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(mut self) -> io::Result<()> {
        match self.procs.kill9(KEY) {
            Some(_) => Ok(()),
            None => Err(io::Error::other("depmgr was not running")),
        }
    }
}
