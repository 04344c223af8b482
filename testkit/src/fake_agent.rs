//! A simulated node manager for the supervisor's tests: heartbeats every
//! 100 ms with the real protocol and carries out directives at once.
//!
//! [`FakeAgent`] keeps a module table like the real agent (install, restore,
//! stop; directives with an epoch older than the highest seen for their
//! module are refused), sends the table when the leader has not
//! acknowledged its version, and follows `NotLeader` hints across the
//! supervisors it was given. Installs always succeed; a test makes a module
//! fail on this node ([`FakeAgent::set_failing`]), crash, or the whole node
//! fall silent ([`FakeAgent::pause`]). The heartbeat task stops on drop.
//!
//! [`FakeAgent::start_tls`] heartbeats over TLS presenting a given
//! certificate (normally `agent/<node>`; a test of refusal gives another
//! node's), accepting only supervisor certificates of the cluster CA; it
//! counts the heartbeats answered with an HTTP error
//! ([`FakeAgent::http_errors`]) and those accepted
//! ([`FakeAgent::accepted`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::heartbeat::{
    Directive, Heartbeat, HeartbeatReply, ModuleStatus, ModuleTable, PackedStatuses, ReplyOutcome,
    TableEntry,
};

#[derive(Debug, Clone)]
struct Module {
    entry: TableEntry,
    status: ModuleStatus,
}

#[derive(Debug, Default)]
struct AgentState {
    incarnation: u64,
    seq: u64,
    table_version: u64,
    acked: u64,
    modules: Vec<Module>,
    /// Modules that fail whenever they start on this node.
    failing: BTreeSet<String>,
    highest_epoch: BTreeMap<String, u64>,
    current: usize,
    paused: bool,
    /// Stop directives are not executed (a copy that does not die).
    stuck: bool,
    refused: u64,
    /// Heartbeats answered with an HTTP error status (e.g. 403).
    http_errors: u64,
    /// Heartbeats answered `Accepted`.
    accepted: u64,
    /// Modules whose package this node was told to pre-stage, as of the
    /// last reply that carried directives.
    prefetched: BTreeSet<String>,
}

/// A simulated node manager: heartbeats every 100 ms with the real
/// protocol and executes directives at once (installs always succeed).
pub struct FakeAgent {
    pub node: String,
    state: Arc<Mutex<AgentState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    pub fn start(node: &str, supervisors: Vec<String>) -> FakeAgent {
        Self::start_tls(node, supervisors, None)
    }

