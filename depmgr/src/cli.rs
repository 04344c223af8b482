//! `supctl package ...`: the package subcommands, for the `supctl` binary
//! (in the supervisor crate) to mount.
//!
//! ```text
//! supctl package push <dir> [--depmgr http://host:port]   dir holds manifest.toml
//! supctl package list [--depmgr ...]
//! supctl package show <name@version> [--depmgr ...]
//! supctl package closure <name@version> [--depmgr ...]
//! ```
//!
//! `--depmgr` defaults to the `DEPMGR_URL` environment variable, else
//! `127.0.0.1:7000`; `host:port` without a scheme means `http://`, or
//! `https://` with TLS.
//!
//! TLS: [`run_with_tls`] takes the caller's loaded certificate (supctl's
//! `--tls-ca/--tls-cert/--tls-key`): the client presents it and accepts
//! only a server holding a depmgr certificate of the same CA, over
//! `https://` only. Uploads need an operator certificate; reads any
//! certificate of the CA. [`run`] is the same without TLS.
//!
//! Mounting it in a clap derive CLI:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Configuration packages in the dependency manager.
//!     #[command(subcommand)]
//!     Package(depmgr::cli::PackageCmd),
//! }
//! // ...
//! Command::Package(cmd) => depmgr::cli::run(cmd).await?,
//! // or, with the operator's certificate loaded:
//! Command::Package(cmd) => depmgr::cli::run_with_tls(cmd, Some(tls)).await?,
//! ```
//!
//! Output is for people: one line per result, errors through `anyhow`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::client::{Client, Timeouts};

/// Where the dependency manager is when nothing else is said: the
/// scheme follows TLS.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7000";

/// Where the dependency manager is.
#[derive(Debug, Clone, clap::Args)]
pub struct DepmgrAddr {
    /// URL of the dependency manager (`http://host:port`, `https://` with
    /// TLS; a bare `host:port` takes the scheme that fits).
    #[arg(long = "depmgr", env = "DEPMGR_URL", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub depmgr: String,
}

impl DepmgrAddr {
    fn client(&self, tls: Option<&Arc<tls::Tls>>) -> anyhow::Result<Client> {
        Ok(Client::with_tls(&self.depmgr, Timeouts::default(), tls)?)
    }
}

/// The `package` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PackageCmd {
    /// Build the archive of a directory holding manifest.toml (deterministic:
    /// the same directory gives the same digest) and upload it.
    Push {
        /// Directory with manifest.toml at its root.
        dir: PathBuf,
        #[command(flatten)]
        addr: DepmgrAddr,
    },
    /// List the stored packages and their versions.
    List {
        #[command(flatten)]
        addr: DepmgrAddr,
    },
    /// Show one version: digest, size, manifest, dependencies.
    Show {
        /// `name@version`, e.g. `web@1.0.0`.
        package: String,
        #[command(flatten)]
        addr: DepmgrAddr,
    },
    /// Show the resolved dependency closure in install order.
    Closure {
        /// `name@version`, e.g. `web@1.0.0`.
        package: String,
        #[command(flatten)]
        addr: DepmgrAddr,
    },
}

/// Splits `name@version`.
fn split_ref(s: &str) -> anyhow::Result<(&str, &str)> {
    let (name, version) = s
        .split_once('@')
        .with_context(|| format!("{s:?} is not name@version"))?;
    crate::parse_name_version(name, version)?;
    Ok((name, version))
}

/// Runs one `package` subcommand, printing its result on stdout.
pub async fn run(cmd: PackageCmd) -> anyhow::Result<()> {
    run_with_tls(cmd, None).await
}

/// As [`run`], over TLS with `tls`'s certificate when given.
pub async fn run_with_tls(cmd: PackageCmd, tls: Option<Arc<tls::Tls>>) -> anyhow::Result<()> {
    let tls = tls.as_ref();
    match cmd {
        PackageCmd::Push { dir, addr } => {
            let client = addr.client(tls)?;
            let (answer, created) = client
                .push_dir(&dir)
                .await
                .with_context(|| format!("pushing {}", dir.display()))?;
            let what = if created {
                "stored"
            } else {
                "already stored (same bytes)"
            };
            println!(
                "{}@{} {what}: sha256 {} ({} bytes)",
                answer.name, answer.version, answer.digest, answer.size
            );
        }
        PackageCmd::List { addr } => {
            let client = addr.client(tls)?;
            let packages = client.list().await.context("listing packages")?;
            if packages.is_empty() {
                println!("no packages");
            }
            let width = packages.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in packages {
                println!("{:width$}  {}", p.name, p.versions.join(", "));
            }
        }
        PackageCmd::Show { package, addr } => {
            let (name, version) = split_ref(&package)?;
            let client = addr.client(tls)?;
            let info = client
                .show(name, version)
                .await
                .with_context(|| format!("showing {package}"))?;
            println!("package   {}@{}", info.name, info.version);
            println!("digest    sha256 {}", info.digest);
            println!("size      {} bytes", info.size);
            println!("uploaded  {} ms since the epoch", info.uploaded_at_ms);
            let m = &info.manifest;
            if m.command.is_empty() {
                println!("command   (none: files only)");
            } else {
                println!("command   {} {}", m.command, m.args.join(" "));
            }
            for (k, v) in &m.env {
                println!("env       {k}={v}");
            }
            if info.dependencies.is_empty() {
                println!("depends   (nothing)");
            }
            for (dep, spec) in &info.dependencies {
                println!("depends   {dep} {spec}");
            }
            if let Some(h) = &m.health {
                let probe = match (&h.tcp, &h.http, &h.exec) {
                    (Some(t), _, _) => format!("tcp {t}"),
                    (_, Some(u), _) => format!("http {u}"),
                    (_, _, Some(c)) => format!("exec {}", c.join(" ")),
                    _ => "none".into(),
                };
                println!(
                    "health    {probe} every {} ms, timeout {} ms, failed after {}",
                    h.interval_ms, h.timeout_ms, h.failure_threshold
                );
            }
        }
        PackageCmd::Closure { package, addr } => {
            let (name, version) = split_ref(&package)?;
            let client = addr.client(tls)?;
            let order = client
                .closure(name, version)
                .await
                .with_context(|| format!("resolving {package}"))?;
            for (i, a) in order.iter().enumerate() {
                println!(
                    "{:>3}. {}@{}  sha256 {}",
                    i + 1,
                    a.name,
                    a.version,
                    a.digest
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Supctl {
        #[command(subcommand)]
        package: PackageCmd,
    }

    #[test]
    fn parses_like_supctl_would() {
        let p = Supctl::try_parse_from(["supctl", "push", "./pkg", "--depmgr", "http://h:1"])
            .expect("push");
        assert!(matches!(p.package, PackageCmd::Push { ref dir, ref addr }
            if dir == &PathBuf::from("./pkg") && addr.depmgr == "http://h:1"));
        let p = Supctl::try_parse_from(["supctl", "show", "web@1.0.0"]).expect("show");
        assert!(matches!(p.package, PackageCmd::Show { .. }));
        assert!(split_ref("web").is_err());
        assert!(split_ref("web@x").is_err());
        assert_eq!(split_ref("web@1.2.3").expect("ok"), ("web", "1.2.3"));
    }
}
