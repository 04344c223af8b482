//! Starting and stopping a replica: open the store, start Raft, bootstrap,
//! serve HTTP, and on shutdown drain everything in order.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::network::Network;
use crate::raft::Raft;
use crate::state::ClusterState;

/// Deadlines of every call to depmgr (package checks and retrieval).
const DEPMGR_TIMEOUTS: depmgr::client::Timeouts = depmgr::client::Timeouts {
    connect: Duration::from_secs(2),
    request: Duration::from_secs(5),
    idle: Duration::from_secs(5),
};

/// Runs a replica until `shutdown` fires, then stops cleanly. An error
/// before serving means nothing was changed (exit status 2).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    let raft_config = config
        .raft_config()
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let depmgr = depmgr::client::Client::with_timeouts(&config.depmgr, DEPMGR_TIMEOUTS)
        .map_err(|e| Error::Config(format!("--depmgr: {e}")))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let (log, sm) =
        raft_store::Store::open::<crate::raft::TypeConfig, ClusterState>(&config.data_dir)?;
    let state = sm.handle();
    let raft = Raft::new(config.id, Arc::new(raft_config), Network::new(), log, sm)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    let app = App::new(config, raft, state, depmgr, shutdown.child_token());
    app.bootstrap().await?;
    tracing::info!(id = app.id, listen = %app.config.listen, data_dir = %app.config.data_dir.display(), "supervisor replica serving");
    app.tasks.spawn(app.clone().watch_leadership());

    let router = crate::http::router(app.clone());
    let stop = app.cancel.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
    app.cancel.cancel();
    app.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within 5 s of shutdown");
    }
    if let Err(e) = app.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    tracing::info!(id = app.id, "supervisor replica stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now (so that an early signal is
/// a clean shutdown, not the default death); the future resolves on the
/// first of them.
pub fn terminated() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
