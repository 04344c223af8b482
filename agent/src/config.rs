//! The agent's configuration: one typed struct, filled from flags or from the
//! matching environment variables (`AGENT_NODE`, `AGENT_LISTEN`, …), then
//! validated once at start-up ([`Config::validate`]).
//!
//! The contract flags (`--node`, `--listen`, `--data-dir`, `--supervisors`,
//! `--label`, `--heartbeat-ms`) keep their names; the others are additions
//! with defaults, so a contract command line is always complete.
//!
//! ## Trust
//! `--tls-ca`, `--tls-cert` and `--tls-key` come together or not at all
//! ([`Config::tls_files`]). With them the status API serves TLS only, the
//! heartbeats go to `https://` supervisors holding supervisor certificates,
//! and downloads to an `https://` depmgr holding a depmgr certificate; the
//! certificate must be `agent/<--node>` (checked when it is loaded, in
//! `main.rs`). Without them the status API is plaintext and only on a
//! loopback address, unless `--insecure` ([`tls::policy::check_listen`]).
//! `--depmgr` follows: `https://` with TLS, `http://` without.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tls::TlsFiles;

use crate::Error;

/// `--log-format`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`,
    /// `span`s), for log collectors.
    Json,
}

/// Flags and environment of the `agent` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "agent",
    about = "Node manager: runs, watches and restores modules for the supervisor cluster"
)]
pub struct Config {
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, env = "AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name of this node in the cluster (letters, digits, `.`, `_`, `-`).
    #[arg(long, env = "AGENT_NODE")]
    pub node: String,

    /// `host:port` the status API listens on; also the address the agent
    /// announces to the supervisor in its module table.
    #[arg(long, env = "AGENT_LISTEN")]
    pub listen: String,

    /// Directory for the state file, the package cache and the unpacked
    /// modules. Created when missing.
    #[arg(long, env = "AGENT_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Supervisors to heartbeat to (`host:port,host:port,...`); the agent
    /// follows the leader hint in replies and moves on when one is
    /// unreachable.
    #[arg(
        long,
        env = "AGENT_SUPERVISORS",
        value_delimiter = ',',
        required = true
    )]
    pub supervisors: Vec<String>,

    /// A `key=value` label of this node (repeatable); placement constraints
    /// match on them.
    #[arg(long = "label", env = "AGENT_LABEL", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Period of the heartbeat in milliseconds (a status change sends one at
    /// once, whatever the period).
    #[arg(long, env = "AGENT_HEARTBEAT_MS", default_value_t = 300)]
    pub heartbeat_ms: u64,

    /// Send heartbeats as frames on one long-lived stream per supervisor
    /// (`GET /v1/agent/stream`, upgraded) instead of one HTTP request each.
    /// A supervisor without the stream gets requests, and the stream is
    /// tried again a minute later.
    #[arg(
        long,
        env = "AGENT_HEARTBEAT_STREAM",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub heartbeat_stream: bool,

    /// Grace in milliseconds between SIGTERM and SIGKILL when a module is
    /// stopped; the lease fence starts this long before the lease ends.
    #[arg(long, env = "AGENT_STOP_GRACE_MS", default_value_t = 1000)]
    pub stop_grace_ms: u64,

    /// Timeout in milliseconds of one heartbeat request; past it the agent
    /// moves on to the next supervisor.
    #[arg(long, env = "AGENT_REQUEST_TIMEOUT_MS", default_value_t = 1000)]
    pub request_timeout_ms: u64,

    /// Timeout in milliseconds of one archive download from depmgr.
    #[arg(long, env = "AGENT_FETCH_TIMEOUT_MS", default_value_t = 60_000)]
    pub fetch_timeout_ms: u64,

    /// Most bytes of archives the package cache keeps
    /// (`<data-dir>/cache/`): beyond it the least recently used are
    /// evicted, never one that a module held by this agent uses.
    #[arg(
        long,
        env = "AGENT_CACHE_MAX_BYTES",
        default_value_t = crate::manager::cache::DEFAULT_CACHE_MAX_BYTES
    )]
    pub cache_max_bytes: u64,

    /// Most bytes of one file of a module's output
    /// (`<data-dir>/modules/<module>/output.log`): past it the file is
    /// rotated to `output.log.1` (at least 1024).
    #[arg(
        long,
        env = "AGENT_LOG_MAX_BYTES",
        default_value_t = crate::logs::DEFAULT_MAX_BYTES
    )]
    pub log_max_bytes: u64,

    /// Files of a module's output kept, `output.log` included (1 to 100):
    /// a module's output takes at most `--log-max-bytes` times this.
    #[arg(long, env = "AGENT_LOG_FILES", default_value_t = crate::logs::DEFAULT_FILES)]
    pub log_files: u32,

    /// Fallback depmgr base URL (`http://host:port`, or `https://` with
    /// TLS), used only when an install directive names none.
    #[arg(long, env = "AGENT_DEPMGR")]
    pub depmgr: Option<String>,

    /// The cluster CA's certificate (PEM): every peer must hold a
    /// certificate it signed. With `--tls-cert` and `--tls-key`.
    #[arg(long, env = "AGENT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// This agent's certificate (PEM), naming `agent/<--node>`.
    #[arg(long, env = "AGENT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The key of `--tls-cert` (PEM). Reloaded with the certificate on
    /// SIGHUP.
    #[arg(long, env = "AGENT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Without TLS flags, serve plaintext on a non-loopback `--listen`
    /// anyway (anyone who can reach it can read the status).
    #[arg(long, env = "AGENT_INSECURE")]
    pub insecure: bool,
}

