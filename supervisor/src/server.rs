//! Starting and stopping a replica: load the TLS identity, bind, open the
//! store, start Raft, bootstrap, serve HTTP(S), and on shutdown drain
//! everything in order.
//!
//! With the TLS flags the certificate is loaded and checked before the
//! data dir is touched (it must name `supervisor/<--id>`), re-read on
//! SIGHUP, and the listener serves TLS only, verifying the client
//! certificates it is offered ([`ClientAuth::Optional`]: the routes decide
//! what a client without one may do, see [`crate::http::auth`]).

use std::sync::Arc;
use std::time::Duration;

use tls::{Bound, ClientAuth, HandshakeStats, Role, Tls};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::network::{Network, RaftIo};
use crate::raft::Raft;
use crate::state::ClusterState;

/// Deadlines of every call to depmgr (package checks and retrieval).
const DEPMGR_TIMEOUTS: depmgr::client::Timeouts = depmgr::client::Timeouts {
    connect: Duration::from_secs(2),
    request: Duration::from_secs(5),
    idle: Duration::from_secs(5),
};

/// Exit status of a replica whose Raft stopped on a fatal error (a storage
/// error, a panic in the Raft core): distinct from 2 (flags, data dir).
pub const EXIT_RAFT_STOPPED: u8 = 3;

/// How long the HTTP server and the tasks get to stop after Raft stopped
/// on a fatal error before the process exits anyway.
const FATAL_EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// Runs a replica until `shutdown` fires, then stops cleanly. An error
/// before serving means nothing was changed (exit status 2). If Raft stops
/// on its own (a storage error, a panic in the Raft core), the replica logs
/// one `error` line naming the cause, stops serving and returns
/// [`Error::Fatal`] (exit status [`EXIT_RAFT_STOPPED`]): it must not keep
/// answering as if it were a healthy member.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let raft_config = config
        .raft_config()
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    raise_open_files(config.max_connections as u64 + crate::config::OTHER_FILES);
    let tls = load_tls(&config)?;
    let restore = match &config.restore_from {
        Some(file) => Some(crate::backup::load(file)?),
        None => None,
    };
    let depmgr = depmgr::client::Client::with_tls(&config.depmgr, DEPMGR_TIMEOUTS, tls.as_ref())
        .map_err(|e| Error::Config(format!("--depmgr: {e}")))?;
    let handshakes = Arc::new(HandshakeStats::default());
    let listener = Bound::bind(
        config.listen,
        tls.as_ref().map(|t| (t, ClientAuth::Optional)),
        handshakes.clone(),
    )
    .await
    .map_err(|e| match e {
        tls::server::BindError::Listen(source) => Error::Listen {
            addr: config.listen.to_string(),
            source,
        },
        tls::server::BindError::Tls(e) => Error::Config(format!("TLS: {e}")),
    })?;
    if let Some(tls) = &tls {
        tls.reload_on_sighup()
            .map_err(|e| Error::Config(format!("cannot install the SIGHUP handler: {e}")))?;
    }
    let (mut log, mut sm) =
        raft_store::Store::open::<crate::raft::TypeConfig, ClusterState>(&config.data_dir)?;
    if let Some(b) = &restore {
        crate::backup::seed(b, &config, &mut log, &mut sm).await?;
        tracing::info!(index = b.index, term = b.term, cluster_id = b.cluster_id, sha256 = %b.sha256, "restored the replicated state from a backup");
    }
    let state = sm.handle();
    let raft_io = Arc::new(RaftIo::default());
    raft_io.observe(&log);
    let network = Network::new(tls.as_ref(), raft_io.clone());
    let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    let app = App::new(
        config,
        raft,
        state,
        depmgr,
        tls,
        crate::app::IoStats {
            handshakes,
            raft_io,
        },
        shutdown.child_token(),
    );
    app.bootstrap().await?;
    tracing::info!(id = app.id, listen = %app.config.listen, tls = app.tls.is_some(), data_dir = %app.config.data_dir.display(), "supervisor replica serving");
    app.tasks.spawn(app.clone().watch_leadership());
    let fatal = tokio::spawn(watch_fatal(app.clone()));

    let router = crate::http::router(app.clone());
    let stop = app.cancel.clone();
    let limits = tls::ServeLimits {
        max_connections: app.config.max_connections,
        ..Default::default()
    };
    let served = listener
        .serve_with(router, async move { stop.cancelled().await }, limits)
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
    fatal.abort();
    if let Some(cause) = app.fatal() {
        // Raft has stopped already; do not wait on it.
        return Err(Error::Fatal(Box::new(cause)));
    }
    if let Err(e) = app.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    tracing::info!(id = app.id, "supervisor replica stopped");
    Ok(())
}

/// Watches Raft's metrics for a stop this replica did not ask for: a
/// storage error (openraft stops the core on any `StorageError`, including
/// a failed WAL sync) or a panic in the core (the metrics channel closes).
/// Records the cause, logs it once, and stops the HTTP server; a process
/// that has not exited [`FATAL_EXIT_DEADLINE`] later exits anyway.
async fn watch_fatal(app: Arc<App>) {
    use openraft::error::Fatal;
    let mut rx = app.raft.metrics();
    let cause = loop {
        if let Err(e) = &rx.borrow_and_update().running_state {
            break e.clone();
        }
        tokio::select! {
            _ = app.cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { break Fatal::Panicked },
        }
    };
    if app.cancel.is_cancelled() {
        return; // a shutdown we asked for
    }
    let why = match &cause {
        Fatal::StorageError(e) => format!("storage error: {e}"),
        Fatal::Panicked => "the Raft core panicked".to_string(),
        Fatal::Stopped => "stopped without being asked to".to_string(),
    };
    app.set_fatal(cause);
    tracing::error!(id = app.id, data_dir = %app.config.data_dir.display(), "Raft stopped: {why}; exiting with status {EXIT_RAFT_STOPPED}");
    app.cancel.cancel();
    std::thread::spawn(|| {
        std::thread::sleep(FATAL_EXIT_DEADLINE);
        eprintln!(
            "supervisor: did not stop within {FATAL_EXIT_DEADLINE:?} of Raft stopping; exiting"
        );
        std::process::exit(i32::from(EXIT_RAFT_STOPPED));
    });
}

/// Loads and checks `--tls-ca/--tls-cert/--tls-key` (none: `None`): the
/// certificate must name `supervisor/<--id>`.
fn load_tls(config: &Config) -> Result<Option<Arc<Tls>>> {
    let Some(files) = config.tls_files()? else {
        return Ok(None);
    };
    let who = format!("this supervisor (--id {})", config.id);
    let tls = Tls::load_as(files, Role::Supervisor, Some(&config.id.to_string()), &who)
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    Ok(Some(tls))
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

/// Raises the soft open-file limit to `want` (at most the hard limit):
/// every served connection holds a file. Warns when the hard limit is
/// lower, naming both figures, and carries on: connections beyond it are
/// refused by the kernel, not by a crash.
fn raise_open_files(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return;
        }
    };
    if soft >= want {
        return;
    }
    let new = want.min(hard);
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        tracing::warn!(soft, hard, "cannot raise the open-file limit: {e}");
        return;
    }
    if new < want {
        tracing::warn!(
            limit = new,
            wanted = want,
            "the open-file limit (hard {hard}) is below --max-connections plus the replica's own files: raise it (ulimit -Hn, LimitNOFILE=) or lower --max-connections"
        );
    } else {
        tracing::debug!(from = soft, to = new, "raised the open-file limit");
    }
}