    /// As [`FakeAgent::start`]; with `tls`, over HTTPS presenting that
    /// certificate.
    pub fn start_tls(
        node: &str,
        supervisors: Vec<String>,
        tls: Option<Arc<tls::Tls>>,
    ) -> FakeAgent {
        let state = Arc::new(Mutex::new(AgentState {
            incarnation: 1,
            table_version: 1,
            ..Default::default()
        }));
        let st = state.clone();
        let name = node.to_string();
        let task = tokio::spawn(async move {
            let scheme = tls::client::scheme(tls.as_ref());
            let http = tls::client::http_builder(tls.as_ref(), &[tls::Role::Supervisor])
                .build()
                .expect("building an HTTP client with static settings");
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (hb, target) = {
                    let mut s = st.lock().expect("lock");
                    if s.paused {
                        continue;
                    }
                    s.seq += 1;
                    let statuses: Vec<_> = s.modules.iter().map(|m| m.status).collect();
                    let hb = Heartbeat {
                        node: name.clone(),
                        incarnation: s.incarnation,
                        seq: s.seq,
                        table_version: s.table_version,
                        table: (s.acked != s.table_version).then(|| ModuleTable {
                            addr: format!("{name}.test:7100"),
                            labels: BTreeMap::new(),
                            modules: s.modules.iter().map(|m| m.entry.clone()).collect(),
                            cluster: 0,
                        }),
                        statuses: PackedStatuses::pack(&statuses),
                        reports: vec![],
                    };
                    (hb, supervisors[s.current % supervisors.len()].clone())
                };
                let body = proto::encode(&hb).expect("encode");
                let resp = http
                    .post(format!("{scheme}://{target}/v1/agent/heartbeat"))
                    .timeout(Duration::from_secs(1))
                    .body(body)
                    .send()
                    .await;
                let mut http_error = false;
                let reply: Option<HeartbeatReply> = match resp {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.ok().and_then(|b| proto::decode(&b).ok())
                    }
                    Ok(_) => {
                        http_error = true;
                        None
                    }
                    Err(_) => None,
                };
                let mut s = st.lock().expect("lock");
                if http_error {
                    s.http_errors += 1;
                }
                let Some(reply) = reply else {
                    s.current += 1;
                    continue;
                };
                match &reply.outcome {
                    ReplyOutcome::NotLeader { leader } => {
                        match leader
                            .as_ref()
                            .and_then(|l| supervisors.iter().position(|x| x == l))
                        {
                            Some(i) => s.current = i,
                            None => s.current += 1,
                        }
                        continue;
                    }
                    ReplyOutcome::Stale => continue,
                    ReplyOutcome::Accepted { table_version, .. } => {
                        s.accepted += 1;
                        s.acked = *table_version;
                        if reply.need_table {
                            s.acked = 0;
                        }
                    }
                }
                for d in reply.directives {
                    s.execute(d);
                }
            }
        });
        FakeAgent {
            node: node.to_string(),
            state,
            task,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }

    /// Make `module` fail on every start here (and fail now if running).
    pub fn set_failing(&self, module: &str, failing: bool) {
        self.with(|s| {
            if failing {
                s.failing.insert(module.to_string());
                for m in &mut s.modules {
                    if m.entry.module == module {
                        m.status = ModuleStatus::Failed;
                    }
                }
            } else {
                s.failing.remove(module);
            }
        })
    }

    /// The module's process dies.
    pub fn crash(&self, module: &str) {
        self.with(|s| {
            for m in &mut s.modules {
                if m.entry.module == module {
                    m.status = ModuleStatus::Failed;
                }
            }
        })
    }

    pub fn is_running(&self, module: &str) -> bool {
        self.with(|s| {
            s.modules
                .iter()
                .any(|m| m.entry.module == module && m.status == ModuleStatus::Running)
        })
    }

    pub fn epoch_of(&self, module: &str) -> Option<u64> {
        self.with(|s| {
            s.modules
                .iter()
                .find(|m| m.entry.module == module)
                .map(|m| m.entry.epoch)
        })
    }

    /// Heartbeats answered with an HTTP error status (403 for a refused
    /// identity).
    pub fn http_errors(&self) -> u64 {
        self.with(|s| s.http_errors)
    }

    /// The modules whose package this node was told to pre-stage (a
    /// `Prefetch` directive in any reply so far).
    pub fn prefetched(&self) -> BTreeSet<String> {
        self.with(|s| s.prefetched.clone())
    }

    /// Heartbeats the leader accepted.
    pub fn accepted(&self) -> u64 {
        self.with(|s| s.accepted)
    }

    /// Stops heartbeating (a partitioned or frozen agent) or resumes.
    pub fn pause(&self, paused: bool) {
        self.with(|s| s.paused = paused)
    }

    /// While `stuck`, stop directives are not executed: the module's copy
    /// keeps running (and heartbeats keep showing it).
    pub fn stuck(&self, stuck: bool) {
        self.with(|s| s.stuck = stuck)
    }
}

impl AgentState {
    fn start_status(&self, module: &str) -> ModuleStatus {
        if self.failing.contains(module) {
            ModuleStatus::Failed
        } else {
            ModuleStatus::Running
        }
    }

    fn execute(&mut self, d: Directive) {
        if let Directive::Prefetch(p) = d {
            // No cache here: nothing to pre-stage (the leader repeats it,
            // harmlessly); it fences nothing either. Kept for the test.
            self.prefetched.insert(p.module);
            return;
        }
        if self.stuck && matches!(d, Directive::Stop(_)) {
            return;
        }
        let module = d.module().to_string();
        if self
            .highest_epoch
            .get(&module)
            .is_some_and(|e| d.epoch() < *e)
        {
            self.refused += 1;
            return;
        }
        self.highest_epoch.insert(module.clone(), d.epoch());
        match d {
            Directive::Install(i) => {
                if self
                    .modules
                    .iter()
                    .any(|m| m.entry.module == i.module && m.entry.epoch == i.epoch)
                {
                    return;
                }
                self.modules.retain(|m| m.entry.module != i.module);
                let status = self.start_status(&i.module);
                self.modules.push(Module {
                    entry: TableEntry {
                        module: i.module,
                        epoch: i.epoch,
                        restore_seq: 0,
                    },
                    status,
                });
            }
            Directive::Restore(r) => {
                let status = self.start_status(&r.module);
                for m in &mut self.modules {
                    if m.entry.module == r.module
                        && m.entry.epoch == r.epoch
                        && m.entry.restore_seq < r.seq
                    {
                        m.entry.restore_seq = r.seq;
                        m.status = status;
                    }
                }
            }
            Directive::Stop(s) => self.modules.retain(|m| m.entry.module != s.module),
            Directive::Prefetch(_) => return,
        }
        self.table_version += 1;
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
