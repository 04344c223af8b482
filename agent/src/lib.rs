//! The node manager (agent): runs, watches and restores modules on one node
//! for the supervisor cluster.
//!
//! ## Role
//! The supervisor leader decides; the agent executes and reports. It runs
//! every module as a child process in its own process group, notices an
//! exit the moment it happens (and probe failures), and tells the leader in
//! its heartbeat: one 3-bit status code per module, plus the module table
//! when it changed. The leader's replies carry directives (install, restore,
//! stop), each fenced by the module's epoch, and renew the agent's lease;
//! without renewal the agent stops its `at-most-one` modules before the
//! lease ends, so the cluster can move them without ever running two copies.
//!
//! ## Parts
//! - [`config`]: flags and environment, validated once.
//! - [`manager`]: the module table and everything that changes it, cut by
//!   concept: `table` (the pure planner: directive rules and transitions
//!   returning effects), `install` (cache, download by digest, unpack),
//!   `cache` (the cache's LRU bound), `prefetch` (pre-staging a package
//!   for a failover to this node), `run` (process life-cycle), `fence` (lease rules and the fence),
//!   `view` (status API and heartbeat).
//! - [`heartbeat`]: the loop that talks to the supervisors.
//! - [`process`], [`spawner`], [`probe`]: module processes, the thread that
//!   forks them (parent-death signal), and health probes.
//! - [`state`]: the durable state file and data dir layout.
//! - [`logs`]: each module's output files (size rotation, written by the
//!   module's shim) and reading them (`GET /v1/modules/{name}/logs`).
//! - [`http`]: the status API and `/metrics` ([`metrics`]: heartbeats,
//!   package downloads and their times); `/health` open to all; with TLS
//!   every other path needs a certificate of the cluster CA (401
//!   otherwise).
//!
//! ## Trust
//! With `--tls-ca/--tls-cert/--tls-key` ([`load_tls`]: the certificate
//! must be `agent/<--node>`; reloaded on SIGHUP) the status API is served
//! by a [`tls::Bound`] listener (client certificates optional, checked per
//! route), heartbeats go over `https://` to servers holding a *supervisor*
//! certificate of the CA (any other is refused at the handshake, so
//! nothing of its reply is read: no lease, no directive, no leader hint),
//! and archives are downloaded over `https://` from a server holding a
//! depmgr certificate. The handshake and refusal counters are in
//! `/v1/status` under `tls` and in `/metrics`.
//!
//! depmgr is reached only through its own crate (`depmgr::client` to
//! download archives by digest, `depmgr::archive` to unpack them under the
//! one archive rule set); the agent has no HTTP code of its own for it, and
//! links no RocksDB.
//!
//! [`run`] wires them together; `src/main.rs` is the thin binary around it.

pub mod cgroup;
pub mod config;
pub mod heartbeat;
pub mod http;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod shim;
pub mod spawner;
pub mod state;

use std::sync::Arc;

