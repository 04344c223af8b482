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

//!
//! Files: this one holds the term's session and its control loop;
//! [`heartbeat`] the leader's side of the heartbeat protocol; [`packages`]
//! configuration package retrieval; [`rounds`] the batching of waits.

mod heartbeat;
mod packages;
mod prestaged;
mod rounds;

pub use heartbeat::not_leader;
pub use packages::retrieve_package;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::heartbeat::{Heartbeat, ModuleStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::error::Result;
use crate::observe::{Ingest, Observed};
use crate::plan::{Plan, Scope, Sweep, plan_scoped};
use crate::state::{Batch, EventKind, Transition};
use packages::FetchState;
use rounds::Rounds;

/// How often the control loop runs without being woken (timers: TTLs,
/// healthy periods).
const TICK: Duration = Duration::from_millis(100);
/// How often a pass also sweeps a slice of all modules, the safety net
/// (every pass looks at what changed: see `plan::Scope::Changed`).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Modules per sweep: the safety net's cost per pass stays bounded (about
/// 4 ms), idle modules cost the leader well under 1% of a core, and it
/// goes round 100,000 modules in 49 s.
const SWEEP_MODULES: usize = 2048;
/// Longest a heartbeat reply waits for a control-loop pass.
const PASS_WAIT: Duration = Duration::from_millis(1000);
/// Longest a heartbeat reply waits for a leadership confirmation.
const CONFIRM_WAIT: Duration = Duration::from_millis(1000);

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
    /// Which modules would fail over to each node next (pre-staging),
    /// computed once per state index.
    prestage_targets: Mutex<crate::prestage::Targets>,
    /// Set once the state machine has applied everything committed before
    /// this term (so plans and directives see the whole past).
    ready: watch::Sender<bool>,
    /// The last event looked at for the failover histogram.
    failovers_seen: Mutex<u64>,
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
            prestage_targets: Mutex::new(crate::prestage::Targets::default()),
            ready: watch::channel(false).0,
            failovers_seen: Mutex::new(app.state.read(|s| s.next_event)),
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

    /// Takes a heartbeat into the in-memory view (and records the
    /// pre-stagings it reports for the first time).
    pub fn ingest(self: &Arc<Self>, hb: &Heartbeat) -> Ingest {
        let now = self.now_ms();
        let (outcome, prestaged) = {
            let mut observed = self.lock_observed();
            let obs = observed.nodes.entry(hb.node.clone()).or_default();
            let outcome = obs.ingest(hb, now);
            (outcome, std::mem::take(&mut obs.newly_prestaged))
        };
        self.record_prestaged(&hb.node, prestaged);
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
        let mut last_sweep = Instant::now();
        // The term's first pass looks at every module; the next ones at
        // what changed since the previous pass, which planned when the
        // state was at `since`, and once a second at a slice of all
        // modules too, from `cursor` on.
        let mut since = None;
        let mut cursor = None;
        loop {
            if !progressed {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.passes.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
            let id = self.passes.start();
            let sweep = last_sweep.elapsed() >= SWEEP_EVERY;
            if sweep {
                last_sweep = Instant::now();
            }
            let outcome = self.pass(&mut since, sweep.then_some(&mut cursor)).await;
            self.passes.finish(id, outcome.is_ok());
            // A pass that committed something may enable the next step of a
            // flow at once (e.g. release, then install): plan again now.
            progressed = matches!(outcome, Ok(true)) && !self.cancel.is_cancelled();
        }
    }

    /// One reconcile pass: plan, commit, start retrievals. `Ok(true)` when
    /// transitions were committed. `since` is the state's index when the
    /// previous pass planned (`None`: no pass yet, look at every module);
    /// it becomes this pass's. With `sweep`, the pass also looks at the
    /// slice of modules after that cursor, and moves it on.
    async fn pass(
        self: &Arc<Self>,
        since: &mut Option<u64>,
        sweep: Option<&mut Option<String>>,
    ) -> Result<bool> {
        let started = Instant::now();
        let now = self.now_ms();
        let timing = self.app.config.timing();
        let dirty = std::mem::take(&mut *self.dirty.lock().expect("dirty lock poisoned"));
        let after = sweep.as_ref().map(|c| c.as_deref());
        let scope = match *since {
            None => Scope::All,
            Some(since) => Scope::Changed {
                dirty: &dirty,
                since,
                sweep: after.map(|after| Sweep {
                    after,
                    count: SWEEP_MODULES,
                }),
            },
        };
        let (mut planned, index) = {
            let observed = self.lock_observed();
            self.app
                .state
                .read(|s| (plan_scoped(s, &observed, now, timing, scope), s.last_index))
        };
        let previous = since.replace(index);
        if let Some(cursor) = sweep {
            *cursor = planned.swept_to.take();
        }
        let m = &self.app.metrics;
        m.plan_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let result = self.commit_plan(planned).await;
        if result.is_err() {
            // What this pass planned was not committed: the next pass looks
            // at the same changes again.
            *since = previous;
            self.dirty
                .lock()
                .expect("dirty lock poisoned")
                .extend(dirty);
        }
        m.passes.fetch_add(1, Ordering::Relaxed);
        m.pass_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    async fn commit_plan(self: &Arc<Self>, planned: Plan) -> Result<bool> {
        for fetch in planned.fetches {
            self.maybe_fetch(fetch);
        }
        if planned.transitions.is_empty() {
            return Ok(false);
        }
        let n = planned.transitions.len();
        let failed_since = self.failed_since(&planned.transitions);
        match self.app.propose(planned.transitions).await {
            Ok(_) => {
                let m = &self.app.metrics;
                m.transitions.fetch_add(n as u64, Ordering::Relaxed);
                m.batches.fetch_add(1, Ordering::Relaxed);
                let now = self.now_ms();
                for since in failed_since {
                    m.restore_order_seconds
                        .observe(now.saturating_sub(since) as f64 / 1000.0);
                }
                self.observe_failovers();
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(term = self.term, error = %e, "committing planned transitions failed");
                Err(e)
            }
        }
    }
}

impl Leader {
    /// For each restore order among `transitions`: since when (leader
    /// clock) the heartbeats have shown its module not running on its node.
    fn failed_since(&self, transitions: &[Transition]) -> Vec<u64> {
        let orders: Vec<&str> = transitions
            .iter()
            .filter_map(|t| match t {
                Transition::RestoreOrdered(r) => Some(r.module.as_str()),
                _ => None,
            })
            .collect();
        if orders.is_empty() {
            return vec![];
        }
        let observed = self.lock_observed();
        self.app.state.read(|s| {
            orders
                .iter()
                .filter_map(|m| {
                    let node = &s.modules.get(*m)?.placement.as_ref()?.node;
                    let (_, status, since) = observed.nodes.get(node)?.module(m)?;
                    (status != ModuleStatus::Running).then_some(since)
                })
                .collect()
        })
    }

    /// Observes, for every `failover_completed` event since the last call,
    /// the time since its module's `failover_started` (the leader stamps
    /// of the two entries).
    fn observe_failovers(&self) {
        let mut seen = self.failovers_seen.lock().expect("failovers lock poisoned");
        let durations: Vec<u64> = self.app.state.read(|s| {
            let from = crate::http::events::first_after(s, *seen);
            *seen = s.next_event;
            let mut out = Vec::new();
            for (pos, e) in s.events.focus().narrow(from..).into_iter().enumerate() {
                if e.kind != EventKind::FailoverCompleted {
                    continue;
                }
                let started = s
                    .events
                    .focus()
                    .narrow(..from + pos)
                    .into_iter()
                    .rev()
                    .find(|x| x.kind == EventKind::FailoverStarted && x.module == e.module);
                if let Some(started) = started {
                    out.push(e.at_ms.saturating_sub(started.at_ms));
                }
            }
            out
        });
        for ms in durations {
            self.app
                .metrics
                .failover_seconds
                .observe(ms as f64 / 1000.0);
        }
    }
}

/// Stamps a batch with the wall clock (the only clock that enters the log).
pub fn stamp(transitions: Vec<Transition>) -> Batch {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Batch { at_ms, transitions }
}