impl Config {
    /// Checks every field; the error names the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Error::Config(m);
        proto::names::check("--node", &self.node).map_err(bad)?;
        check_host_port("--listen", &self.listen)?;
        if self.listen.len() > proto::heartbeat::MAX_ADDR_LEN {
            return Err(bad(format!(
                "--listen is {} bytes, over the limit of {}",
                self.listen.len(),
                proto::heartbeat::MAX_ADDR_LEN
            )));
        }
        if self.supervisors.is_empty() {
            return Err(bad("--supervisors names no supervisor".into()));
        }
        for s in &self.supervisors {
            check_host_port("--supervisors", s)?;
        }
        self.label_map()?;
        if self.heartbeat_ms == 0 || self.heartbeat_ms > 60_000 {
            return Err(bad(format!(
                "--heartbeat-ms {} must be between 1 and 60000",
                self.heartbeat_ms
            )));
        }
        if self.stop_grace_ms > 600_000 {
            return Err(bad(format!(
                "--stop-grace-ms {} is over the limit of 600000",
                self.stop_grace_ms
            )));
        }
        if self.request_timeout_ms == 0 || self.fetch_timeout_ms == 0 {
            return Err(bad(
                "--request-timeout-ms and --fetch-timeout-ms must be above 0".into(),
            ));
        }
        if self.log_max_bytes < crate::logs::MIN_MAX_BYTES {
            return Err(bad(format!(
                "--log-max-bytes {} is under the minimum of {}",
                self.log_max_bytes,
                crate::logs::MIN_MAX_BYTES
            )));
        }
        if self.log_files == 0 || self.log_files > crate::logs::MAX_FILES {
            return Err(bad(format!(
                "--log-files {} must be between 1 and {}",
                self.log_files,
                crate::logs::MAX_FILES
            )));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("--data-dir is empty".into()));
        }
        let tls = self.tls_files()?;
        tls::policy::check_listen(&self.listen, tls.is_some(), self.insecure).map_err(bad)?;
        if let Some(d) = &self.depmgr {
            let want = if tls.is_some() { "https://" } else { "http://" };
            if !d.starts_with(want) {
                return Err(bad(if tls.is_some() {
                    format!(
                        "--depmgr {d:?} must start with https:// (the TLS flags are given: depmgr is reached over TLS only)"
                    )
                } else {
                    format!(
                        "--depmgr {d:?} must start with http:// (https:// needs --tls-ca, --tls-cert and --tls-key)"
                    )
                }));
            }
        }
        Ok(())
    }

    /// The TLS flags: all three, or none (`Ok(None)`); the error names
    /// the missing ones.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, Error> {
        TlsFiles::from_flags(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
        .map_err(Error::Config)
    }

    /// The `--label` flags as a map; an error names the bad label.
    pub fn label_map(&self) -> Result<BTreeMap<String, String>, Error> {
        let max = proto::spec::MAX_LABELS;
        if self.labels.len() > max {
            return Err(Error::Config(format!(
                "{} --label flags, over the limit of {max}",
                self.labels.len()
            )));
        }
        let mut map = BTreeMap::new();
        for label in &self.labels {
            let (k, v) = label
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("--label {label:?} is not key=value")))?;
            proto::spec::check_label(k, v).map_err(|m| Error::Config(format!("--label: {m}")))?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(map)
    }

    pub fn heartbeat_period(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_millis(self.fetch_timeout_ms)
    }

    /// The rotation of each module's output.
    pub fn log_rotation(&self) -> crate::logs::Rotation {
        crate::logs::Rotation {
            max_bytes: self.log_max_bytes,
            files: self.log_files,
        }
    }
}

