//! `supervisor`: one replica of the supervisor cluster (see CONTRACT.md).

use std::process::ExitCode;

use clap::Parser;
use supervisor::config::{Config, LogFormat};
use supervisor::error::Error;
use supervisor::server::{EXIT_RAFT_STOPPED, run, terminated};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("supervisor: {e}");
        return ExitCode::from(2);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("supervisor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        let signal = match terminated() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("supervisor: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            signal.await;
            on_signal.cancel();
        });
        match run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            // Already logged (one `error` line naming the cause).
            Err(Error::Fatal(_)) => ExitCode::from(EXIT_RAFT_STOPPED),
            Err(e) => {
                eprintln!("supervisor: {e}");
                ExitCode::from(2)
            }
        }
    })
}
