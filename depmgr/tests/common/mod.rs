//! Test harness: a real `depmgr` process on a temporary data dir, and
//! builders for good and bad package archives.
//!
//! [`Depmgr`] owns its child process and kills it on drop. The port is
//! chosen by the kernel (`--listen 127.0.0.1:0`) and read from the
//! `depmgr listening on <addr>` line on stdout; readiness is `GET /health`
//! polled with a deadline. stderr goes to a file that is printed when a
//! test fails while the process is held.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use tar::{EntryType, Header};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_depmgr")
}

/// A running depmgr.
pub struct Depmgr {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
}

impl Depmgr {
    /// Starts depmgr on `data_dir` with extra flags and waits until it
    /// answers `GET /health`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Result<Depmgr> {
        let stderr_path = data_dir.with_extension(format!(
            "stderr-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child = Command::new(bin())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "depmgr=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawn depmgr")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("depmgr listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let mut me = Depmgr {
            child: Some(child),
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            stderr_path,
        };
        me.addr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a,
            Err(_) => bail!(
                "depmgr did not report its address; stderr:\n{}",
                me.stderr()
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answer = http.get(me.url("/health")).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("depmgr never became healthy; stderr:\n{}", me.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then wait (with a deadline) for the exit status.
    pub fn terminate(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("no child")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        wait_with_deadline(&mut child, DEADLINE)
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(mut self) -> Result<()> {
        let mut child = self.child.take().context("no child")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Depmgr {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- depmgr stderr ---\n{}", self.stderr());
            }
        }
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// The manifest text of a package with a `bin/run` command and `deps`.
pub fn manifest(name: &str, version: &str, deps: &[(&str, &str)]) -> String {
    let mut text = format!("name = \"{name}\"\nversion = \"{version}\"\ncommand = \"bin/run\"\n");
    if !deps.is_empty() {
        text.push_str("\n[dependencies]\n");
        for (d, spec) in deps {
            text.push_str(&format!("{d} = \"{spec}\"\n"));
        }
    }
    text
}

/// A package directory under `root` and its deterministic archive.
pub fn package(
    root: &Path,
    name: &str,
    version: &str,
    deps: &[(&str, &str)],
    payload: &[u8],
) -> Vec<u8> {
    let dir = root.join(format!("{name}-{version}-src"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::write(dir.join("manifest.toml"), manifest(name, version, deps)).expect("write");
    std::fs::write(dir.join("bin/run"), b"#!/bin/sh\nexec sleep 1000\n").expect("write");
    std::fs::write(dir.join("payload"), payload).expect("write");
    depmgr::archive::pack_dir(&dir).expect("pack")
}

/// A tar.gz written entry by entry with raw names, so that paths the tar
/// crate refuses to write (`..`, absolute) can be built.
pub struct Raw {
    tar: tar::Builder<Vec<u8>>,
}

impl Raw {
    pub fn new() -> Raw {
        Raw {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    pub fn entry(self, kind: EntryType, name: &str, link: &str, data: &[u8]) -> Raw {
        self.entry_with_mode(kind, name, link, data, 0o644)
    }

    pub fn entry_with_mode(
        mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> Raw {
        let mut h = Header::new_old();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Raw {
        self.entry(EntryType::Regular, name, "", data)
    }

    /// An executable file (mode 0755).
    pub fn exec(self, name: &str, data: &[u8]) -> Raw {
        self.entry_with_mode(EntryType::Regular, name, "", data, 0o755)
    }

    pub fn dir(self, name: &str) -> Raw {
        self.entry_with_mode(EntryType::Directory, name, "", b"", 0o755)
    }

    pub fn symlink(self, name: &str, target: &str) -> Raw {
        self.entry(EntryType::Symlink, name, target, b"")
    }

    pub fn hard_link(self, name: &str, target: &str) -> Raw {
        self.entry(EntryType::Link, name, target, b"")
    }

    /// `manifest.toml` for `name@version` plus `bin/run`.
    pub fn valid(name: &str, version: &str) -> Raw {
        Raw::new()
            .file("manifest.toml", manifest(name, version, &[]).as_bytes())
            .file("bin/run", b"#!/bin/sh\n")
    }

    pub fn gz(self) -> Vec<u8> {
        let tar = self.tar.into_inner().expect("tar");
        gzip(&tar)
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).expect("gz");
    gz.finish().expect("gz")
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
