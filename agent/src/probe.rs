//! Health probes from a manifest's `[health]`: tcp connect, http 2xx, or an
//! exec command that exits 0, each bounded by `timeout_ms`, run every
//! `interval_ms` while the process lives.
//!
//! The verdict is pure ([`ProbeTracker`]): a process is `Starting` until its
//! first passing probe, then `Running`; `failure_threshold` consecutive
//! failures (before or after the first pass) make it `Failed`. An exec probe
//! runs in its own process group, which is killed when it overruns.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::manifest::HealthCheck;
use tokio::process::Command;

use crate::Error;
use crate::process::signal_group;

/// What one more probe result means for the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes.
    Same,
    /// First pass: the module is running.
    Passing,
    /// Threshold reached: the module failed.
    Failing,
}

/// Counts probe results.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    threshold: u32,
    failures: u32,
    passed: bool,
}

impl ProbeTracker {
    pub fn new(threshold: u32) -> ProbeTracker {
        ProbeTracker {
            threshold: threshold.max(1),
            failures: 0,
            passed: false,
        }
    }

    pub fn observe(&mut self, ok: bool) -> Verdict {
        if ok {
            self.failures = 0;
            if self.passed {
                Verdict::Same
            } else {
                self.passed = true;
                Verdict::Passing
            }
        } else {
            self.failures += 1;
            if self.failures == self.threshold {
                Verdict::Failing
            } else {
                Verdict::Same
            }
        }
    }
}

/// Runs one probe; the [`Error::Probe`] names the probe and why it failed.
pub async fn probe_once(
    check: &HealthCheck,
    dir: &Path,
    env: &[(String, String)],
    client: &reqwest::Client,
) -> Result<(), Error> {
    let fail = |probe: String, reason: String| Err(Error::Probe { probe, reason });
    let timeout = Duration::from_millis(check.timeout_ms);
    if let Some(addr) = &check.tcp {
        let probe = format!("tcp {addr}");
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => fail(probe, e.to_string()),
            Err(_) => fail(probe, format!("no connection within {timeout:?}")),
        };
    }
    if let Some(url) = &check.http {
        let probe = format!("http {url}");
        return match client.get(url).timeout(timeout).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => fail(probe, r.status().to_string()),
            Err(e) => fail(probe, e.to_string()),
        };
    }
    let Some((program, args)) = check.exec.as_ref().and_then(|argv| argv.split_first()) else {
        return fail("health check".into(), "names no probe".into());
    };
    let program = if Path::new(program).is_absolute() || !program.contains('/') {
        Path::new(program).to_path_buf()
    } else {
        dir.join(program)
    };
    let probe = format!("exec {}", program.display());
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(probe, e.to_string()),
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => fail(probe, s.to_string()),
        Ok(Err(e)) => fail(probe, e.to_string()),
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            fail(probe, format!("no answer within {timeout:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_table() {
        use Verdict::*;
        let mut t = ProbeTracker::new(2);
        assert_eq!(t.observe(false), Same);
        assert_eq!(t.observe(true), Passing);
        assert_eq!(t.observe(true), Same);
        assert_eq!(t.observe(false), Same);
        assert_eq!(t.observe(true), Same);
        assert_eq!(t.observe(false), Same);
        assert_eq!(t.observe(false), Failing);
        // Never passed: still fails at the threshold.
        let mut never = ProbeTracker::new(3);
        assert_eq!(never.observe(false), Same);
        assert_eq!(never.observe(false), Same);
        assert_eq!(never.observe(false), Failing);
    }

    fn check(f: impl FnOnce(&mut HealthCheck)) -> HealthCheck {
        let mut h = HealthCheck {
            tcp: None,
            http: None,
            exec: None,
            interval_ms: 100,
            timeout_ms: 300,
            failure_threshold: 1,
        };
        f(&mut h);
        h
    }

    #[tokio::test]
    async fn probes_pass_and_fail() {
        let client = reqwest::Client::new();
        let dir = std::env::temp_dir();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let tcp_ok = check(|h| h.tcp = Some(addr.clone()));
        assert!(probe_once(&tcp_ok, &dir, &[], &client).await.is_ok());
        drop(listener);
        assert!(probe_once(&tcp_ok, &dir, &[], &client).await.is_err());

        let yes = check(|h| h.exec = Some(vec!["true".into()]));
        assert!(probe_once(&yes, &dir, &[], &client).await.is_ok());
        let no = check(|h| h.exec = Some(vec!["false".into()]));
        assert!(probe_once(&no, &dir, &[], &client).await.is_err());
        let slow = check(|h| h.exec = Some(vec!["sleep".into(), "5".into()]));
        let err = probe_once(&slow, &dir, &[], &client)
            .await
            .expect_err("timeout");
        assert!(matches!(err, Error::Probe { .. }), "{err:?}");
        assert!(err.to_string().contains("no answer"), "{err}");
    }
}
