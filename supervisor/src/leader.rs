//! The leader-only control loop: failure detector, reconciler executor,
//! package retrieval and lease confirmation.
//!
//! A [`Leader`] exists while this replica is the Raft leader of one term; the
//! moment the replica stops being leader its cancellation token fires and
//! every task of the term ends. It keeps in memory (never in the log) the
//! latest heartbeat of every node ([`Observed`]); each pass of the control
//! loop runs the pure [`plan`], commits the planned transitions as one log
//! entry, and starts the package retrievals the plan asks for.
//!
//! Heartbeat replies wait for two things that are batched across all
//! heartbeats in flight: a control-loop pass that started after the
//! heartbeat was taken (when it changed something), so that a failure turns
//! into a committed restore order and a directive in the same round trip;
//! and a leadership confirmation by a quorum that started after the
//! heartbeat arrived, before any lease is granted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::heartbeat::Heartbeat;
use proto::manifest::{ArtifactRef, ConfigPackage, Manifest};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::observe::{Ingest, Observed};
use crate::plan::{Fetch, Scope, plan_scoped};
use crate::state::{Batch, PackageRetrieved, Transition};

/// How often the control loop runs without being woken (timers: TTLs,
/// healthy periods).
const TICK: Duration = Duration::from_millis(100);
/// How often a pass looks at every module (the others look at unsettled
/// modules and at nodes whose heartbeats changed).
const FULL_PASS: Duration = Duration::from_secs(1);
/// Longest a heartbeat reply waits for a control-loop pass.
const PASS_WAIT: Duration = Duration::from_millis(1000);
/// Longest a heartbeat reply waits for a leadership confirmation.
const CONFIRM_WAIT: Duration = Duration::from_millis(1000);
/// Timeout of each depmgr request.
const DEPMGR_TIMEOUT: Duration = Duration::from_secs(5);

/// Batches "has something finished that started after I asked?" waits:
/// a round started after `ticket()` returned is enough for that caller.
struct Rounds {
    next: AtomicU64,
    done: watch::Sender<(u64, bool)>,
    wake: Notify,
}

impl Rounds {
    fn new() -> Self {
        Rounds {
            next: AtomicU64::new(1),
            done: watch::channel((0, true)).0,
            wake: Notify::new(),
        }
    }

    /// Asks for a round and waits until one that started after this call
    /// has finished; its result, or `None` on timeout.
    async fn wait(&self, timeout: Duration) -> Option<bool> {
        let ticket = self.next.load(Ordering::SeqCst);
        self.wake.notify_one();
        let mut rx = self.done.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|(id, _)| *id >= ticket)).await;
        match waited {
            Ok(Ok(v)) => Some(v.1),
            _ => None,
        }
    }

    /// Starts a round: returns its id.
    fn start(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    fn finish(&self, id: u64, ok: bool) {
        self.done.send_replace((id, ok));
    }
}

/// Retrieval state of one placement's package.
#[derive(Debug, Default)]
struct FetchState {
    in_flight: bool,
    failures: u32,
    next_try: Option<Instant>,
}

/// This replica's leadership of one term.
pub struct Leader {
    pub term: u64,
    app: Arc<App>,
    started: Instant,
    pub observed: Mutex<Observed>,
    /// Nodes whose heartbeats changed since the last pass.
    dirty: Mutex<BTreeSet<String>>,
    passes: Rounds,
    confirms: Rounds,
    fetches: Mutex<BTreeMap<(String, u64), FetchState>>,
    /// Set once the state machine has applied everything committed before
    /// this term (so plans and directives see the whole past).
    ready: watch::Sender<bool>,
    pub cancel: CancellationToken,
}

impl Leader {
    /// Starts the term's tasks.
    pub fn start(app: Arc<App>, term: u64, parent: &CancellationToken) -> Arc<Leader> {
        let leader = Arc::new(Leader {
            term,
            app: app.clone(),
            started: Instant::now(),
            observed: Mutex::new(Observed::default()),
            dirty: Mutex::new(BTreeSet::new()),
            passes: Rounds::new(),
            confirms: Rounds::new(),
            fetches: Mutex::new(BTreeMap::new()),
            ready: watch::channel(false).0,
            cancel: parent.child_token(),
        });
        tracing::info!(
            term,
            "became leader: control loop starts, every node gets a fresh grace window"
        );
        let tracker = app.tasks.clone();
        tracker.spawn(leader.clone().control_loop());
        tracker.spawn(leader.clone().confirm_loop());
        leader
    }

