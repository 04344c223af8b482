//! The `agent` binary: parses the configuration, loads its certificate
//! (with the TLS flags), binds the status API, opens the data dir, and runs
//! the node manager until SIGTERM or SIGINT; SIGHUP reloads the
//! certificate and key.
//!
//! Exit status: 0 after a clean shutdown; 2 for bad flags (TLS flags given
//! only in part, plaintext on a non-loopback address without `--insecure`),
//! an unusable certificate (unreadable, expired, not of the CA, not
//! `agent/<--node>`), an unusable data dir or an address that cannot be
//! bound (one line on stderr, nothing on disk changed); 1 for a failure
//! while running.

use std::process::ExitCode;

use agent::Config;
use agent::state::{DataDir, StateFile};
use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // A module's shim is this binary too (see `agent::shim`).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == agent::shim::ARG) {
        agent::shim::main(&argv[2..]);
    }
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() {
                // One line: clap's message without its usage and help hints.
                let msg = e.to_string();
                let line = msg
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                eprintln!("agent: {}", line.trim_start_matches("error: "));
                return ExitCode::from(2);
            }
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("agent: {e}");
        return ExitCode::from(2);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cfg.log_format {
        agent::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        agent::config::LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Startup::Usage(msg)) => {
            eprintln!("agent: {msg}");
            ExitCode::from(2)
        }
        Err(Startup::Failed(e)) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Startup {
    /// Bad input: exit 2.
    Usage(String),
    Failed(anyhow::Error),
}

async fn start(cfg: Config) -> Result<(), Startup> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The certificate, then the listener, before the data dir: a bad
    // certificate or a listen address that cannot be used is an exit 2
    // that leaves the data dir untouched (opening it takes the lock and
    // writes a new incarnation).
    let tls = agent::load_tls(&cfg).map_err(|e| Startup::Usage(e.to_string()))?;
    let trust = agent::Trust {
        tls,
        handshakes: Default::default(),
    };
    let auth = trust.tls.as_ref().map(|t| (t, tls::ClientAuth::Optional));
    let listener = tls::Bound::bind(&cfg.listen, auth, trust.handshakes.clone())
        .await
        .map_err(|e| {
            Startup::Usage(agent::Error::Listen(format!("{}: {e}", cfg.listen)).to_string())
        })?;
    let (state_file, persisted) = StateFile::open(DataDir::new(&cfg.data_dir), now_ms)
        .map_err(|e| Startup::Usage(e.to_string()))?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    // Handlers are installed here, before anything runs, so a signal that
    // arrives early is a clean shutdown, not the default (death).
    let signal = wait_for_signal()
        .context("installing signal handlers")
        .map_err(Startup::Failed)?;
    tokio::spawn(async move {
        let name = signal.await;
        tracing::info!("{name} received: shutting down");
        signals.cancel();
    });
    if let Some(tls) = &trust.tls {
        tls.reload_on_sighup()
            .context("installing the SIGHUP handler")
            .map_err(Startup::Failed)?;
        tracing::info!(identity = %tls.identity(), "TLS on: status API, heartbeats and downloads");
    }
    agent::run(cfg, listener, trust, state_file, persisted, shutdown)
        .await
        .context("agent failed")
        .map_err(Startup::Failed)
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves with
/// the name of the first signal.
fn wait_for_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