use tls::{HandshakeStats, Role, Tls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use manager::Agent;

/// Everything that can go wrong in the agent library. A failed install,
/// restore or start becomes a report to the leader with this error's
/// message, so each variant's message names the problem and the thing
/// (flag, path, artifact, command) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or environment value that breaks a rule; names the flag.
    #[error("{0}")]
    Config(String),
    /// The data dir cannot be used; names the path and the problem.
    #[error("unusable data dir {0}")]
    DataDir(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {0}")]
    Listen(String),
    /// Something that should not happen (a thread or client that cannot be
    /// created, a task that panicked).
    #[error("internal error: {0}")]
    Internal(String),
    /// The configuration package of a directive cannot be installed as sent
    /// (invalid manifest, no command, artifacts that do not match).
    #[error("{0}")]
    InvalidPackage(String),
    /// An artifact could not be fetched, verified or unpacked; `source`
    /// is depmgr's own error (digest mismatch, an archive entry that breaks
    /// a rule, depmgr unreachable, ...).
    #[error("artifact {artifact}: {source}")]
    Artifact {
        /// `name@version`.
        artifact: String,
        #[source]
        source: depmgr::Error,
    },
    /// The manifest's command cannot be run from the unpacked package.
    #[error("command {command} {problem}")]
    Command { command: String, problem: String },
    /// The module's process could not be started.
    #[error("cannot start {program}: {source}")]
    Launch {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A health probe did not pass.
    #[error("{probe}: {reason}")]
    Probe {
        /// Which probe: `tcp <addr>`, `http <url>`, `exec <program>`.
        probe: String,
        reason: String,
    },
    /// A heartbeat did not reach a supervisor or got no usable answer
    /// (the cause chain included: connection refused, timeout, ...).
    #[error("{0}")]
    HeartbeatTransport(String),
    /// The supervisor answered a heartbeat with an error status.
    #[error("{status}: {message}")]
    HeartbeatRefused { status: u16, message: String },
    /// The supervisor's answer to a heartbeat cannot be decoded.
    #[error("bad reply: {0}")]
    HeartbeatReply(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The agent's side of TLS: its loaded certificate (none without the TLS
/// flags) and the handshake counters of its status listener.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub tls: Option<Arc<Tls>>,
    pub handshakes: Arc<HandshakeStats>,
}

/// Loads the TLS flags of `cfg`, if given, and checks that the
/// certificate is this node's: `agent/<--node>`. The error is the one line
/// the binary prints before exiting 2 (it names the file, or both
/// identities).
pub fn load_tls(cfg: &Config) -> Result<Option<Arc<Tls>>, Error> {
    let Some(files) = cfg.tls_files()? else {
        return Ok(None);
    };
    let who = format!("this agent (--node {})", cfg.node);
    let tls = Tls::load_as(files, Role::Agent, Some(&cfg.node), &who).map_err(Error::Config)?;
    Ok(Some(tls))
}

/// Runs the agent until `shutdown` is cancelled, then stops every module,
/// sends a last heartbeat and returns. `listener` serves the status API
/// (TLS or plaintext, as bound); `trust` is the TLS it was bound with.
pub async fn run(
    cfg: Config,
    listener: tls::Bound,
    trust: Trust,
    state_file: state::StateFile,
    persisted: state::PersistedState,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let orphans = process::sweep_orphans(&cfg.node, &state_file.dir().root().join("modules"));
    if !orphans.is_empty() {
        tracing::warn!(pids = ?orphans, "killed leftovers of an earlier agent's modules");
    }
    let scope = cgroup::scope(&cfg.node, state_file.dir().root());
    let in_cgroups = tokio::task::spawn_blocking(move || cgroup::sweep(&scope))
        .await
        .unwrap_or_default();
    if !in_cgroups.is_empty() {
        tracing::warn!(pids = ?in_cgroups, "killed leftovers of an earlier agent's modules in their cgroups");
    }
    let tasks = TaskTracker::new();
    let spawner = spawner::Spawner::start(tokio::runtime::Handle::current())
        .map_err(|e| Error::Internal(format!("cannot start the spawner thread: {e}")))?;
    let agent = Agent::new(
        manager::AgentOptions {
            node: cfg.node.clone(),
            addr: cfg.listen.clone(),
            labels: cfg.label_map()?,
            stop_grace: cfg.stop_grace(),
            fetch_timeout: cfg.fetch_timeout(),
            cache_max_bytes: cfg.cache_max_bytes,
            log_rotation: cfg.log_rotation(),
            default_depmgr: cfg.depmgr.clone(),
            tls: trust.tls.clone(),
            state_file,
            persisted,
        },
        spawner,
        tasks.clone(),
        shutdown.clone(),
    )?;
    tracing::info!(
        node = %cfg.node,
        listen = %cfg.listen,
        tls = trust.tls.is_some(),
        incarnation = agent.incarnation(),
        modules = agent.status().modules.len(),
        "agent started"
    );
    tasks.spawn(agent.clone().fence_loop());
    tasks.spawn(heartbeat::run(
        agent.clone(),
        heartbeat::HeartbeatSettings {
            supervisors: cfg.supervisors.clone(),
            period: cfg.heartbeat_period(),
            request_timeout: cfg.request_timeout(),
            tls: trust.tls.clone(),
            stream: cfg.heartbeat_stream,
        },
        shutdown.clone(),
    ));
    let router = http::router(agent.clone(), http::Access::new(&trust));
    let server = listener.serve(router, shutdown.clone().cancelled_owned());
    tasks.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("status API stopped: {e}");
        }
    });
    shutdown.cancelled().await;
    tasks.close();
    tasks.wait().await;
    tracing::info!("agent stopped");
    Ok(())
}
