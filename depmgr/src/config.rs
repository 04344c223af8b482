//! Configuration of the `depmgr` program: one typed struct, every field a
//! flag that also reads `DEPMGR_<FLAG>` from the environment, validated at
//! start-up before anything touches the disk.
//!
//! TLS: `--tls-ca`, `--tls-cert` and `--tls-key` come together or not at
//! all ([`Config::tls_files`]); without them depmgr serves plaintext only
//! on a loopback `--listen`, unless `--insecure`
//! ([`tls::policy::check_listen`]). The certificate's role (depmgr) is
//! checked when it is loaded, in `main.rs`.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive::Limits;

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

/// `depmgr --listen <host:port> --data-dir <dir> [...]`
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "depmgr",
    version,
    about = "The dependency manager: stores versioned configuration packages and serves them"
)]
pub struct Config {
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, env = "DEPMGR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address to serve HTTP on, `host:port` (port 0: any free port; the
    /// chosen address is printed on stdout).
    #[arg(long, env = "DEPMGR_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,

    /// Directory of the package store; created if missing. One depmgr per
    /// directory.
    #[arg(long, env = "DEPMGR_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Largest archive accepted for upload, in bytes (256 MiB).
    #[arg(long, env = "DEPMGR_MAX_ARCHIVE_BYTES", default_value_t = 256 << 20)]
    pub max_archive_bytes: u64,

    /// Largest decompressed size of an archive, in bytes (1 GiB).
    #[arg(long, env = "DEPMGR_MAX_UNPACKED_BYTES", default_value_t = 1 << 30)]
    pub max_unpacked_bytes: u64,

    /// Most entries (files, directories, links) in one archive.
    #[arg(long, env = "DEPMGR_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: usize,

    /// An upload that sends no data for this long is abandoned, in ms.
    #[arg(long, env = "DEPMGR_UPLOAD_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub upload_idle_timeout_ms: u64,

    /// On SIGTERM or SIGINT, how long requests in flight may take to
    /// finish before the server closes them, in ms.
    #[arg(long, env = "DEPMGR_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// The cluster CA's certificate (PEM): clients must hold a certificate
    /// it signed. With `--tls-cert` and `--tls-key`: serve TLS only.
    #[arg(long, env = "DEPMGR_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// depmgr's certificate (PEM), of role depmgr.
    #[arg(long, env = "DEPMGR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The key of `--tls-cert` (PEM). Reloaded with it on SIGHUP.
    #[arg(long, env = "DEPMGR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Without TLS flags, serve plaintext on a non-loopback `--listen`
    /// anyway (anyone who can reach it can upload).
    #[arg(long, env = "DEPMGR_INSECURE")]
    pub insecure: bool,
}

impl Config {
    /// A config for tests and tools: defaults, the given address and dir.
    pub fn new(listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        let l = Limits::default();
        Config {
            log_format: LogFormat::Text,
            listen: listen.into(),
            data_dir: data_dir.into(),
            max_archive_bytes: l.max_archive_bytes,
            max_unpacked_bytes: l.max_unpacked_bytes,
            max_entries: l.max_entries,
            upload_idle_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
        }
    }

    /// The TLS flags: all three, or none (`Ok(None)`); the error names the
    /// missing ones.
    pub fn tls_files(&self) -> Result<Option<tls::TlsFiles>, String> {
        tls::TlsFiles::from_flags(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
    }

    /// Checks the values that clap cannot; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.trim().is_empty() {
            return Err("--listen is empty".into());
        }
        if !self.listen.contains(':') {
            return Err(format!("--listen {:?} is not host:port", self.listen));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("--data-dir is empty".into());
        }
        for (flag, value) in [
            ("--max-archive-bytes", self.max_archive_bytes),
            ("--max-unpacked-bytes", self.max_unpacked_bytes),
            ("--max-entries", self.max_entries as u64),
            ("--upload-idle-timeout-ms", self.upload_idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{flag} must be above 0"));
            }
        }
        let tls = self.tls_files()?;
        tls::policy::check_listen(&self.listen, tls.is_some(), self.insecure)
    }

    /// The upload limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_archive_bytes: self.max_archive_bytes,
            max_unpacked_bytes: self.max_unpacked_bytes,
            max_entries: self.max_entries,
        }
    }

    pub fn upload_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.upload_idle_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_parse_and_validate() {
        let c =
            Config::try_parse_from(["depmgr", "--data-dir", "/tmp/x", "--listen", "127.0.0.1:0"])
                .expect("parse");
        assert_eq!(c.max_archive_bytes, 256 << 20);
        c.validate().expect("valid");
        let c = Config::try_parse_from(["depmgr", "--data-dir", "/tmp/x", "--max-entries", "0"])
            .expect("parse");
        assert!(c.validate().expect_err("zero").contains("--max-entries"));
        assert!(Config::try_parse_from(["depmgr", "--listen", "x:1"]).is_err());
    }

    #[test]
    fn tls_flags_come_together_and_plaintext_stays_on_loopback() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["depmgr", "--data-dir", "/tmp/x"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).expect("parse").validate()
        };
        let e = parse(&["--tls-ca", "ca.pem"]).expect_err("partial");
        assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
        let e = parse(&["--listen", "0.0.0.0:7000"]).expect_err("plaintext");
        assert!(e.contains("--tls-ca") && e.contains("--insecure"), "{e}");
        parse(&["--listen", "0.0.0.0:7000", "--insecure"]).expect("insecure");
        parse(&[
            "--listen",
            "0.0.0.0:7000",
            "--tls-ca",
            "c",
            "--tls-cert",
            "d",
            "--tls-key",
            "k",
        ])
        .expect("TLS anywhere");
    }
}
