//! The node manager's core: the modules this node holds, and everything
//! that changes them.
//!
//! ## Parts, cut by concept
//! - [`table`]: the module table and every rule that changes it, as a pure
//!   planner returning [`Effect`]s (directive rules included).
//! - [`install`]: the install pipeline (cache, download by digest through
//!   depmgr's client, unpack with depmgr's archive rules, command check).
//! - [`cache`]: the cache's bound (`--cache-max-bytes`, least recently
//!   used first, never an archive a held module uses).
//! - [`prefetch`]: pre-staging a package for a failover to this node
//!   (`Prefetch` directives), in the background.
//! - [`run`]: process life-cycle (launch, exit, health probe, stop).
//! - [`fence`]: lease rules and the fence that stops `at-most-one` modules
//!   before the lease ends.
//! - [`view`]: the status API's view and the heartbeat.
//!
//! ## Data flow
//! ```text
//! heartbeat loop ──► applier task (bounded queue, in order, see heartbeat)
//!   ──► Agent::apply ──► Table::plan_reply ──► one snapshot ──► save
//!         ──► Table::execute_reply(saved?) ──► effects ──► Agent::execute
//!                                                │ Notify, Spawn(task)
//!             install / restore / stop tasks ◄───┘
//!                     │ each step: Table::<step>(outcome) ──► effects ──► execute
//!   exit watcher, probe loop, lease fence ──► Table ──► effects (Notify: heartbeat at once)
//! ```
//! The table sits behind one mutex, held only while a table method runs
//! (never across an await); waiting (downloads, backoff, grace periods)
//! happens in [`Agent::execute`] and the tasks. Every status change returns
//! [`Effect::Notify`], which wakes the heartbeat loop, so an exit reaches the
//! leader within one round trip.
//!
//! ## Invariants
//! - [`Agent::execute`] is the only place effects turn into I/O (besides
//!   the one save of a reply's snapshot in [`Agent::apply`]), and it runs
//!   them in order: a [`Effect::Persist`] completes before the effects
//!   after it.
//! - Durable before it takes effect: a reply's directives execute only
//!   after the state they need (their epoch records) was saved; when the
//!   save fails (a full disk, an I/O error) none executes and the error is
//!   shown and reported (see [`table`]). The leader repeats its directives,
//!   so nothing is lost once the state can be saved again.
//! - The rest (operation fencing by `op`, process handles, lease) is the
//!   table's, see [`table`].

pub mod cache;
pub mod fence;
pub mod install;
pub mod prefetch;
pub mod run;
pub mod table;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use proto::heartbeat::{Directive, Heartbeat};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::spawner::Spawner;
use crate::state::{DataDir, PersistedState, StateFile};
use install::Installer;
pub use table::{Effect, MAX_MODULES, Table, TableConfig, Task};
pub use view::{ModuleStatusView, NodeIdentity, StatusView};

/// What the agent is told at start-up.
#[derive(Debug)]
pub struct AgentOptions {
    pub node: String,
    /// The `--listen` address, announced in the module table.
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub stop_grace: Duration,
    pub fetch_timeout: Duration,
    /// Bound of the archive cache (`--cache-max-bytes`).
    pub cache_max_bytes: u64,
    /// Rotation of each module's output (`--log-max-bytes`, `--log-files`).
    pub log_rotation: crate::logs::Rotation,
    /// depmgr to use when an install directive names none.
    pub default_depmgr: Option<String>,
    /// With TLS: downloads go over `https://` to a depmgr certificate.
    pub tls: Option<Arc<tls::Tls>>,
    pub state_file: StateFile,
    pub persisted: PersistedState,
}

/// The node manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    sh: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node: String,
    me: NodeIdentity,
    incarnation: u64,
    stop_grace: Duration,
    log_rotation: crate::logs::Rotation,
    dirs: DataDir,
    state_file: Arc<StateFile>,
    installer: Installer,
    spawner: Spawner,
    probe_client: reqwest::Client,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Woken on every status or table change: the heartbeat goes at once.
    changed: Notify,
    /// Woken when the lease changes.
    lease_changed: Notify,
    table: Mutex<Table>,
    /// Pre-staging in flight (see [`prefetch`]).
    prefetches: Mutex<prefetch::Prefetches>,
}