    /// Leader clock: ms since this term started (never 0 for a heartbeat).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn lock_observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().expect("observed lock poisoned")
    }

    /// Takes a heartbeat into the in-memory view.
    pub fn ingest(&self, hb: &Heartbeat) -> Ingest {
        let now = self.now_ms();
        let outcome = {
            let mut observed = self.lock_observed();
            observed
                .nodes
                .entry(hb.node.clone())
                .or_default()
                .ingest(hb, now)
        };
        if matches!(
            outcome,
            Ingest::Accepted { changed: true, .. }
                | Ingest::Accepted {
                    need_table: true,
                    ..
                }
        ) {
            self.dirty
                .lock()
                .expect("dirty lock poisoned")
                .insert(hb.node.clone());
        }
        outcome
    }

    /// Waits for a control-loop pass that started after this call.
    pub async fn await_pass(&self) -> bool {
        self.passes.wait(PASS_WAIT).await.unwrap_or(false)
    }

    /// Waits for a quorum to confirm this leadership (batched); true when
    /// confirmed, so leases may be granted.
    pub async fn confirm(&self) -> bool {
        self.confirms.wait(CONFIRM_WAIT).await.unwrap_or(false)
    }

    /// Whether the state machine has caught up with this term.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await,
            Ok(Ok(_))
        )
    }

    async fn confirm_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.confirms.wake.notified() => {}
            }
            let id = self.confirms.start();
            let ok = matches!(
                tokio::time::timeout(CONFIRM_WAIT, self.app.raft.get_read_log_id()).await,
                Ok(Ok(_))
            );
            self.confirms.finish(id, ok);
            if !ok {
                tracing::warn!(
                    term = self.term,
                    "leadership not confirmed by a quorum: no leases granted"
                );
            }
        }
    }

    async fn control_loop(self: Arc<Self>) {
        // Catch up with everything committed before this term.
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(5), self.app.raft.ensure_linearizable()) => {
                    if matches!(r, Ok(Ok(_))) { break; }
                    tracing::warn!(term = self.term, "leader not yet caught up: retrying");
                }
            }
        }
        {
            let mut observed = self.lock_observed();
            observed.leader_since_ms = self.now_ms();
        }
        self.ready.send_replace(true);
        let mut progressed = false;
        let mut last_full = Instant::now() - FULL_PASS;
        loop {
            if !progressed {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.passes.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
            let id = self.passes.start();
            let full = last_full.elapsed() >= FULL_PASS;
            if full {
                last_full = Instant::now();
            }
            let outcome = self.pass(full).await;
            self.passes.finish(id, outcome.is_ok());
            // A pass that committed something may enable the next step of a
            // flow at once (e.g. release, then install): plan again now.
            progressed = matches!(outcome, Ok(true)) && !self.cancel.is_cancelled();
        }
    }

    /// One reconcile pass: plan, commit, start retrievals. `Ok(true)` when
    /// transitions were committed.
    async fn pass(self: &Arc<Self>, full: bool) -> Result<bool, ()> {
        let started = Instant::now();
        let now = self.now_ms();
        let timing = self.app.config.timing();
        let dirty = std::mem::take(&mut *self.dirty.lock().expect("dirty lock poisoned"));
        let scope = if full {
            Scope::All
        } else {
            Scope::Nodes(&dirty)
        };
        let planned = {
            let observed = self.lock_observed();
            self.app
                .state
                .read(|s| plan_scoped(s, &observed, now, timing, scope))
        };
        let m = &self.app.metrics;
        m.plan_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let result = self.commit_plan(planned).await;
        m.passes.fetch_add(1, Ordering::Relaxed);
        m.pass_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    async fn commit_plan(self: &Arc<Self>, planned: crate::plan::Plan) -> Result<bool, ()> {
        for fetch in planned.fetches {
            self.maybe_fetch(fetch);
        }
        if planned.transitions.is_empty() {
            return Ok(false);
        }
        let n = planned.transitions.len();
        match self.app.propose(planned.transitions).await {
            Ok(_) => {
                self.app
                    .metrics
                    .transitions
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.app.metrics.batches.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(term = self.term, error = %e, "committing planned transitions failed");
                Err(())
            }
        }
    }

    /// Starts retrieving a placement's configuration package, unless one is
    /// under way or failed recently (exponential backoff up to 5 s).
    fn maybe_fetch(self: &Arc<Self>, fetch: Fetch) {
        let key = (fetch.module.clone(), fetch.epoch);
        {
            let mut fetches = self.fetches.lock().expect("fetches lock poisoned");
            fetches.retain(|(m, e), _| m != &fetch.module || *e >= fetch.epoch);
            let st = fetches.entry(key.clone()).or_default();
            if st.in_flight || st.next_try.is_some_and(|t| Instant::now() < t) {
                return;
            }
            st.in_flight = true;
        }
        let leader = self.clone();
        self.app.tasks.spawn(async move {
            let result = tokio::select! {
                _ = leader.cancel.cancelled() => return,
                r = retrieve_package(&leader.app.http, &leader.app.config.depmgr, &fetch) => r,
            };
            let committed = match result {
                Ok(package) => {
                    tracing::info!(module = %fetch.module, epoch = fetch.epoch, artifacts = package.artifacts.len(), "configuration package retrieved from depmgr");
                    let t = Transition::PackageRetrieved(PackageRetrieved {
                        module: fetch.module.clone(),
                        epoch: fetch.epoch,
                        package,
                    });
                    leader.app.propose(vec![t]).await.is_ok()
                }
                Err(e) => {
                    tracing::warn!(module = %fetch.module, epoch = fetch.epoch, error = %e, "retrieving the configuration package failed");
                    false
                }
            };
            let mut fetches = leader.fetches.lock().expect("fetches lock poisoned");
            if let Some(st) = fetches.get_mut(&key) {
                st.in_flight = false;
                if !committed {
                    st.failures += 1;
                    let backoff = Duration::from_millis(100 << st.failures.min(6)).min(Duration::from_secs(5));
                    st.next_try = Some(Instant::now() + backoff);
                }
            }
            drop(fetches);
            leader.passes.wake.notify_one();
        });
    }
}

