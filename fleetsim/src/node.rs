//! A simulated node: what the real agent's heartbeat loop
//! (`agent::heartbeat::run`) speaks for, without processes or packages.
//!
//! Installs and restores take effect at once; a crash is a status code
//! turned to `failed` plus a wake of the loop (as a real agent wakes it on
//! a module's exit), so the failing heartbeat goes out at once. What the
//! fleet measures is counted in [`Stats`], shared by every node.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent::heartbeat::Node;
use proto::heartbeat::{
    Directive, Heartbeat, ModuleStatus, ModuleTable, PackedStatuses, TableEntry,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Latencies of one kind, in microseconds, kept whole (a run holds a few
/// million at most: tens of MB).
#[derive(Debug, Default)]
pub struct Latencies(Mutex<Vec<u32>>);

impl Latencies {
    pub fn record(&self, since: Instant) {
        let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.0.lock().expect("latencies").push(us);
    }

    /// Takes what was recorded so far (the next phase starts empty).
    pub fn take(&self) -> Vec<u32> {
        std::mem::take(&mut *self.0.lock().expect("latencies"))
    }
}

/// Counters of the whole simulated fleet.
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeats built to be sent (every attempt).
    pub offered: AtomicU64,
    /// Heartbeats accepted by a leader.
    pub handled: AtomicU64,
    /// Accepted heartbeats sent after the node's lease had run out: the
    /// node would have fenced its at-most-one modules.
    pub lease_lapses: AtomicU64,
    /// Install directives executed.
    pub installs: AtomicU64,
    /// Restore directives that answered an injected crash.
    pub restores: AtomicU64,
    /// Modules held by all nodes.
    pub modules: AtomicU64,
    /// Heartbeat sent -> accepted reply read.
    pub heartbeat: Latencies,
    /// Crash injected -> the reply carrying its restore order read.
    pub crash_to_restore: Latencies,
    /// Modules whose install is awaited (a node-loss phase): name -> when
    /// the node was lost.
    pub awaited: Mutex<HashMap<String, Instant>>,
    /// Lost node -> installed elsewhere, per module.
    pub moved: Latencies,
}

#[derive(Debug)]
struct Module {
    entry: TableEntry,
    status: ModuleStatus,
    /// When the current failure was injected (a restore is awaited).
    crashed_at: Option<Instant>,
}

#[derive(Debug)]
struct State {
    table_version: u64,
    modules: Vec<Module>,
    cluster: u64,
    /// Until when the last accepted heartbeat's lease runs.
    lease_until: Option<Instant>,
}

/// One simulated node (cheap to clone: shared).
#[derive(Clone)]
pub struct SimNode(Arc<Inner>);

struct Inner {
    name: String,
    changed: Notify,
    state: Mutex<State>,
    stats: Arc<Stats>,
}

impl SimNode {
    pub fn new(name: String, stats: Arc<Stats>) -> SimNode {
        SimNode(Arc::new(Inner {
            name,
            changed: Notify::new(),
            state: Mutex::new(State {
                table_version: 1,
                modules: Vec::new(),
                cluster: 0,
                lease_until: None,
            }),
            stats,
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().expect("node state")
    }

    /// The names of the modules this node holds.
    pub fn module_names(&self) -> Vec<String> {
        self.lock()
            .modules
            .iter()
            .map(|m| m.entry.module.to_string())
            .collect()
    }

    /// Fails the `k`-th running module (counting from 0, wrapping), as if
    /// its process exited, and wakes the heartbeat loop. `false` when the
    /// node runs nothing that could fail.
    pub fn crash(&self, k: usize) -> bool {
        let crashed = {
            let mut s = self.lock();
            let n = s.modules.len();
            let now = Instant::now();
            (0..n)
                .map(|i| (k + i) % n)
                .find(|&i| s.modules[i].status == ModuleStatus::Running)
                .map(|i| {
                    let m = &mut s.modules[i];
                    m.status = ModuleStatus::Failed;
                    m.crashed_at = Some(now);
                })
                .is_some()
        };
        if crashed {
            self.0.changed.notify_one();
        }
        crashed
    }
}

impl Node for SimNode {
    fn changed(&self) -> &Notify {
        &self.0.changed
    }

    fn heartbeat(&self, seq: u64, acked: Option<u64>) -> (Heartbeat, usize) {
        self.0.stats.offered.fetch_add(1, Ordering::Relaxed);
        let s = self.lock();
        let statuses: Vec<ModuleStatus> = s.modules.iter().map(|m| m.status).collect();
        let heartbeat = Heartbeat {
            node: self.0.name.as_str().into(),
            incarnation: 1,
            seq,
            table_version: s.table_version,
            table: (acked != Some(s.table_version)).then(|| ModuleTable {
                addr: format!("{}:1", self.0.name),
                labels: BTreeMap::new(),
                modules: s.modules.iter().map(|m| m.entry.clone()).collect(),
                cluster: s.cluster,
            }),
            statuses: PackedStatuses::pack(&statuses),
            reports: vec![],
        };
        (heartbeat, 0)
    }

    async fn accepted(&self, _reports: usize, sent_at: Instant, lease_ms: u64, _leader: &str) {
        let stats = &self.0.stats;
        stats.handled.fetch_add(1, Ordering::Relaxed);
        stats.heartbeat.record(sent_at);
        let mut s = self.lock();
        if s.lease_until.is_some_and(|until| until < sent_at) {
            stats.lease_lapses.fetch_add(1, Ordering::Relaxed);
        }
        if lease_ms > 0 {
            s.lease_until = Some(sent_at + std::time::Duration::from_millis(lease_ms));
        }
    }

    fn cluster(&self) -> u64 {
        self.lock().cluster
    }

    fn lost_leader(&self) {}

    async fn apply(&self, cluster: u64, directives: Vec<Directive>) {
        let stats = &self.0.stats;
        let mut s = self.lock();
        if cluster != 0 {
            s.cluster = cluster;
        }
        let mut changed = false;
        for d in directives {
            match d {
                Directive::Install(i) => {
                    let name = i.module.to_string();
                    let before = s.modules.len();
                    s.modules.retain(|m| m.entry.module != i.module);
                    s.modules.push(Module {
                        entry: TableEntry {
                            module: i.module,
                            epoch: i.epoch,
                            restore_seq: 0,
                        },
                        status: ModuleStatus::Running,
                        crashed_at: None,
                    });
                    if s.modules.len() > before {
                        stats.modules.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.installs.fetch_add(1, Ordering::Relaxed);
                    let lost = stats.awaited.lock().expect("awaited").remove(&name);
                    if let Some(at) = lost {
                        stats.moved.record(at);
                    }
                    changed = true;
                }
                Directive::Restore(r) => {
                    if let Some(m) = s.modules.iter_mut().find(|m| m.entry.module == r.module) {
                        if m.entry.restore_seq != r.seq || m.status != ModuleStatus::Running {
                            m.entry.restore_seq = r.seq;
                            m.status = ModuleStatus::Running;
                            changed = true;
                        }
                        if let Some(at) = m.crashed_at.take() {
                            stats.restores.fetch_add(1, Ordering::Relaxed);
                            stats.crash_to_restore.record(at);
                        }
                    }
                }
                Directive::Stop(stop) => {
                    let before = s.modules.len();
                    s.modules.retain(|m| m.entry.module != stop.module);
                    if s.modules.len() < before {
                        stats.modules.fetch_sub(1, Ordering::Relaxed);
                        changed = true;
                    }
                }
                // No package cache here: nothing to pre-stage.
                Directive::Prefetch(_) => {}
            }
        }
        if changed {
            s.table_version += 1;
            drop(s);
            self.0.changed.notify_one();
        }
    }

    async fn stop_all(&self) {}
}