impl Agent {
    /// Builds the agent from its persisted state: every installed module is
    /// `Stopped` until the supervisor orders a restore.
    pub fn new(
        opts: AgentOptions,
        spawner: Spawner,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Agent, crate::Error> {
        let dirs = opts.state_file.dir().clone();
        let probe_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| crate::Error::Internal(format!("http client: {e}")))?;
        let table = Table::new(
            TableConfig {
                incarnation: opts.persisted.incarnation,
                stop_grace: opts.stop_grace,
                default_depmgr: opts.default_depmgr,
                shutdown: shutdown.clone(),
            },
            &opts.persisted,
        );
        Ok(Agent {
            sh: Arc::new(Shared {
                me: NodeIdentity {
                    node: opts.node.clone(),
                    addr: opts.addr,
                    labels: opts.labels,
                },
                node: opts.node,
                incarnation: opts.persisted.incarnation,
                stop_grace: opts.stop_grace,
                log_rotation: opts.log_rotation,
                installer: Installer::new(
                    dirs.clone(),
                    opts.fetch_timeout,
                    opts.tls,
                    Arc::new(cache::Cache::open(&dirs.cache_dir(), opts.cache_max_bytes)),
                ),
                dirs,
                state_file: Arc::new(opts.state_file),
                spawner,
                probe_client,
                tasks,
                shutdown,
                changed: Notify::new(),
                lease_changed: Notify::new(),
                table: Mutex::new(table),
                prefetches: Mutex::new(prefetch::Prefetches::default()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.sh.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn incarnation(&self) -> u64 {
        self.sh.incarnation
    }

    pub fn node(&self) -> &str {
        &self.sh.node
    }

    /// The newest file of `module`'s output (`output.log`), and how it
    /// is rotated.
    pub fn output_log(&self, module: &str) -> (std::path::PathBuf, crate::logs::Rotation) {
        (self.sh.dirs.output_log(module), self.sh.log_rotation)
    }

    /// Whether `module` is in the module table.
    pub fn holds(&self, module: &str) -> bool {
        self.status().modules.iter().any(|m| m.name == module)
    }

    /// Cancelled when the agent shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.sh.shutdown.clone()
    }

    /// Woken whenever the heartbeat should go out at once.
    pub fn changed(&self) -> &Notify {
        &self.sh.changed
    }

    /// The heartbeat with sequence number `seq` (see
    /// [`Table::heartbeat`]) and how many reports it carries.
    pub fn heartbeat(&self, seq: u64, acked: Option<u64>) -> (Heartbeat, usize) {
        self.lock().heartbeat(&self.sh.me, seq, acked)
    }

    /// A heartbeat carrying `sent_reports` reports, sent at `sent_at` to
    /// `leader`, was accepted with a lease of `lease_ms`.
    pub async fn accepted(
        &self,
        sent_reports: usize,
        sent_at: Instant,
        lease_ms: u64,
        leader: &str,
    ) {
        let effects = self
            .lock()
            .accepted(sent_reports, sent_at, lease_ms, leader);
        self.execute(effects).await;
    }

    /// The supervisor cluster this agent serves (0: none yet).
    pub fn cluster(&self) -> u64 {
        self.lock().cluster
    }

    /// No leader is known (unreachable, or no hint).
    pub fn lost_leader(&self) {
        self.lock().lost_leader();
    }

    /// The status API's view.
    pub fn status(&self) -> StatusView {
        self.lock().status_view(&self.sh.node, Instant::now())
    }

    /// Executes the directives of an accepted heartbeat reply, in order:
    /// the reply is decided as a whole ([`Table::plan_reply`]), the state
    /// it needs saved once, then (only if the save succeeded) the
    /// directives execute ([`Table::execute_reply`]). Returns once each is
    /// decided and its task started. Called by one task at a time, in reply
    /// order (the heartbeat loop's applier).
    ///
    /// `cluster` is the leader's cluster id from the reply: a cluster other
    /// than the one served is adopted first, durably (see
    /// [`Table::adopt_cluster`]).
    pub async fn apply(&self, cluster: u64, directives: Vec<Directive>) {
        let mut plan = self.lock().plan_reply(cluster, directives);
        let saved = match plan.snapshot.take() {
            Some(snap) => self.save(snap).await,
            None => Ok(()),
        };
        let effects = self.lock().execute_reply(plan, saved);
        self.execute(effects).await;
    }

    /// Turns effects into I/O, in order (the only place that does). Boxed:
    /// effects start tasks that execute effects in turn.
    fn execute(&self, effects: Vec<Effect>) -> BoxFuture<'static, ()> {
        let agent = self.clone();
        Box::pin(async move {
            for effect in effects {
                agent.execute_one(effect).await;
            }
        })
    }

    async fn execute_one(&self, effect: Effect) {
        match effect {
            Effect::Persist(snap) => self.persist(snap).await,
            Effect::Notify => self.sh.changed.notify_one(),
            Effect::LeaseChanged => self.sh.lease_changed.notify_one(),
            Effect::Spawn(task) => {
                let task: BoxFuture<'static, ()> = Box::pin(self.clone().run_task(task));
                self.sh.tasks.spawn(task);
            }
            Effect::Stop(handle) => {
                handle.stop(self.sh.stop_grace).await;
            }
            Effect::Start {
                module,
                op,
                after_install,
            } => self.start(&module, op, after_install).await,
            Effect::Launch(plan) => self.launch(plan).await,
            Effect::Probe(plan) => {
                let probe: BoxFuture<'static, ()> = Box::pin(self.clone().probe_loop(plan));
                self.sh.tasks.spawn(probe);
            }
            Effect::Fence(victims) => self.stop_victims(victims).await,
            Effect::StopAll(handles) => self.stop_processes(handles).await,
            Effect::RemovePlacement { module, epoch } => {
                self.remove_placement(&module, epoch).await
            }
            Effect::KeepOnlyPlacement { module, keep } => {
                self.remove_placements(&module, Some(keep)).await
            }
            Effect::ForgetFiles { module } => self.remove_placements(&module, None).await,
            Effect::Prefetch(p) => self.prefetch(p).await,
        }
    }

    /// Executes [`Effect::Persist`]: a failure is logged (the state change
    /// of a task step already happened; the next save carries it).
    async fn persist(&self, snap: table::Snapshot) {
        if let Err(e) = self.save(snap).await {
            tracing::error!("cannot persist the agent state: {e}");
        }
    }

    /// Saves a snapshot (off the runtime's workers: it fsyncs).
    async fn save(&self, (rev, state): table::Snapshot) -> Result<(), String> {
        let file = self.sh.state_file.clone();
        match tokio::task::spawn_blocking(move || file.save(rev, &state)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("state persist task failed: {e}")),
        }
    }
}