#[derive(serde::Deserialize)]
struct PackageInfo {
    manifest: Manifest,
}

/// Retrieves a module's configuration package from depmgr: the manifest
/// and the dependency closure in install order.
pub async fn retrieve_package(
    http: &reqwest::Client,
    depmgr: &str,
    fetch: &Fetch,
) -> Result<ConfigPackage, String> {
    let base = format!(
        "{}/v1/packages/{}/{}",
        depmgr.trim_end_matches('/'),
        fetch.package.name,
        fetch.package.version
    );
    async fn get<T: serde::de::DeserializeOwned>(
        http: &reqwest::Client,
        url: &str,
    ) -> Result<T, String> {
        let resp = http
            .get(url)
            .timeout(DEPMGR_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("GET {url}: {status}: {}", body.trim()));
        }
        resp.json::<T>()
            .await
            .map_err(|e| format!("GET {url}: bad answer: {e}"))
    }
    let info: PackageInfo = get(http, &base).await?;
    let artifacts: Vec<ArtifactRef> = get(http, &format!("{base}/closure")).await?;
    match artifacts.last() {
        Some(own) if own.name == fetch.package.name && own.version == fetch.package.version => {}
        _ => {
            return Err(format!(
                "closure of {} does not end with the package itself",
                fetch.package
            ));
        }
    }
    Ok(ConfigPackage {
        manifest: info.manifest,
        artifacts,
    })
}

/// Stamps a batch with the wall clock (the only clock that enters the log).
pub fn stamp(transitions: Vec<Transition>) -> Batch {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Batch { at_ms, transitions }
}
