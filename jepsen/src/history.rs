//! What a partition-test run records: client operations, faults, the probe
//! modules' ledger and the observations taken after the final heal. One JSON
//! object per line (`history.jsonl`); every time is `CLOCK_MONOTONIC` in
//! nanoseconds, the one clock the harness, the probes and every network
//! namespace share.

use serde::{Deserialize, Serialize};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub type Nanos = u64;

/// `CLOCK_MONOTONIC` now.
pub fn now_ns() -> Nanos {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Op(Op),
    Fault(Fault),
    Alive(Alive),
    Crash(Crash),
    Observation(Observation),
    /// The moment every fault was healed for good; the quiet period starts.
    Healed {
        at_ns: Nanos,
    },
}

/// How a client operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (2xx; for a read, also a 404 meaning "no such module").
    Ok,
    /// Definitely not applied (a 4xx refusal).
    Fail,
    /// May or may not have been applied (timeout, connection lost, 5xx).
    Unknown,
}

/// Delivery guarantee of a module (as in the module spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fencing {
    AtMostOne,
    AtLeastOne,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /v1/modules`. Each module name is deployed at most once per run.
    Deploy { fencing: Fencing },
    /// `DELETE /v1/modules/{name}`. At most once per name, after its deploy
    /// was invoked.
    Remove,
    /// `GET /v1/modules/{name}` (linearizable).
    Read,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v", rename_all = "snake_case")]
pub enum ReadValue {
    /// 404: the module does not exist (not yet deployed, or removed).
    Absent,
    Present {
        node: Option<String>,
        epoch: Option<u64>,
        state: String,
    },
}

/// One client operation, from invocation to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    pub module: String,
    #[serde(flatten)]
    pub kind: OpKind,
    pub invoke_ns: Nanos,
    /// When the answer (or the timeout) came. For `Unknown` the effect may
    /// still land later: checkers treat its interval as open-ended.
    pub complete_ns: Nanos,
    pub outcome: Outcome,
    /// Reads that completed `Ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadValue>,
    /// Deploys that completed `Ok`: the epoch (log index) the answer named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The nemesis's fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The Raft leader cut from every other host.
    IsolateLeader,
    /// Hosts split into two random halves.
    RandomHalves,
    /// Each supervisor sees only its ring neighbours (every majority is
    /// different); agents follow their supervisor.
    MajoritiesRing,
    /// Only the links between the agents and the leader are cut; Raft links
    /// stay up.
    AgentLeaderCut,
    /// One direction of a link is cut (packets from A to B dropped).
    OneWayCut,
    /// SIGKILL a supervisor, start it again at the end.
    KillSupervisor,
    /// SIGKILL an agent (its modules die with it), start it again at the end.
    KillAgent,
    /// SIGSTOP a supervisor, SIGCONT at the end.
    PauseSupervisor,
    /// SIGSTOP an agent, SIGCONT at the end (its modules keep running).
    PauseAgent,
    /// A module exits at start on one node while the fault lasts.
    CrashLoop,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub id: u32,
    pub kind: FaultKind,
    /// Hosts (`s1`, `a2`, …) or, for `CrashLoop`, `module@node`.
    pub targets: Vec<String>,
    pub start_ns: Nanos,
    pub end_ns: Nanos,
    /// Whether the harness saw the fault take effect (dropped packets
    /// counted by the rules, the process stopped or dead, the module
    /// crashing), with what it saw.
    pub took_effect: bool,
    pub evidence: String,
}

/// A probe module's ledger line: this copy was running at `at_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    pub module: String,
    pub node: String,
    pub epoch: u64,
    pub pid: u32,
    pub at_ns: Nanos,
}

/// A probe module exited at start because a crash-loop fault told it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crash {
    pub module: String,
    pub node: String,
    pub epoch: u64,
    pub at_ns: Nanos,
}

/// One replica's answer during the post-heal observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: u64,
    /// `None` when the replica did not answer.
    pub leader: Option<u64>,
    pub last_applied: u64,
    /// Its local (`?stale=true`) module list, sorted by name.
    pub modules: Vec<ModuleSeen>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleSeen {
    pub name: String,
    pub node: Option<String>,
    pub epoch: Option<u64>,
    pub state: String,
}

/// After the final heal, the harness polls every replica about twice a
/// second until the run ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub at_ns: Nanos,
    pub replicas: Vec<ReplicaView>,
}

/// Parses a history file's lines.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}
