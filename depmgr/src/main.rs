//! `depmgr`: the dependency manager's program.
//!
//! Parses and checks its configuration ([`depmgr::config::Config`]: TLS
//! flags all or none, plaintext only on loopback unless `--insecure`),
//! loads its certificate (role depmgr, valid, of the CA), binds the
//! listener (TLS only with the flags), opens the store, prints `depmgr
//! listening on <addr>` on stdout (so a parent process can find a port
//! chosen with `:0`), and serves until SIGTERM or SIGINT; SIGHUP reloads
//! the certificate and key. Bad flags, an unusable certificate, an
//! unusable data dir or an address that cannot be bound: one line on
//! stderr, exit status 2, nothing on disk changed. Logs go to stderr
//! (`RUST_LOG`, default `info`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use depmgr::config::Config;
use depmgr::server::Trust;
use depmgr::store::Store;
use tokio_util::sync::CancellationToken;

/// Start-up failures: one line on stderr, exit status 2.
fn refuse(message: impl std::fmt::Display) -> ExitCode {
    let line = message.to_string().replace('\n', " ");
    eprintln!("depmgr: {line}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's first paragraph says what is wrong (sometimes over
            // several lines); tips and usage follow after a blank line.
            let rendered = e.to_string();
            let what: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            return refuse(what.join(" ").trim_start_matches("error: "));
        }
    };
    if let Err(e) = config.validate() {
        return refuse(e);
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    match config.log_format {
        depmgr::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        depmgr::config::LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return refuse(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(start(config))
}

async fn start(config: Config) -> ExitCode {
    // The certificate, then the port, before the data dir: neither a bad
    // certificate nor a busy port may leave a fresh data dir behind.
    let trust = match depmgr::server::load_tls(&config) {
        Ok(tls) => Trust {
            tls,
            handshakes: Default::default(),
        },
        Err(e) => return refuse(e),
    };
    let auth = trust.tls.as_ref().map(|t| (t, tls::ClientAuth::Optional));
    let listener = match tls::Bound::bind(&config.listen, auth, trust.handshakes.clone()).await {
        Ok(l) => l,
        Err(e) => return refuse(format!("cannot listen on {}: {e}", config.listen)),
    };
    let dir = config.data_dir.clone();
    let store = match tokio::task::spawn_blocking(move || Store::open(&dir)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return refuse(format!(
                "data dir {} is unusable: {e}",
                config.data_dir.display()
            ));
        }
        Err(e) => return refuse(format!("cannot open the store: {e}")),
    };
    match serve(config, listener, trust, store).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Config,
    listener: tls::Bound,
    trust: Trust,
    store: Store,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let shutdown = CancellationToken::new();
    // Installed before anything is announced, so an early signal is a clean
    // shutdown rather than the default (death).
    tokio::spawn(on_signal(shutdown.clone()).context("installing signal handlers")?);
    if let Some(tls) = &trust.tls {
        tls.reload_on_sighup()
            .context("installing the SIGHUP handler")?;
    }
    let identity = trust.tls.as_ref().map(|t| t.identity().to_string());
    tracing::info!(%addr, data_dir = %config.data_dir.display(), tls = ?identity, "depmgr serving");
    {
        // For a parent process that chose port 0; nobody reading is fine.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "depmgr listening on {addr}").and_then(|()| stdout.flush());
    }
    depmgr::server::run(&config, listener, trust, store, shutdown)
        .await
        .context("serving")
}

/// Installs the SIGTERM and SIGINT handlers now; the future fires
/// `shutdown` on the first of them.
fn on_signal(
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    })
}
