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
    /// With TLS: the operator identity of [`DepmgrProc::client`].
    pub operator: Option<std::sync::Arc<tls::Tls>>,
}

impl DepmgrProc {
    /// Starts the release `depmgr` on `data_dir` with `extra` flags (and
    /// `RUST_LOG=depmgr=debug,info`) and waits until it answers
    /// `GET /health`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> io::Result<DepmgrProc> {
        Self::start_program(&bin("depmgr"), data_dir, extra, "depmgr=debug,info").await
    }

    /// As [`DepmgrProc::start`], with TLS when `certs` is given: depmgr
    /// holds `depmgr/depmgr`, the client `operator/ops`.
    pub async fn start_tls(
        data_dir: &Path,
        extra: &[&str],
        certs: Option<&crate::certs::Certs>,
    ) -> io::Result<DepmgrProc> {
        let Some(certs) = certs else {
            return Self::start(data_dir, extra).await;
        };
        let flags = certs.flags(tls::Role::Depmgr, "depmgr");
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        Self::start_inner(
            &bin("depmgr"),
            data_dir,
            &all,
            "depmgr=debug,info",
            Some(certs.operator()),
        )
        .await
    }

    /// As [`DepmgrProc::start`], with the binary and `RUST_LOG` given.
    pub async fn start_program(
        program: &Path,
        data_dir: &Path,
        extra: &[&str],
        rust_log: &str,
    ) -> io::Result<DepmgrProc> {
        Self::start_inner(program, data_dir, extra, rust_log, None).await
    }

    async fn start_inner(
        program: &Path,
        data_dir: &Path,
        extra: &[&str],
        rust_log: &str,
        operator: Option<std::sync::Arc<tls::Tls>>,
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
            operator,
        };
        let http = tls::client::http_builder(me.operator.as_ref(), &[tls::Role::Depmgr])
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
        format!("{}{path}", self.base())
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn base(&self) -> String {
        tls::client::base_url(self.operator.as_ref(), &self.addr)
    }

    /// A client presenting the operator certificate with TLS.
    pub fn client(&self) -> depmgr::client::Client {
        depmgr::client::Client::with_tls(
            &self.base(),
            depmgr::client::Timeouts::default(),
            self.operator.as_ref(),
        )
        .expect("client")
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