fn check_host_port(flag: &str, s: &str) -> Result<(), Error> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{flag} {s:?} is not host:port")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        let c = Config::try_parse_from(all).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    const BASE: [&str; 6] = [
        "--node",
        "a",
        "--listen",
        "127.0.0.1:7100",
        "--data-dir",
        "/tmp/x",
    ];

    #[test]
    fn contract_flags_parse_with_defaults() {
        let mut args = BASE.to_vec();
        args.extend([
            "--supervisors",
            "127.0.0.1:1,127.0.0.1:2",
            "--label",
            "zone=east",
            "--label",
            "disk=ssd",
        ]);
        let c = parse(&args).expect("valid");
        assert_eq!(c.supervisors, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(c.heartbeat_ms, 300);
        assert_eq!(c.stop_grace_ms, 1000);
        assert_eq!(c.log_rotation(), crate::logs::Rotation::default());
        assert_eq!(c.log_rotation().bound(), 30 << 20);
        let labels = c.label_map().expect("labels");
        assert_eq!(labels["zone"], "east");
        assert_eq!(labels["disk"], "ssd");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: [(&[&str], &str); 11] = [
            (
                &["--supervisors", "h:1", "--log-max-bytes", "10"],
                "--log-max-bytes",
            ),
            (&["--supervisors", "h:1", "--log-files", "0"], "--log-files"),
            (
                &["--supervisors", "h:1", "--log-files", "101"],
                "--log-files",
            ),
            (&["--supervisors", "nope"], "--supervisors"),
            (&["--supervisors", "h:1", "--label", "zone"], "--label"),
            (
                &["--supervisors", "h:1", "--heartbeat-ms", "0"],
                "--heartbeat-ms",
            ),
            (&["--supervisors", "h:1", "--depmgr", "ftp://x"], "--depmgr"),
            (
                &["--supervisors", "h:1", "--depmgr", "https://x:1"],
                "--tls-ca",
            ),
            (&[], "--supervisors"),
            (
                &["--supervisors", "h:1", "--tls-ca", "ca.pem"],
                "--tls-cert",
            ),
            (
                &[
                    "--supervisors",
                    "h:1",
                    "--tls-cert",
                    "a.pem",
                    "--tls-key",
                    "a.key",
                ],
                "--tls-ca",
            ),
        ];
        for (extra, needle) in cases {
            let mut args = BASE.to_vec();
            args.extend_from_slice(extra);
            let err = parse(&args).expect_err(needle);
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    }

    #[test]
    fn plaintext_only_on_loopback_unless_insecure_and_depmgr_scheme_follows_tls() {
        let base = |listen: &'static str| {
            vec![
                "--node",
                "a",
                "--listen",
                listen,
                "--data-dir",
                "/tmp/x",
                "--supervisors",
                "h:1",
            ]
        };
        let err = parse(&base("0.0.0.0:7100")).expect_err("not loopback");
        assert!(
            err.contains("--tls-cert") && err.contains("--insecure"),
            "{err}"
        );
        let mut insecure = base("0.0.0.0:7100");
        insecure.push("--insecure");
        parse(&insecure).expect("--insecure");
        let tls = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
        ];
        let mut with_tls = base("0.0.0.0:7100");
        with_tls.extend(tls);
        let c = parse(&with_tls).expect("TLS on any address");
        assert!(c.tls_files().expect("files").is_some());
        with_tls.extend(["--depmgr", "http://d:1"]);
        let err = parse(&with_tls).expect_err("plaintext depmgr with TLS");
        assert!(err.contains("https://"), "{err}");
        let mut ok = base("127.0.0.1:7100");
        ok.extend(tls);
        ok.extend(["--depmgr", "https://d:1"]);
        parse(&ok).expect("https depmgr with TLS");
    }
}
