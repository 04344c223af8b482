//! Pure checkers over a recorded history (see `history`).
//!
//! Every checker is a function of the records alone (plus the stated
//! [`Bounds`]): no clock, no I/O. Records may come in any order; everything
//! is sorted or indexed by its own timestamps (`at_ns`, `invoke_ns`, …),
//! never by its position in the file.
//!
//! The checkers, by the name they put in [`Violation::checker`]:
//!
//! - [`LOST_OR_RESURRECTED`] ([`lost_or_resurrected`]): acknowledged deploys
//!   are not lost, acknowledged removes stay removed and their copies stop,
//!   refused deploys never show up anywhere.
//! - [`AT_MOST_ONE`] ([`at_most_one`]): no two copies of an at-most-one
//!   module run at the same time (except for the stated pause bound), and no
//!   copy starts under an epoch older than one already started.
//! - [`CONVERGENCE`] ([`convergence`]): after the final heal, the replicas
//!   agree, and the ledger matches what they say, within the stated bound
//!   and to the end of the run.
//! - [`LINEARIZABLE`] ([`linearizable`]): per module, the admin reads and
//!   writes are linearizable against a register whose version only grows.
//! - [`COVERAGE`] ([`coverage`]): every injected fault took effect.
//!
//! [`check_all`] runs them all over one index of the history and adds the
//! counts of what was checked.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::history::{
    Alive, Crash, Fault, FaultKind, Fencing, Nanos, Observation, Op, OpKind, Outcome, ReadValue,
    Record,
};

/// Name of the lost/resurrected checker in [`Violation::checker`].
pub const LOST_OR_RESURRECTED: &str = "lost_or_resurrected";
/// Name of the at-most-one / stale-epoch checker.
pub const AT_MOST_ONE: &str = "at_most_one";
/// Name of the convergence checker.
pub const CONVERGENCE: &str = "convergence";
/// Name of the linearizability checker.
pub const LINEARIZABLE: &str = "linearizable";
/// Name of the fault coverage checker.
pub const COVERAGE: &str = "coverage";

const SECOND: Nanos = 1_000_000_000;
const MILLI: Nanos = 1_000_000;

/// Slack of the pause excuse in [`at_most_one`]: the paused fault may have
/// ended up to this long before the overlap began, and the overlap may last
/// up to the fault's duration plus this.
pub const PAUSE_SLACK_NS: Nanos = SECOND;

/// At most this many violations of one kind are listed per module; the rest
/// are summed up in one more violation.
const MAX_LISTED: usize = 5;

/// A version no placement reaches: the module is removed.
const REMOVED: u64 = u64::MAX;
/// Completion time of an operation whose outcome is unknown.
const OPEN: Nanos = Nanos::MAX;

/// The stated bounds the checkers hold the cluster to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// After the `Healed` record, the first converged observation must come
    /// within this long (default 30 s).
    pub converge_within_ns: u64,
    /// A copy counts as running at time `t` if it wrote an `Alive` record in
    /// `(t - alive_window_ns, t]` (default 600 ms; probes write one every
    /// 50 ms).
    pub alive_window_ns: u64,
    /// A new copy (a new alive interval) of a removed module must not start
    /// later than the remove's acknowledgement plus this (default 1 s): a
    /// start already ordered when the remove was acknowledged may still
    /// land, a later one is a resurrection.
    pub remove_start_slack_ns: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            converge_within_ns: 30 * SECOND,
            alive_window_ns: 600 * MILLI,
            remove_start_slack_ns: SECOND,
        }
    }
}

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which checker found it (one of the `const`s of this module).
    pub checker: &'static str,
    /// The module concerned, when there is one.
    pub module: Option<String>,
    pub message: String,
}

impl Violation {
    fn new(checker: &'static str, module: Option<&str>, message: String) -> Violation {
        Violation {
            checker,
            module: module.map(str::to_string),
            message,
        }
    }
}

/// Everything [`check_all`] found, with the counts of what it looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Time from `Healed` to the first converged observation.
    pub converge_ns: Option<u64>,
    /// Violations per checker (every checker is listed, zero included).
    pub by_checker: BTreeMap<&'static str, usize>,
    /// Distinct module names in ops, ledger and observations.
    pub modules: usize,
    pub ops: usize,
    pub deploys: usize,
    pub removes: usize,
    pub reads: usize,
    /// Ops whose outcome is `Unknown`.
    pub unknown_ops: usize,
    pub faults: usize,
    pub faults_took_effect: usize,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub alive_records: usize,
    /// Distinct (module, node, epoch, pid).
    pub alive_intervals: usize,
    pub crashes: usize,
    pub observations: usize,
    pub observations_after_heal: usize,
    /// Observations after the first converged one that were not converged
    /// (flapping; only the last one must be converged).
    pub unconverged_after_converged: usize,
    /// Oddities of the history itself (not of the cluster): what a checker
    /// had to skip or assume.
    pub notes: Vec<String>,
}

impl Report {
    /// No violation.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every checker over one index of `records`.
pub fn check_all(records: &[Record], bounds: &Bounds) -> Report {
    let idx = Index::new(records);
    let conv = analyse_convergence(&idx, bounds);
    let mut violations = Vec::new();
    violations.extend(lost_or_resurrected_in(
        &idx,
        bounds,
        conv.first_converged_at,
    ));
    violations.extend(at_most_one_in(&idx));
    violations.extend(conv.violations.iter().cloned());
    violations.extend(linearizable_in(&idx));
    violations.extend(coverage_in(&idx));

    let mut by_checker: BTreeMap<&'static str, usize> = [
        LOST_OR_RESURRECTED,
        AT_MOST_ONE,
        CONVERGENCE,
        LINEARIZABLE,
        COVERAGE,
    ]
    .into_iter()
    .map(|c| (c, 0))
    .collect();
    for v in &violations {
        *by_checker.entry(v.checker).or_default() += 1;
    }
    let mut faults_by_kind = BTreeMap::new();
    for f in &idx.faults {
        *faults_by_kind.entry(format!("{:?}", f.kind)).or_default() += 1;
    }
    let all_ops = idx.modules.values().flat_map(|m| m.all());
    let mut notes = idx.notes.clone();
    notes.extend(conv.notes.iter().cloned());
    Report {
        violations,
        converge_ns: conv.converge_ns,
        by_checker,
        modules: idx.module_names().len(),
        ops: all_ops.clone().count(),
        deploys: idx.modules.values().map(|m| m.deploys.len()).sum(),
        removes: idx.modules.values().map(|m| m.removes.len()).sum(),
        reads: idx.modules.values().map(|m| m.reads.len()).sum(),
        unknown_ops: all_ops.filter(|o| o.outcome == Outcome::Unknown).count(),
        faults: idx.faults.len(),
        faults_took_effect: idx.faults.iter().filter(|f| f.took_effect).count(),
        faults_by_kind,
        alive_records: idx.alive.values().map(Vec::len).sum(),
        alive_intervals: idx.intervals.values().map(Vec::len).sum(),
        crashes: idx.crashes.len(),
        observations: idx.observations.len(),
        observations_after_heal: conv.after_heal,
        unconverged_after_converged: conv.unconverged_after_converged,
        notes,
    }
}

// ---------------------------------------------------------------------------
// Index

/// The client operations on one module, each list sorted by invocation.
#[derive(Default)]
struct ModuleOps<'a> {
    deploys: Vec<&'a Op>,
    removes: Vec<&'a Op>,
    reads: Vec<&'a Op>,
}

impl<'a> ModuleOps<'a> {
    /// The module's deploy (the workload deploys each name at most once).
    fn deploy(&self) -> Option<&'a Op> {
        self.deploys.first().copied()
    }

    /// The module's remove (at most once per name).
    fn remove(&self) -> Option<&'a Op> {
        self.removes.first().copied()
    }

    /// A remove that may have been applied (not refused).
    fn remove_may_apply(&self) -> Option<&'a Op> {
        self.remove().filter(|r| r.outcome != Outcome::Fail)
    }

    /// Deploy acknowledged and no remove that may have been applied: the
    /// module must exist.
    fn must_exist(&self) -> bool {
        self.deploy().is_some_and(|d| d.outcome == Outcome::Ok) && self.remove_may_apply().is_none()
    }

    fn fencing(&self) -> Option<Fencing> {
        match self.deploy()?.kind {
            OpKind::Deploy { fencing } => Some(fencing),
            _ => None,
        }
    }

    fn all(&self) -> impl Iterator<Item = &'a Op> + Clone + '_ {
        self.deploys
            .iter()
            .chain(&self.removes)
            .chain(&self.reads)
            .copied()
    }
}

/// One copy's alive interval: (module, node, epoch, pid) from its first to
/// its last `Alive` record.
#[derive(Debug, Clone)]
struct Interval<'a> {
    node: &'a str,
    epoch: u64,
    pid: u32,
    first: Nanos,
    last: Nanos,
    records: usize,
}

impl Interval<'_> {
    fn describe(&self) -> String {
        format!(
            "pid {} on {} epoch {} alive [{}, {}] ({} records)",
            self.pid,
            self.node,
            self.epoch,
            secs(self.first),
            secs(self.last),
            self.records
        )
    }
}

/// The history, indexed once.
struct Index<'a> {
    modules: BTreeMap<&'a str, ModuleOps<'a>>,
    faults: Vec<&'a Fault>,
    /// Per module, sorted by `at_ns`.
    alive: BTreeMap<&'a str, Vec<&'a Alive>>,
    /// Per module, sorted by (first, node, pid, epoch).
    intervals: BTreeMap<&'a str, Vec<Interval<'a>>>,
    crashes: Vec<&'a Crash>,
    /// Sorted by `at_ns`.
    observations: Vec<&'a Observation>,
    /// Sorted.
    healed: Vec<Nanos>,
    notes: Vec<String>,
}

impl<'a> Index<'a> {
    fn new(records: &'a [Record]) -> Index<'a> {
        let mut modules: BTreeMap<&str, ModuleOps> = BTreeMap::new();
        let mut faults = Vec::new();
        let mut alive: BTreeMap<&str, Vec<&Alive>> = BTreeMap::new();
        let mut crashes = Vec::new();
        let mut observations = Vec::new();
        let mut healed = Vec::new();
        for r in records {
            match r {
                Record::Op(op) => {
                    let m = modules.entry(op.module.as_str()).or_default();
                    match op.kind {
                        OpKind::Deploy { .. } => m.deploys.push(op),
                        OpKind::Remove => m.removes.push(op),
                        OpKind::Read => m.reads.push(op),
                    }
                }
                Record::Fault(f) => faults.push(f),
                Record::Alive(a) => alive.entry(a.module.as_str()).or_default().push(a),
                Record::Crash(c) => crashes.push(c),
                Record::Observation(o) => observations.push(o),
                Record::Healed { at_ns } => healed.push(*at_ns),
            }
        }
        let mut notes = Vec::new();
        for (name, m) in &mut modules {
            for list in [&mut m.deploys, &mut m.removes, &mut m.reads] {
                list.sort_by_key(|o| (o.invoke_ns, o.complete_ns, o.client));
            }
            if m.deploys.len() > 1 {
                notes.push(format!(
                    "module {name}: {} deploys (expected at most one); checking the first",
                    m.deploys.len()
                ));
            }
            if m.removes.len() > 1 {
                notes.push(format!(
                    "module {name}: {} removes (expected at most one); checking the first",
                    m.removes.len()
                ));
            }
            if let (Some(r), d) = (m.remove(), m.deploy())
                && d.is_none_or(|d| r.invoke_ns < d.invoke_ns)
            {
                notes.push(format!(
                    "module {name}: remove invoked at {} before any deploy",
                    secs(r.invoke_ns)
                ));
            }
            if let Some(d) = m.deploy()
                && d.outcome == Outcome::Ok
                && d.epoch.is_none()
            {
                notes.push(format!(
                    "module {name}: deploy acknowledged without an epoch; its version is guessed from the reads"
                ));
            }
            let blank = m
                .reads
                .iter()
                .filter(|r| r.outcome == Outcome::Ok && r.read.is_none())
                .count();
            if blank > 0 {
                notes.push(format!(
                    "module {name}: {blank} reads completed Ok without a value; skipped"
                ));
            }
        }
        faults.sort_by_key(|f| (f.start_ns, f.id));
        let mut intervals: BTreeMap<&str, Vec<Interval>> = BTreeMap::new();
        for (name, list) in &mut alive {
            list.sort_by_key(|a| a.at_ns);
            let mut by_copy: BTreeMap<(&str, u64, u32), Interval> = BTreeMap::new();
            for a in list.iter() {
                by_copy
                    .entry((a.node.as_str(), a.epoch, a.pid))
                    .and_modify(|i| {
                        i.last = a.at_ns;
                        i.records += 1;
                    })
                    .or_insert(Interval {
                        node: a.node.as_str(),
                        epoch: a.epoch,
                        pid: a.pid,
                        first: a.at_ns,
                        last: a.at_ns,
                        records: 1,
                    });
            }
            let mut ivs: Vec<Interval> = by_copy.into_values().collect();
            ivs.sort_by(|a, b| {
                (a.first, a.node, a.pid, a.epoch).cmp(&(b.first, b.node, b.pid, b.epoch))
            });
            intervals.insert(name, ivs);
        }
        crashes.sort_by_key(|c| c.at_ns);
        observations.sort_by_key(|o| o.at_ns);
        healed.sort_unstable();
        Index {
            modules,
            faults,
            alive,
            intervals,
            crashes,
            observations,
            healed,
            notes,
        }
    }

    fn module_names(&self) -> BTreeSet<&'a str> {
        let mut names: BTreeSet<&str> = self.modules.keys().copied().collect();
        names.extend(self.alive.keys().copied());
        names.extend(self.crashes.iter().map(|c| c.module.as_str()));
        for o in &self.observations {
            for r in &o.replicas {
                names.extend(r.modules.iter().map(|m| m.name.as_str()));
            }
        }
        names
    }

    /// `Alive` records of `module` in `(at - window, at]`.
    fn alive_in(&self, module: &str, at: Nanos, window: Nanos) -> &[&'a Alive] {
        let Some(list) = self.alive.get(module) else {
            return &[];
        };
        let lo = at.saturating_sub(window);
        let start = list.partition_point(|a| a.at_ns <= lo);
        let end = list.partition_point(|a| a.at_ns <= at);
        &list[start..end.max(start)]
    }

    /// Modules some `CrashLoop` fault targeted (`module@node`).
    fn crash_looped(&self) -> BTreeSet<&'a str> {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::CrashLoop)
            .flat_map(|f| f.targets.iter())
            .map(|t| t.split_once('@').map_or(t.as_str(), |(m, _)| m))
            .collect()
    }
}

/// `CLOCK_MONOTONIC` nanoseconds as seconds with milliseconds.
fn secs(ns: Nanos) -> String {
    if ns == OPEN {
        return "∞".to_string();
    }
    format!("{}.{:03}s", ns / SECOND, (ns % SECOND) / MILLI)
}

fn describe_op(op: &Op) -> String {
    let what = match (&op.kind, &op.read) {
        (OpKind::Deploy { .. }, _) => match op.epoch {
            Some(e) => format!("deploy {:?} epoch {e}", op.outcome),
            None => format!("deploy {:?}", op.outcome),
        },
        (OpKind::Remove, _) => format!("remove {:?}", op.outcome),
        (OpKind::Read, Some(v)) => format!("read {}", describe_value(v)),
        (OpKind::Read, None) => format!("read {:?}", op.outcome),
    };
    let complete = if op.outcome == Outcome::Unknown {
        format!("{} (unknown)", secs(op.complete_ns))
    } else {
        secs(op.complete_ns)
    };
    format!(
        "{what} by client {} [{}, {complete}]",
        op.client,
        secs(op.invoke_ns)
    )
}

fn describe_value(v: &ReadValue) -> String {
    match v {
        ReadValue::Absent => "Absent".to_string(),
        ReadValue::Present { node, epoch, state } => format!(
            "Present(node {}, epoch {}, {state})",
            node.as_deref().unwrap_or("-"),
            epoch.map_or("-".to_string(), |e| e.to_string())
        ),
    }
}

/// Appends `found` to `out`, at most [`MAX_LISTED`] of them, and a summary
/// of the rest.
fn push_capped(
    out: &mut Vec<Violation>,
    checker: &'static str,
    module: Option<&str>,
    what: &str,
    found: Vec<String>,
) {
    let n = found.len();
    for m in found.into_iter().take(MAX_LISTED) {
        out.push(Violation::new(checker, module, m));
    }
    if n > MAX_LISTED {
        out.push(Violation::new(
            checker,
            module,
            format!("… and {} more {what} (of {n})", n - MAX_LISTED),
        ));
    }
}

// ---------------------------------------------------------------------------
// 1. lost_or_resurrected

/// Acknowledged writes are durable and removes are final.
///
/// - (a) a module whose deploy was acknowledged, with no remove that may
///   have applied (a refused remove does not count), is in the module list
///   of every replica that answered the last observation (any state);
/// - (b) a module whose remove was acknowledged is in none of them;
/// - (c) a removed module (remove acknowledged at `r`) has no alive interval
///   starting after `r + remove_start_slack_ns`;
/// - (d) a removed module has no `Alive` record after the first converged
///   observation (see [`convergence`]): its copies were actually stopped;
/// - (e) a module whose deploy was refused never appears in a read, an
///   observation, or the ledger (`Alive` or `Crash`).
///
/// Without observations (a) and (b) are skipped; without a converged
/// observation (d) is ([`convergence`] reports both).
pub fn lost_or_resurrected(records: &[Record], bounds: &Bounds) -> Vec<Violation> {
    let idx = Index::new(records);
    let conv = analyse_convergence(&idx, bounds);
    lost_or_resurrected_in(&idx, bounds, conv.first_converged_at)
}

fn lost_or_resurrected_in(
    idx: &Index,
    bounds: &Bounds,
    first_converged_at: Option<Nanos>,
) -> Vec<Violation> {
    const C: &str = LOST_OR_RESURRECTED;
    let mut out = Vec::new();
    let last = idx.observations.last();
    for (&name, m) in &idx.modules {
        let Some(deploy) = m.deploy() else { continue };
        // (a)
        if m.must_exist()
            && let Some(o) = last
        {
            let missing: Vec<u64> = o
                .replicas
                .iter()
                .filter(|r| r.leader.is_some() && !r.modules.iter().any(|s| s.name == name))
                .map(|r| r.id)
                .collect();
            if !missing.is_empty() {
                out.push(Violation::new(
                    C,
                    Some(name),
                    format!(
                        "lost: {} and never removed, but missing from the last observation (at {}) on replicas {missing:?}",
                        describe_op(deploy),
                        secs(o.at_ns)
                    ),
                ));
            }
        }
        if let Some(remove) = m.remove().filter(|r| r.outcome == Outcome::Ok) {
            let r = remove.complete_ns;
            // (b)
            if let Some(o) = last {
                let holding: Vec<String> = o
                    .replicas
                    .iter()
                    .filter_map(|rep| {
                        rep.modules
                            .iter()
                            .find(|s| s.name == name)
                            .map(|s| format!("replica {} ({})", rep.id, s.state))
                    })
                    .collect();
                if !holding.is_empty() {
                    out.push(Violation::new(
                        C,
                        Some(name),
                        format!(
                            "resurrected: {} but the last observation (at {}) lists it on {}",
                            describe_op(remove),
                            secs(o.at_ns),
                            holding.join(", ")
                        ),
                    ));
                }
            }
            // (c)
            let late: Vec<String> = idx
                .intervals
                .get(name)
                .into_iter()
                .flatten()
                .filter(|iv| iv.first > r.saturating_add(bounds.remove_start_slack_ns))
                .map(|iv| {
                    format!(
                        "resurrected: a copy started after {} (slack {}): {}",
                        describe_op(remove),
                        secs(bounds.remove_start_slack_ns),
                        iv.describe()
                    )
                })
                .collect();
            push_capped(&mut out, C, Some(name), "late starts", late);
            // (d)
            if let Some(t) = first_converged_at {
                let after: Vec<&&Alive> = idx
                    .alive
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|a| a.at_ns > t)
                    .collect();
                if let (Some(first), Some(lst)) = (after.first(), after.last()) {
                    out.push(Violation::new(
                        C,
                        Some(name),
                        format!(
                            "not stopped: {} yet {} alive records after the first converged observation (at {}), from {} (pid {} on {} epoch {}) to {}",
                            describe_op(remove),
                            after.len(),
                            secs(t),
                            secs(first.at_ns),
                            first.pid,
                            first.node,
                            first.epoch,
                            secs(lst.at_ns)
                        ),
                    ));
                }
            }
        }
        // (e)
        if deploy.outcome == Outcome::Fail {
            let mut seen = Vec::new();
            if let Some(r) = m.reads.iter().find(|r| {
                r.outcome == Outcome::Ok && matches!(r.read, Some(ReadValue::Present { .. }))
            }) {
                seen.push(format!("in a read: {}", describe_op(r)));
            }
            if let Some(o) = idx.observations.iter().find(|o| {
                o.replicas
                    .iter()
                    .any(|rep| rep.modules.iter().any(|s| s.name == name))
            }) {
                seen.push(format!("in the observation at {}", secs(o.at_ns)));
            }
            if let Some(a) = idx.alive.get(name).and_then(|l| l.first()) {
                seen.push(format!(
                    "alive: pid {} on {} epoch {} at {}",
                    a.pid,
                    a.node,
                    a.epoch,
                    secs(a.at_ns)
                ));
            }
            if let Some(c) = idx.crashes.iter().find(|c| c.module == name) {
                seen.push(format!(
                    "crashed on {} epoch {} at {}",
                    c.node,
                    c.epoch,
                    secs(c.at_ns)
                ));
            }
            for s in seen {
                out.push(Violation::new(
                    C,
                    Some(name),
                    format!("refused deploy applied ({}): {s}", describe_op(deploy)),
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 2. at_most_one

/// At most one copy, and no stale epoch.
///
/// - For modules deployed with [`Fencing::AtMostOne`]: no two alive
///   intervals of different copies (node, pid) overlap. The overlap is
///   `[later first, earlier last]`. It is excused — the stated bound of a
///   paused agent, whose modules keep running while it cannot be told to
///   stop them — when the interval that started earlier ran on a node
///   (node name = host name) targeted by a `PauseAgent` fault whose
///   `[start, end]` intersects the overlap or ended at most
///   [`PAUSE_SLACK_NS`] before it began, and the overlap lasts at most that
///   fault's duration plus [`PAUSE_SLACK_NS`].
/// - For every module (both fencings): in the order of their first record,
///   no interval has an epoch lower than an interval that started strictly
///   earlier (an action under a stale epoch was accepted). The same epoch is
///   fine: a restore in place keeps it.
pub fn at_most_one(records: &[Record], _bounds: &Bounds) -> Vec<Violation> {
    at_most_one_in(&Index::new(records))
}

/// The `PauseAgent` fault that excuses an overlap `[os, oe]` of a copy on
/// `node`, if any.
fn pause_excuse<'a>(idx: &Index<'a>, node: &str, os: Nanos, oe: Nanos) -> Option<&'a Fault> {
    idx.faults.iter().copied().find(|f| {
        f.kind == FaultKind::PauseAgent
            && f.targets.iter().any(|t| t == node)
            && f.start_ns <= oe
            && f.end_ns.saturating_add(PAUSE_SLACK_NS) >= os
            && oe - os <= f.end_ns.saturating_sub(f.start_ns) + PAUSE_SLACK_NS
    })
}

fn at_most_one_in(idx: &Index) -> Vec<Violation> {
    const C: &str = AT_MOST_ONE;
    let mut out = Vec::new();
    for (&name, ivs) in &idx.intervals {
        let fencing = idx.modules.get(name).and_then(ModuleOps::fencing);
        if fencing == Some(Fencing::AtMostOne) {
            let mut overlaps = Vec::new();
            for (i, a) in ivs.iter().enumerate() {
                for b in &ivs[i + 1..] {
                    // `ivs` is sorted by first: `a` started no later than `b`.
                    if b.first > a.last {
                        // Sorted by first: no later one overlaps `a` either.
                        break;
                    }
                    if (a.node, a.pid) == (b.node, b.pid) {
                        continue;
                    }
                    let (os, oe) = (b.first, a.last.min(b.last));
                    let mut earlier = vec![a];
                    if a.first == b.first {
                        earlier.push(b);
                    }
                    if earlier
                        .iter()
                        .any(|e| pause_excuse(idx, e.node, os, oe).is_some())
                    {
                        continue;
                    }
                    let pause = idx
                        .faults
                        .iter()
                        .filter(|f| {
                            f.kind == FaultKind::PauseAgent
                                && f.targets.iter().any(|t| t == a.node)
                                && f.start_ns <= oe
                                && f.end_ns.saturating_add(PAUSE_SLACK_NS) >= os
                        })
                        .map(|f| {
                            format!(
                                "; pause fault #{} on {} lasted {}, too short to excuse it",
                                f.id,
                                a.node,
                                secs(f.end_ns.saturating_sub(f.start_ns))
                            )
                        })
                        .next()
                        .unwrap_or_default();
                    overlaps.push(format!(
                        "two copies for {} from {}: {} and {}{pause}",
                        secs(oe - os),
                        secs(os),
                        a.describe(),
                        b.describe()
                    ));
                }
            }
            push_capped(&mut out, C, Some(name), "overlaps", overlaps);
        }

        // Stale epochs: sweep groups of equal first record.
        let mut stale = Vec::new();
        let mut newest_before: Option<&Interval> = None;
        let mut i = 0;
        while i < ivs.len() {
            let j = i + ivs[i..].partition_point(|x| x.first == ivs[i].first);
            for iv in &ivs[i..j] {
                if let Some(n) = newest_before
                    && iv.epoch < n.epoch
                {
                    stale.push(format!(
                        "stale epoch accepted: {} started after {}",
                        iv.describe(),
                        n.describe()
                    ));
                }
            }
            for iv in &ivs[i..j] {
                if newest_before.is_none_or(|n| iv.epoch > n.epoch) {
                    newest_before = Some(iv);
                }
            }
            i = j;
        }
        push_capped(&mut out, C, Some(name), "stale epochs", stale);
    }
    out
}

// ---------------------------------------------------------------------------
// 3. convergence

/// After the final heal, the cluster converges within the bound and stays
/// converged.
///
/// Exactly one `Healed` record is expected (none or several is a violation;
/// with several the last counts). Among the observations at or after it,
/// in time order, one is *converged* when:
///
/// - every replica answered (`leader` is `Some`) and all name the same
///   leader;
/// - all replicas' module lists are equal;
/// - every listed module not in state `failed` is `running`, and the ledger
///   shows exactly one (node, epoch) with `Alive` records in
///   `(at - alive_window, at]`, the listed node and epoch;
/// - every listed `failed` module has no `Alive` record in that window, and
///   a `CrashLoop` fault targeted it (`module@node`);
/// - no module missing from the list has an `Alive` record in the window;
/// - every module whose deploy was acknowledged, with no remove that may
///   have applied, is listed.
///
/// Violations: no converged observation within `converge_within_ns` of the
/// heal; the last observation not converged (one violation per reason).
/// The time to the first converged observation goes in
/// [`Report::converge_ns`].
pub fn convergence(records: &[Record], bounds: &Bounds) -> Vec<Violation> {
    analyse_convergence(&Index::new(records), bounds).violations
}

struct ConvergenceAnalysis {
    violations: Vec<Violation>,
    first_converged_at: Option<Nanos>,
    converge_ns: Option<Nanos>,
    after_heal: usize,
    unconverged_after_converged: usize,
    notes: Vec<String>,
}

/// Why an observation is not converged.
struct Reason {
    module: Option<String>,
    text: String,
}

fn reason(module: Option<&str>, text: String) -> Reason {
    Reason {
        module: module.map(str::to_string),
        text,
    }
}

fn describe_copies(alive: &[&Alive]) -> String {
    let copies: BTreeSet<(&str, u64, u32)> = alive
        .iter()
        .map(|a| (a.node.as_str(), a.epoch, a.pid))
        .collect();
    copies
        .iter()
        .map(|(n, e, p)| format!("{n}/epoch {e}/pid {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Empty when `o` is converged.
fn unconverged_reasons(
    idx: &Index,
    o: &Observation,
    bounds: &Bounds,
    crash_looped: &BTreeSet<&str>,
) -> Vec<Reason> {
    let mut why = Vec::new();
    let Some(first) = o.replicas.first() else {
        why.push(reason(None, "no replica in the observation".to_string()));
        return why;
    };
    let silent: Vec<u64> = o
        .replicas
        .iter()
        .filter(|r| r.leader.is_none())
        .map(|r| r.id)
        .collect();
    if !silent.is_empty() {
        why.push(reason(None, format!("replicas {silent:?} did not answer")));
    }
    let leaders: BTreeSet<u64> = o.replicas.iter().filter_map(|r| r.leader).collect();
    if leaders.len() > 1 {
        why.push(reason(
            None,
            format!("replicas name different leaders {leaders:?}"),
        ));
    }
    let mut list = first.modules.clone();
    list.sort();
    for r in &o.replicas[1..] {
        let mut other = r.modules.clone();
        other.sort();
        if other != list {
            let a: BTreeSet<_> = list.iter().collect();
            let b: BTreeSet<_> = other.iter().collect();
            let diff: Vec<String> = a
                .symmetric_difference(&b)
                .map(|s| s.name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            why.push(reason(
                None,
                format!(
                    "replicas {} and {} list different modules (differing: {})",
                    first.id,
                    r.id,
                    diff.join(", ")
                ),
            ));
        }
    }
    // The rest is judged on the first replica's list.
    let listed: BTreeSet<&str> = list.iter().map(|s| s.name.as_str()).collect();
    for s in &list {
        let name = s.name.as_str();
        let alive = idx.alive_in(name, o.at_ns, bounds.alive_window_ns);
        if s.state == "failed" {
            if !alive.is_empty() {
                why.push(reason(
                    Some(name),
                    format!("listed failed but alive: {}", describe_copies(alive)),
                ));
            }
            if !crash_looped.contains(name) {
                why.push(reason(
                    Some(name),
                    "failed, and no crash-loop fault targeted it".to_string(),
                ));
            }
            continue;
        }
        if s.state != "running" {
            why.push(reason(
                Some(name),
                format!("in state {} (not running)", s.state),
            ));
        }
        let running: BTreeSet<(&str, u64)> =
            alive.iter().map(|a| (a.node.as_str(), a.epoch)).collect();
        let expected = s.node.as_deref().zip(s.epoch);
        if running.len() != 1 || running.first().copied() != expected {
            why.push(reason(
                Some(name),
                format!(
                    "listed on {} epoch {} but alive copies in the window: [{}]",
                    s.node.as_deref().unwrap_or("-"),
                    s.epoch.map_or("-".to_string(), |e| e.to_string()),
                    describe_copies(alive)
                ),
            ));
        }
    }
    for &name in idx.alive.keys() {
        if listed.contains(name) {
            continue;
        }
        let alive = idx.alive_in(name, o.at_ns, bounds.alive_window_ns);
        if !alive.is_empty() {
            why.push(reason(
                Some(name),
                format!("not listed but alive: {}", describe_copies(alive)),
            ));
        }
    }
    for (&name, m) in &idx.modules {
        if m.must_exist() && !listed.contains(name) {
            why.push(reason(
                Some(name),
                "deploy acknowledged and never removed, but not listed".to_string(),
            ));
        }
    }
    why
}

fn analyse_convergence(idx: &Index, bounds: &Bounds) -> ConvergenceAnalysis {
    const C: &str = CONVERGENCE;
    let mut a = ConvergenceAnalysis {
        violations: Vec::new(),
        first_converged_at: None,
        converge_ns: None,
        after_heal: 0,
        unconverged_after_converged: 0,
        notes: Vec::new(),
    };
    let healed = match idx.healed.as_slice() {
        [] => {
            a.violations.push(Violation::new(
                C,
                None,
                "no Healed record: the run never healed for good".to_string(),
            ));
            return a;
        }
        [h] => *h,
        many => {
            let h = many[many.len() - 1];
            a.violations.push(Violation::new(
                C,
                None,
                format!(
                    "{} Healed records (expected exactly one); using the last, at {}",
                    many.len(),
                    secs(h)
                ),
            ));
            h
        }
    };
    let crash_looped = idx.crash_looped();
    let after: Vec<&Observation> = idx
        .observations
        .iter()
        .copied()
        .filter(|o| o.at_ns >= healed)
        .collect();
    a.after_heal = after.len();
    let Some(&last) = after.last() else {
        a.violations.push(Violation::new(
            C,
            None,
            format!("no observation after the heal at {}", secs(healed)),
        ));
        return a;
    };
    let judged: Vec<(&Observation, Vec<Reason>)> = after
        .iter()
        .map(|&o| (o, unconverged_reasons(idx, o, bounds, &crash_looped)))
        .collect();
    if let Some(i) = judged.iter().position(|(_, why)| why.is_empty()) {
        let at = judged[i].0.at_ns;
        a.first_converged_at = Some(at);
        a.converge_ns = Some(at - healed);
        a.unconverged_after_converged = judged[i..]
            .iter()
            .filter(|(_, why)| !why.is_empty())
            .count();
    }
    let summary = |o: &Observation, why: &[Reason]| -> String {
        let mut s: Vec<String> = why
            .iter()
            .take(3)
            .map(|r| match &r.module {
                Some(m) => format!("{m}: {}", r.text),
                None => r.text.clone(),
            })
            .collect();
        if why.len() > 3 {
            s.push(format!("… {} more", why.len() - 3));
        }
        format!("at {}: {}", secs(o.at_ns), s.join("; "))
    };
    match a.converge_ns {
        Some(t) if t <= bounds.converge_within_ns => {}
        Some(t) => a.violations.push(Violation::new(
            C,
            None,
            format!(
                "converged only {} after the heal (bound {})",
                secs(t),
                secs(bounds.converge_within_ns)
            ),
        )),
        None => {
            // The latest observation within the bound says why.
            let detail = judged
                .iter()
                .rev()
                .find(|(o, _)| o.at_ns - healed <= bounds.converge_within_ns)
                .map(|(o, why)| format!("; last within the bound {}", summary(o, why)))
                .unwrap_or_default();
            a.violations.push(Violation::new(
                C,
                None,
                format!(
                    "never converged: {} observations from {} to {} after the heal at {}{detail}",
                    after.len(),
                    secs(after[0].at_ns - healed),
                    secs(last.at_ns - healed),
                    secs(healed)
                ),
            ))
        }
    }
    if last.at_ns - healed < bounds.converge_within_ns && a.converge_ns.is_none() {
        a.notes.push(format!(
            "observations stop {} after the heal, before the convergence bound {}",
            secs(last.at_ns - healed),
            secs(bounds.converge_within_ns)
        ));
    }
    let last_reasons = &judged[judged.len() - 1].1;
    let found: Vec<(Option<&str>, String)> = last_reasons
        .iter()
        .map(|r| {
            (
                r.module.as_deref(),
                format!(
                    "last observation (at {}) not converged: {}",
                    secs(last.at_ns),
                    r.text
                ),
            )
        })
        .collect();
    let n = found.len();
    for (m, text) in found.into_iter().take(4 * MAX_LISTED) {
        a.violations.push(Violation::new(C, m, text));
    }
    if n > 4 * MAX_LISTED {
        a.violations.push(Violation::new(
            C,
            None,
            format!(
                "… and {} more reasons the last observation is not converged",
                n - 4 * MAX_LISTED
            ),
        ));
    }
    a
}

// ---------------------------------------------------------------------------
// 4. linearizable

/// A position in the module's life: versions only grow, and at one version
/// the write that establishes it comes before the reads that see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// 0 = not yet deployed, then the deploy's epoch, then placement epochs
    /// (Raft log indexes, all greater than the deploy's), then
    /// [`REMOVED`].
    version: u64,
    /// Writes (`false`) order before reads (`true`) of the same version.
    read: bool,
}

#[derive(Debug, Clone, Copy)]
struct LinOp<'a> {
    op: &'a Op,
    invoke: Nanos,
    /// [`OPEN`] for `Unknown` writes.
    complete: Nanos,
    key: Key,
}

/// Finds every op `B` with some `A` such that `A.complete < B.invoke` and
/// `A.key > B.key`, in `O(n log n)`: ops sorted by completion are swept
/// into a running maximum as the ops sorted by invocation pass them. Returns
/// how many such `B` there are and the first few `(A, B)` pairs (by `B`'s
/// invocation; `A` the greatest key completed before `B`).
fn sweep(ops: &[LinOp]) -> (usize, Vec<(usize, usize)>) {
    let mut by_complete: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].complete != OPEN)
        .collect();
    by_complete.sort_by_key(|&i| (ops[i].complete, i));
    let mut by_invoke: Vec<usize> = (0..ops.len()).collect();
    by_invoke.sort_by_key(|&i| (ops[i].invoke, i));
    let mut next = 0;
    let mut max: Option<usize> = None;
    let mut count = 0;
    let mut pairs = Vec::new();
    for &b in &by_invoke {
        while let Some(&a) = by_complete.get(next) {
            if ops[a].complete >= ops[b].invoke {
                break;
            }
            if max.is_none_or(|m| ops[a].key > ops[m].key) {
                max = Some(a);
            }
            next += 1;
        }
        if let Some(a) = max
            && ops[a].key > ops[b].key
        {
            count += 1;
            if pairs.len() < MAX_LISTED {
                pairs.push((a, b));
            }
        }
    }
    (count, pairs)
}

fn describe_version(v: u64) -> String {
    match v {
        0 => "0 (not deployed)".to_string(),
        REMOVED => "∞ (removed)".to_string(),
        v => v.to_string(),
    }
}

/// Per module, the admin reads and writes are linearizable.
///
/// The model is a register whose version only grows: 0 = not yet deployed,
/// then the deploy's epoch `d`, then placements with increasing epochs (Raft
/// log indexes, all `> d`, written by the cluster itself, so they need no
/// client op), then ∞ = removed. Each op gets a version:
///
/// - deploy `Ok` with epoch `d` writes `d`; a deploy `Unknown` (or `Ok`
///   without an epoch) writes a guessed `d` = (smallest epoch any read saw)
///   − 1, or 1 — any value below every placement orders the same; a refused
///   deploy is no write, and its module is skipped (a read seeing it is
///   reported by [`lost_or_resurrected`]);
/// - remove `Ok` or `Unknown` writes ∞, a refused one is no write;
/// - read `Present{epoch: Some(e)}` reads `e`, `Present{epoch: None}`
///   (pending, not yet placed) reads `d`;
/// - read `Absent` reads 0 if it may come before the deploy (invoked before
///   the deploy's acknowledgement, or the deploy never acknowledged), ∞ if a
///   remove that may apply was invoked before the read completed, and is a
///   lost deploy otherwise. When both are possible it reads ∞ if an op of
///   version > 0 completed before it was invoked (0 would then certainly be
///   a violation), else 0 (which then cannot be one); this choice is
///   monotone in time, so it never creates a violation another choice
///   would avoid.
///
/// `Unknown` writes never complete (their effect may land any time after
/// invocation). Order ops by key = (version, writes before reads). Then the
/// history is linearizable iff there are no `A`, `B` with
/// `A.complete < B.invoke` and `key(A) > key(B)`. Necessity: real time puts
/// `A` before `B` in any linearization, and keys never go down along one.
/// Sufficiency: give each op the point
/// `p(X) = max(X.invoke, max{Y.invoke : key(Y) < key(X)})`. Then
/// `p(X) >= X.invoke`, and `p(X) <= X.complete` because no `Y` of smaller
/// key is invoked after `X` completed; and `key(X) < key(Y)` implies
/// `p(X) <= p(Y)`. Ordering by (point, key) is thus a sequential order
/// within every op's interval, respecting real time, along which versions
/// never go down and every read follows the write of its version: each read
/// sees the register's current version (placements slotting in between as
/// needed). The check is an `O(n log n)` sweep (see `sweep`).
///
/// Also: two reads naming the same epoch name the same node.
pub fn linearizable(records: &[Record], _bounds: &Bounds) -> Vec<Violation> {
    linearizable_in(&Index::new(records))
}

fn linearizable_in<'a>(idx: &Index<'a>) -> Vec<Violation> {
    const C: &str = LINEARIZABLE;
    let mut out = Vec::new();
    for (&name, m) in &idx.modules {
        let Some(deploy) = m.deploy() else { continue };
        if deploy.outcome == Outcome::Fail {
            continue;
        }
        let reads: Vec<&Op> = m
            .reads
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Ok && r.read.is_some())
            .collect();

        // Same epoch, same node.
        let mut node_of: BTreeMap<u64, &Op> = BTreeMap::new();
        let mut split = Vec::new();
        for &r in &reads {
            if let Some(ReadValue::Present {
                node,
                epoch: Some(e),
                ..
            }) = &r.read
            {
                match node_of.get(e) {
                    None => {
                        node_of.insert(*e, r);
                    }
                    Some(first) => {
                        if let Some(ReadValue::Present { node: n0, .. }) = &first.read
                            && n0 != node
                        {
                            split.push(format!(
                                "epoch {e} on two nodes: {} and {}",
                                describe_op(first),
                                describe_op(r)
                            ));
                        }
                    }
                }
            }
        }
        push_capped(&mut out, C, Some(name), "epochs on two nodes", split);

        let deploy_version = match (deploy.outcome, deploy.epoch) {
            (Outcome::Ok, Some(d)) => d,
            _ => node_of
                .keys()
                .next()
                .map_or(1, |e| e.saturating_sub(1).max(1)),
        };
        let deploy_complete = match deploy.outcome {
            Outcome::Ok => deploy.complete_ns,
            _ => OPEN,
        };
        let remove = m.remove_may_apply();

        let mut ops: Vec<LinOp> = Vec::new();
        let write = |o: &'a Op, version: u64| -> LinOp<'a> {
            LinOp {
                op: o,
                invoke: o.invoke_ns,
                complete: if o.outcome == Outcome::Unknown {
                    OPEN
                } else {
                    o.complete_ns
                },
                key: Key {
                    version,
                    read: false,
                },
            }
        };
        ops.push(write(deploy, deploy_version));
        if let Some(r) = remove {
            ops.push(write(r, REMOVED));
        }
        let mut ambiguous = Vec::new();
        let mut lost = Vec::new();
        for &r in &reads {
            let version = match &r.read {
                Some(ReadValue::Present { epoch, .. }) => epoch.unwrap_or(deploy_version),
                _ => {
                    let before_deploy = r.invoke_ns < deploy_complete;
                    let after_remove = remove.is_some_and(|w| w.invoke_ns < r.complete_ns);
                    match (before_deploy, after_remove) {
                        (true, true) => {
                            ambiguous.push(r);
                            continue;
                        }
                        (true, false) => 0,
                        (false, true) => REMOVED,
                        (false, false) => {
                            lost.push(format!(
                                "lost deploy: {} after {}, and no remove invoked before it completed",
                                describe_op(r),
                                describe_op(deploy)
                            ));
                            continue;
                        }
                    }
                }
            };
            ops.push(LinOp {
                op: r,
                invoke: r.invoke_ns,
                complete: r.complete_ns,
                key: Key {
                    version,
                    read: true,
                },
            });
        }
        push_capped(&mut out, C, Some(name), "lost-deploy reads", lost);
        // Absent reads that may be 0 or ∞: ∞ iff something of version > 0
        // completed before them.
        let first_positive = ops
            .iter()
            .filter(|o| o.key.version > 0)
            .map(|o| o.complete)
            .min()
            .unwrap_or(OPEN);
        for r in ambiguous {
            let version = if first_positive < r.invoke_ns {
                REMOVED
            } else {
                0
            };
            ops.push(LinOp {
                op: r,
                invoke: r.invoke_ns,
                complete: r.complete_ns,
                key: Key {
                    version,
                    read: true,
                },
            });
        }

        let (count, pairs) = sweep(&ops);
        for (a, b) in pairs {
            let (a, b) = (&ops[a], &ops[b]);
            out.push(Violation::new(
                C,
                Some(name),
                format!(
                    "{} (version {}) completed before {} (version {}) was invoked",
                    describe_op(a.op),
                    describe_version(a.key.version),
                    describe_op(b.op),
                    describe_version(b.key.version),
                ),
            ));
        }
        if count > MAX_LISTED {
            out.push(Violation::new(
                C,
                Some(name),
                format!(
                    "… and {} more ops invoked after an op of a newer version completed (of {count})",
                    count - MAX_LISTED
                ),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 5. coverage

/// Every injected fault took effect (`took_effect`); one violation per
/// fault that did not, naming its id, kind, targets and evidence.
pub fn coverage(records: &[Record], _bounds: &Bounds) -> Vec<Violation> {
    coverage_in(&Index::new(records))
}

fn coverage_in(idx: &Index) -> Vec<Violation> {
    idx.faults
        .iter()
        .filter(|f| !f.took_effect)
        .map(|f| {
            Violation::new(
                COVERAGE,
                None,
                format!(
                    "fault #{} {:?} on [{}] during [{}, {}] did not take effect: {}",
                    f.id,
                    f.kind,
                    f.targets.join(", "),
                    secs(f.start_ns),
                    secs(f.end_ns),
                    f.evidence
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::jepsen::history::{ModuleSeen, ReplicaView};

    /// A plausible monotonic origin, so no time is near zero.
    const T0: Nanos = 1_000 * SECOND;

    fn ms(x: u64) -> Nanos {
        T0 + x * MILLI
    }

    fn bounds() -> Bounds {
        Bounds::default()
    }

    fn op(module: &str, kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client: 1,
            module: module.to_string(),
            kind,
            invoke_ns: ms(invoke),
            complete_ns: ms(complete),
            outcome,
            read: None,
            epoch: None,
            error: None,
        }
    }

    fn deploy(
        module: &str,
        fencing: Fencing,
        invoke: u64,
        complete: u64,
        outcome: Outcome,
        epoch: Option<u64>,
    ) -> Record {
        Record::Op(Op {
            epoch,
            ..op(
                module,
                OpKind::Deploy { fencing },
                invoke,
                complete,
                outcome,
            )
        })
    }

    fn remove(module: &str, invoke: u64, complete: u64, outcome: Outcome) -> Record {
        Record::Op(op(module, OpKind::Remove, invoke, complete, outcome))
    }

    fn read(module: &str, invoke: u64, complete: u64, v: ReadValue) -> Record {
        Record::Op(Op {
            read: Some(v),
            ..op(module, OpKind::Read, invoke, complete, Outcome::Ok)
        })
    }

    fn present(node: &str, epoch: u64) -> ReadValue {
        ReadValue::Present {
            node: Some(node.to_string()),
            epoch: Some(epoch),
            state: "running".to_string(),
        }
    }

    fn pending() -> ReadValue {
        ReadValue::Present {
            node: None,
            epoch: None,
            state: "pending".to_string(),
        }
    }

    /// A copy's ledger: one `Alive` every 50 ms over `[from, to]` (ms).
    fn alive(module: &str, node: &str, epoch: u64, pid: u32, from: u64, to: u64) -> Vec<Record> {
        (from..=to)
            .step_by(50)
            .map(|t| {
                Record::Alive(Alive {
                    module: module.to_string(),
                    node: node.to_string(),
                    epoch,
                    pid,
                    at_ns: ms(t),
                })
            })
            .collect()
    }

    fn seen(name: &str, node: &str, epoch: u64, state: &str) -> ModuleSeen {
        ModuleSeen {
            name: name.to_string(),
            node: Some(node.to_string()),
            epoch: Some(epoch),
            state: state.to_string(),
        }
    }

    /// Three replicas agreeing on leader 1 and on `modules`.
    fn obs(at: u64, modules: &[ModuleSeen]) -> Record {
        Record::Observation(Observation {
            at_ns: ms(at),
            replicas: (1..=3)
                .map(|id| ReplicaView {
                    id,
                    leader: Some(1),
                    last_applied: 100,
                    modules: modules.to_vec(),
                })
                .collect(),
        })
    }

    fn fault(id: u32, kind: FaultKind, targets: &[&str], start: u64, end: u64) -> Record {
        Record::Fault(Fault {
            id,
            kind,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            start_ns: ms(start),
            end_ns: ms(end),
            took_effect: true,
            evidence: "seen".to_string(),
        })
    }

    fn healed(at: u64) -> Record {
        Record::Healed { at_ns: ms(at) }
    }

    fn of<'v>(vs: &'v [Violation], checker: &str) -> Vec<&'v Violation> {
        vs.iter().filter(|v| v.checker == checker).collect()
    }

    fn mentions(vs: &[Violation], module: &str, text: &str) -> bool {
        vs.iter()
            .any(|v| v.module.as_deref() == Some(module) && v.message.contains(text))
    }

    /// A clean run: m1 (at-most-one) deployed and running on a1 epoch 5;
    /// m2 (at-least-one) deployed, run on a2 epoch 6, removed; a pause fault
    /// on a3; healed at 5 s, observed every 500 ms from 5.5 s to 12 s.
    fn base() -> Vec<Record> {
        let mut h = vec![
            read("m1", 0, 50, ReadValue::Absent),
            deploy("m1", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            deploy("m2", Fencing::AtLeastOne, 10, 120, Outcome::Ok, Some(4)),
            read("m1", 110, 150, pending()),
            read("m1", 300, 320, present("a1", 5)),
            read("m2", 400, 420, present("a2", 6)),
            remove("m2", 2000, 2100, Outcome::Ok),
            read("m2", 2200, 2250, ReadValue::Absent),
            fault(1, FaultKind::PauseAgent, &["a3"], 1000, 2000),
            healed(5000),
        ];
        h.extend(alive("m1", "a1", 5, 10, 200, 12000));
        h.extend(alive("m2", "a2", 6, 20, 300, 2050));
        for t in (5500..=12000).step_by(500) {
            h.push(obs(t, &[seen("m1", "a1", 5, "running")]));
        }
        h
    }

    /// `base` with the observations of m1 replaced from `from` on (ms).
    fn with_obs_from(mut h: Vec<Record>, from: u64, modules: &[ModuleSeen]) -> Vec<Record> {
        h.retain(|r| !matches!(r, Record::Observation(o) if o.at_ns >= ms(from)));
        for t in (from..=12000).step_by(500) {
            h.push(obs(t, modules));
        }
        h
    }

    // --- the whole clean run ------------------------------------------------

    #[test]
    fn clean_run_passes_every_checker() {
        let r = check_all(&base(), &bounds());
        assert!(r.ok(), "{:#?}", r.violations);
        assert_eq!(r.converge_ns, Some(500 * MILLI));
        assert_eq!(r.ops, 8);
        assert_eq!((r.deploys, r.removes, r.reads), (2, 1, 5));
        assert_eq!(r.faults, 1);
        assert_eq!(r.alive_intervals, 2);
        assert_eq!(r.observations, 14);
        assert_eq!(r.observations_after_heal, 14);
        assert_eq!(r.by_checker.len(), 5);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"converge_ns\":500000000"));
    }

    #[test]
    fn record_order_does_not_matter() {
        let mut h = base();
        h.reverse();
        assert!(check_all(&h, &bounds()).ok());
    }

    // --- lost_or_resurrected ------------------------------------------------

    #[test]
    fn lost_acked_deploy_is_caught() {
        let h = with_obs_from(base(), 11000, &[]);
        let v = lost_or_resurrected(&h, &bounds());
        assert!(mentions(&v, "m1", "lost"), "{v:#?}");
        // The cluster also diverged from what it had converged to.
        let c = convergence(&h, &bounds());
        assert!(mentions(&c, "m1", "not listed"), "{c:#?}");
    }

    #[test]
    fn lost_ignores_silent_replicas() {
        let mut h = base();
        // The last observation: replica 3 did not answer (empty list).
        if let Some(Record::Observation(o)) = h
            .iter_mut()
            .rev()
            .find(|r| matches!(r, Record::Observation(o) if o.at_ns == ms(12000)))
        {
            o.replicas[2].leader = None;
            o.replicas[2].modules.clear();
        }
        assert!(lost_or_resurrected(&h, &bounds()).is_empty());
        assert!(!convergence(&h, &bounds()).is_empty());
    }

    #[test]
    fn deploy_with_a_refused_remove_must_still_exist() {
        let mut h = with_obs_from(base(), 11000, &[]);
        h.push(remove("m1", 3000, 3010, Outcome::Fail));
        assert!(mentions(&lost_or_resurrected(&h, &bounds()), "m1", "lost"));
        // An unknown remove may have applied: no longer required to exist.
        let mut h = with_obs_from(base(), 11000, &[]);
        h.push(remove("m1", 3000, 3010, Outcome::Unknown));
        assert!(lost_or_resurrected(&h, &bounds()).is_empty());
    }

    #[test]
    fn removed_module_listed_at_the_end_is_resurrected() {
        let h = with_obs_from(
            base(),
            11000,
            &[
                seen("m1", "a1", 5, "running"),
                seen("m2", "a2", 6, "installing"),
            ],
        );
        let v = lost_or_resurrected(&h, &bounds());
        assert!(mentions(&v, "m2", "resurrected"), "{v:#?}");
        assert!(
            v.iter()
                .any(|x| x.message.contains("replica 2 (installing)"))
        );
    }

    #[test]
    fn removed_module_started_late_is_resurrected() {
        let mut h = base();
        // Remove acked at 2.1 s; a new copy at 3.2 s (> 2.1 + 1 s slack)…
        h.extend(alive("m2", "a3", 7, 30, 3200, 3400));
        let v = lost_or_resurrected(&h, &bounds());
        assert!(mentions(&v, "m2", "copy started after"), "{v:#?}");
        // …but one at 3.0 s is within the slack.
        let mut h = base();
        h.extend(alive("m2", "a3", 7, 30, 3000, 3400));
        assert!(lost_or_resurrected(&h, &bounds()).is_empty());
    }

    #[test]
    fn removed_module_alive_after_convergence_was_not_stopped() {
        let mut h = base();
        // The old copy keeps writing (the observation at 5.5 s had
        // converged, so its window held no m2 record: put them after).
        h.extend(alive("m2", "a2", 6, 20, 5600, 5800));
        let v = lost_or_resurrected(&h, &bounds());
        assert!(mentions(&v, "m2", "not stopped"), "{v:#?}");
        assert!(v.iter().any(|x| x.message.contains("5 alive records")));
    }

    #[test]
    fn refused_deploy_seen_anywhere_is_caught() {
        let mut h = base();
        h.push(deploy(
            "m3",
            Fencing::AtMostOne,
            500,
            600,
            Outcome::Fail,
            None,
        ));
        // A 404 read is fine.
        h.push(read("m3", 700, 710, ReadValue::Absent));
        assert!(check_all(&h, &bounds()).ok());
        h.push(read("m3", 800, 810, present("a1", 8)));
        h.extend(alive("m3", "a1", 8, 40, 900, 1000));
        h.push(Record::Crash(Crash {
            module: "m3".to_string(),
            node: "a2".to_string(),
            epoch: 9,
            at_ns: ms(1100),
        }));
        let v = lost_or_resurrected(&h, &bounds());
        let m3: Vec<_> = v
            .iter()
            .filter(|x| x.message.contains("refused deploy"))
            .collect();
        assert_eq!(m3.len(), 3, "{v:#?}");
        // Not reported twice by the linearizability checker.
        assert!(linearizable(&h, &bounds()).is_empty());
    }

    // --- at_most_one --------------------------------------------------------

    /// m1 fails over from a1 (epoch 5, pid 10) to a2 (epoch 9, pid 20).
    fn failover(a1_until: u64, a2_from: u64, fencing: Fencing) -> Vec<Record> {
        let mut h = vec![deploy("m1", fencing, 0, 100, Outcome::Ok, Some(3))];
        h.extend(alive("m1", "a1", 5, 10, 200, a1_until));
        h.extend(alive("m1", "a2", 9, 20, a2_from, 10000));
        h
    }

    #[test]
    fn clean_failover_passes() {
        assert!(at_most_one(&failover(3000, 3100, Fencing::AtMostOne), &bounds()).is_empty());
    }

    #[test]
    fn overlapping_copies_are_caught() {
        let v = at_most_one(&failover(3000, 2500, Fencing::AtMostOne), &bounds());
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(mentions(&v, "m1", "two copies for 0.500s"), "{v:#?}");
        // Not a concern for at-least-one modules.
        assert!(at_most_one(&failover(3000, 2500, Fencing::AtLeastOne), &bounds()).is_empty());
    }

    #[test]
    fn overlap_excused_by_a_pause_of_the_old_agent() {
        // a1 paused over [1.5 s, 2.8 s]; the copies overlap over [2.5 s, 3 s].
        let mut h = failover(3000, 2500, Fencing::AtMostOne);
        h.push(fault(1, FaultKind::PauseAgent, &["a1"], 1500, 2800));
        assert!(at_most_one(&h, &bounds()).is_empty());
        // A pause that ended 0.8 s before the overlap still excuses it.
        let mut h = failover(3000, 2500, Fencing::AtMostOne);
        h.push(fault(1, FaultKind::PauseAgent, &["a1"], 1500, 1700));
        assert!(at_most_one(&h, &bounds()).is_empty());
        // Pausing the new copy's agent excuses nothing.
        let mut h = failover(3000, 2500, Fencing::AtMostOne);
        h.push(fault(1, FaultKind::PauseAgent, &["a2"], 1500, 2800));
        assert_eq!(at_most_one(&h, &bounds()).len(), 1);
    }

    #[test]
    fn overlap_too_long_for_the_pause_is_caught() {
        // A 200 ms pause excuses at most 1.2 s; the overlap is 1.5 s.
        let mut h = failover(4000, 2500, Fencing::AtMostOne);
        h.push(fault(1, FaultKind::PauseAgent, &["a1"], 1500, 1700));
        let v = at_most_one(&h, &bounds());
        assert!(
            mentions(&v, "m1", "pause fault #1 on a1 lasted 0.200s"),
            "{v:#?}"
        );
        // A pause that ended more than 1 s before the overlap excuses nothing.
        let mut h = failover(3000, 2500, Fencing::AtMostOne);
        h.push(fault(1, FaultKind::PauseAgent, &["a1"], 1000, 1400));
        assert_eq!(at_most_one(&h, &bounds()).len(), 1);
    }

    #[test]
    fn stale_epoch_restart_is_caught() {
        for fencing in [Fencing::AtMostOne, Fencing::AtLeastOne] {
            // a1 epoch 5, then a2 epoch 9, then a1 again under epoch 5.
            let mut h = failover(3000, 3100, fencing);
            h.retain(|r| !matches!(r, Record::Alive(a) if a.at_ns > ms(6000)));
            h.extend(alive("m1", "a1", 5, 30, 6100, 10000));
            let v = at_most_one(&h, &bounds());
            assert_eq!(v.len(), 1, "{v:#?}");
            assert!(mentions(
                &v,
                "m1",
                "stale epoch accepted: pid 30 on a1 epoch 5"
            ));
        }
    }

    #[test]
    fn restore_in_place_keeps_its_epoch() {
        let mut h = vec![deploy(
            "m1",
            Fencing::AtMostOne,
            0,
            100,
            Outcome::Ok,
            Some(3),
        )];
        h.extend(alive("m1", "a1", 5, 10, 200, 3000));
        h.extend(alive("m1", "a1", 5, 11, 3100, 6000));
        h.extend(alive("m1", "a2", 9, 12, 6100, 9000));
        assert!(at_most_one(&h, &bounds()).is_empty());
    }

    // --- convergence --------------------------------------------------------

    #[test]
    fn never_converged_is_caught() {
        let mut h = base();
        for r in &mut h {
            if let Record::Observation(o) = r {
                o.replicas[1].leader = None;
            }
        }
        let v = convergence(&h, &bounds());
        assert!(
            v.iter().any(|x| x.message.starts_with("never converged")),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|x| x.message.contains("replicas [2] did not answer"))
        );
        assert_eq!(check_all(&h, &bounds()).converge_ns, None);
    }

    #[test]
    fn different_leaders_or_lists_are_not_converged() {
        let mut h = base();
        for r in &mut h {
            if let Record::Observation(o) = r
                && o.at_ns == ms(12000)
            {
                o.replicas[0].leader = Some(2);
                o.replicas[2].modules.push(seen("m9", "a1", 50, "running"));
            }
        }
        let v = convergence(&h, &bounds());
        assert!(
            v.iter().any(|x| x.message.contains("different leaders")),
            "{v:#?}"
        );
        assert!(
            v.iter().any(|x| x.message.contains("differing: m9")),
            "{v:#?}"
        );
    }

    #[test]
    fn converged_then_diverged_is_caught() {
        // The last observations name a2 epoch 9; the ledger says a1 epoch 5.
        let h = with_obs_from(base(), 11000, &[seen("m1", "a2", 9, "running")]);
        let r = check_all(&h, &bounds());
        assert_eq!(r.converge_ns, Some(500 * MILLI));
        assert_eq!(r.unconverged_after_converged, 3);
        let v = of(&r.violations, CONVERGENCE);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("last observation"));
        assert!(v[0].message.contains("listed on a2 epoch 9"));
        assert!(v[0].message.contains("a1/epoch 5/pid 10"));
    }

    #[test]
    fn slow_convergence_is_caught() {
        let b = Bounds {
            converge_within_ns: 2 * SECOND,
            ..bounds()
        };
        // Not running until 9 s: converged at 9 s, 4 s after the heal.
        let mut h = base();
        for r in &mut h {
            if let Record::Observation(o) = r
                && o.at_ns < ms(9000)
            {
                for rep in &mut o.replicas {
                    rep.modules[0].state = "installing".to_string();
                }
            }
        }
        let v = convergence(&h, &b);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].message
                .contains("converged only 4.000s after the heal")
        );
        assert!(convergence(&h, &bounds()).is_empty());
    }

    #[test]
    fn two_copies_in_the_window_are_not_converged() {
        let mut h = base();
        h.extend(alive("m1", "a2", 9, 20, 11800, 12000));
        let v = convergence(&h, &bounds());
        assert!(mentions(&v, "m1", "a2/epoch 9/pid 20"), "{v:#?}");
    }

    #[test]
    fn removed_module_alive_in_the_window_is_not_converged() {
        let mut h = base();
        h.extend(alive("m2", "a2", 6, 20, 11900, 12000));
        assert!(mentions(
            &convergence(&h, &bounds()),
            "m2",
            "not listed but alive"
        ));
    }

    #[test]
    fn failed_module_needs_a_crash_loop_fault() {
        let mut h = base();
        h.push(deploy(
            "m4",
            Fencing::AtLeastOne,
            500,
            600,
            Outcome::Ok,
            Some(7),
        ));
        let h = with_obs_from(
            h,
            5500,
            &[
                seen("m1", "a1", 5, "running"),
                seen("m4", "a3", 8, "failed"),
            ],
        );
        let v = convergence(&h, &bounds());
        assert!(mentions(&v, "m4", "no crash-loop fault"), "{v:#?}");
        let mut h2 = h.clone();
        h2.push(fault(2, FaultKind::CrashLoop, &["m4@a3"], 1000, 3000));
        assert!(convergence(&h2, &bounds()).is_empty());
        // A failed module must not be running.
        h2.extend(alive("m4", "a3", 8, 50, 11700, 12000));
        assert!(mentions(
            &convergence(&h2, &bounds()),
            "m4",
            "listed failed but alive"
        ));
    }

    #[test]
    fn healed_must_be_there_once() {
        let mut h = base();
        h.retain(|r| !matches!(r, Record::Healed { .. }));
        let v = convergence(&h, &bounds());
        assert!(v[0].message.contains("no Healed record"), "{v:#?}");
        let mut h = base();
        h.push(healed(5200));
        let v = convergence(&h, &bounds());
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("2 Healed records"));
        // The last heal counts.
        assert_eq!(check_all(&h, &bounds()).converge_ns, Some(300 * MILLI));
    }

    #[test]
    fn no_observation_after_the_heal_is_caught() {
        let mut h = base();
        h.retain(|r| !matches!(r, Record::Observation(_)));
        let v = convergence(&h, &bounds());
        assert!(v[0].message.contains("no observation after the heal"));
    }

    // --- linearizable -------------------------------------------------------

    fn lin(h: &[Record]) -> Vec<Violation> {
        linearizable(h, &bounds())
    }

    #[test]
    fn linearizable_clean_history_passes() {
        let h = vec![
            read("m", 0, 10, ReadValue::Absent),
            deploy("m", Fencing::AtMostOne, 5, 100, Outcome::Ok, Some(3)),
            // Concurrent with the deploy: either is fine.
            read("m", 20, 30, ReadValue::Absent),
            read("m", 40, 50, pending()),
            read("m", 110, 120, pending()),
            read("m", 130, 140, present("a1", 5)),
            read("m", 150, 160, present("a1", 5)),
            read("m", 170, 180, present("a2", 9)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 210, 220, present("a2", 9)),
            read("m", 230, 240, ReadValue::Absent),
            read("m", 310, 320, ReadValue::Absent),
        ];
        assert!(lin(&h).is_empty(), "{:#?}", lin(&h));
    }

    #[test]
    fn stale_read_after_a_newer_read_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a2", 9)),
            read("m", 130, 140, present("a1", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].message
                .contains("(version 9) completed before read Present(node a1, epoch 5")
        );
        // Overlapping, they may be ordered either way.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 135, present("a2", 9)),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&h).is_empty());
    }

    #[test]
    fn same_epoch_on_two_nodes_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, present("a2", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("epoch 5 on two nodes"));
    }

    #[test]
    fn pending_read_counts_as_the_deploy_version() {
        // Pending before the placement is seen: fine.
        let ok = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, pending()),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&ok).is_empty());
        // Pending after a placement was read: stale.
        let stale = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, pending()),
        ];
        let v = lin(&stale);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("(version 5)") && v[0].message.contains("(version 3)"));
        // The same with an unknown deploy (its version guessed below 5).
        let stale = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, pending()),
        ];
        assert_eq!(lin(&stale).len(), 1);
    }

    #[test]
    fn pending_read_before_the_deploy_was_invoked_is_caught() {
        let h = vec![
            read("m", 0, 10, pending()),
            deploy("m", Fencing::AtMostOne, 20, 100, Outcome::Ok, Some(3)),
        ];
        assert_eq!(lin(&h).len(), 1);
    }

    #[test]
    fn absent_read_after_an_acked_deploy_is_a_lost_deploy() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, ReadValue::Absent),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.starts_with("lost deploy"));
        // With an unknown deploy it may simply not have happened (yet).
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, ReadValue::Absent),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&h).is_empty());
        // But not after a read saw it.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, ReadValue::Absent),
        ];
        assert_eq!(lin(&h).len(), 1, "{:#?}", lin(&h));
    }

    #[test]
    fn absent_read_during_a_slow_deploy_ack_and_a_remove() {
        // The deploy's ack is slow; meanwhile it was read, removed and read
        // absent: the absent read is after the remove, not before the deploy.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 1000, Outcome::Ok, Some(3)),
            read("m", 10, 20, present("a1", 5)),
            remove("m", 30, 40, Outcome::Ok),
            read("m", 50, 60, ReadValue::Absent),
        ];
        assert!(lin(&h).is_empty(), "{:#?}", lin(&h));
    }

    #[test]
    fn present_after_an_acked_remove_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 310, 320, present("a1", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("remove Ok"));
        // An unknown remove may land later; a refused one never.
        for outcome in [Outcome::Unknown, Outcome::Fail] {
            let h = vec![
                deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
                remove("m", 200, 300, outcome),
                read("m", 310, 320, present("a1", 5)),
            ];
            assert!(lin(&h).is_empty());
        }
    }

    #[test]
    fn violations_are_capped_per_module() {
        let mut h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 9)),
        ];
        for i in 0..20 {
            h.push(read("m", 200 + 10 * i, 205 + 10 * i, present("a1", 5)));
        }
        let v = lin(&h);
        assert_eq!(v.len(), MAX_LISTED + 1, "{v:#?}");
        assert!(v[MAX_LISTED].message.contains("15 more"));
    }

    /// Naive `O(n²)` version of `sweep`: how many ops have a predecessor of
    /// greater key.
    fn naive(ops: &[LinOp]) -> usize {
        ops.iter()
            .filter(|b| {
                ops.iter()
                    .any(|a| a.complete != OPEN && a.complete < b.invoke && a.key > b.key)
            })
            .count()
    }

    #[test]
    fn sweep_agrees_with_the_naive_check() {
        let dummy = op("m", OpKind::Read, 0, 0, Outcome::Ok);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.gen_range(0..12);
            let ops: Vec<LinOp> = (0..n)
                .map(|_| {
                    let invoke = rng.gen_range(0..50u64);
                    LinOp {
                        op: &dummy,
                        invoke,
                        complete: if rng.gen_bool(0.1) {
                            OPEN
                        } else {
                            invoke + rng.gen_range(0..15)
                        },
                        key: Key {
                            version: rng.gen_range(0..4),
                            read: rng.gen_bool(0.7),
                        },
                    }
                })
                .collect();
            let (count, pairs) = sweep(&ops);
            assert_eq!(count, naive(&ops));
            for (a, b) in pairs {
                assert!(ops[a].complete < ops[b].invoke && ops[a].key > ops[b].key);
            }
        }
    }

    /// A history of a few modules executed one op at a time (linearization
    /// points strictly increasing, versions never decreasing); with
    /// `concurrent`, each op's interval is widened randomly around its
    /// point, so ops overlap but the history stays linearizable.
    fn generated(rng: &mut StdRng, concurrent: bool) -> Vec<Record> {
        enum Ev {
            Deploy(Outcome, u64),
            Remove(Outcome),
            Read(ReadValue),
        }
        let mut h = Vec::new();
        for m in 0..rng.gen_range(1..4) {
            let name = format!("m{m}");
            let mut evs = Vec::new();
            for _ in 0..rng.gen_range(0..4) {
                evs.push(Ev::Read(ReadValue::Absent));
            }
            let d = rng.gen_range(1..50);
            let outcome = if rng.gen_bool(0.2) {
                Outcome::Unknown
            } else {
                Outcome::Ok
            };
            evs.push(Ev::Deploy(outcome, d));
            for _ in 0..rng.gen_range(0..3) {
                evs.push(Ev::Read(pending()));
            }
            let mut e = d;
            for p in 0..rng.gen_range(0..5) {
                e += rng.gen_range(1..10);
                let node = format!("a{}", p % 3 + 1);
                for _ in 0..rng.gen_range(0..5) {
                    evs.push(Ev::Read(present(&node, e)));
                }
            }
            if rng.gen_bool(0.5) {
                let outcome = if rng.gen_bool(0.2) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                };
                evs.push(Ev::Remove(outcome));
                for _ in 0..rng.gen_range(0..4) {
                    evs.push(Ev::Read(ReadValue::Absent));
                }
            }
            let mut point = rng.gen_range(0..1000u64) * 10;
            let mut deploy_invoke = 0;
            for ev in evs {
                point += rng.gen_range(10..100);
                let (mut invoke, complete) = if concurrent {
                    (
                        point.saturating_sub(rng.gen_range(0..300)),
                        point + rng.gen_range(0..300),
                    )
                } else {
                    (point - 2, point + 2)
                };
                let client = rng.gen_range(0..8);
                let mut o = match ev {
                    Ev::Deploy(outcome, d) => {
                        deploy_invoke = invoke;
                        let mut o = op(
                            &name,
                            OpKind::Deploy {
                                fencing: Fencing::AtMostOne,
                            },
                            invoke,
                            complete,
                            outcome,
                        );
                        o.epoch = (outcome == Outcome::Ok).then_some(d);
                        o
                    }
                    Ev::Remove(outcome) => {
                        invoke = invoke.max(deploy_invoke + 1);
                        op(&name, OpKind::Remove, invoke, complete, outcome)
                    }
                    Ev::Read(v) => Op {
                        read: Some(v),
                        ..op(&name, OpKind::Read, invoke, complete, Outcome::Ok)
                    },
                };
                o.client = client;
                h.push(Record::Op(o));
            }
        }
        h
    }

    #[test]
    fn generated_linearizable_histories_pass() {
        let mut rng = StdRng::seed_from_u64(42);
        for i in 0..3000 {
            let concurrent = i % 2 == 1;
            let h = generated(&mut rng, concurrent);
            let v = lin(&h);
            assert!(
                v.is_empty(),
                "history {i} (concurrent: {concurrent}): {v:#?}\n{h:#?}"
            );
        }
    }

    #[test]
    fn generated_histories_with_a_stale_read_fail() {
        // A sequential history plus one read, after everything, of a version
        // older than the newest one read: always caught.
        let mut rng = StdRng::seed_from_u64(43);
        let mut checked = 0;
        for _ in 0..500 {
            let mut h = generated(&mut rng, false);
            let Some((name, e, end)) = h.iter().rev().find_map(|r| match r {
                Record::Op(Op {
                    module,
                    read: Some(ReadValue::Present { epoch: Some(e), .. }),
                    complete_ns,
                    ..
                }) if *e > 1 => Some((module.clone(), *e, *complete_ns)),
                _ => None,
            }) else {
                continue;
            };
            let t = (end - T0) / MILLI + 1_000;
            h.push(read(&name, t, t + 1, present("a9", e - 1)));
            assert!(!lin(&h).is_empty(), "{h:#?}");
            checked += 1;
        }
        assert!(checked > 100);
    }

    #[test]
    fn tens_of_thousands_of_reads_are_quick() {
        let mut h = vec![deploy(
            "m",
            Fencing::AtMostOne,
            0,
            100,
            Outcome::Ok,
            Some(3),
        )];
        for i in 0..50_000u64 {
            let e = 5 + i / 1000;
            h.push(read("m", 200 + 3 * i, 205 + 3 * i, present("a1", e)));
        }
        let start = std::time::Instant::now();
        assert!(lin(&h).is_empty());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    // --- coverage -----------------------------------------------------------

    #[test]
    fn fault_without_effect_is_caught() {
        let mut h = base();
        assert!(coverage(&h, &bounds()).is_empty());
        h.push(Record::Fault(Fault {
            id: 7,
            kind: FaultKind::OneWayCut,
            targets: vec!["s1".to_string(), "s2".to_string()],
            start_ns: ms(100),
            end_ns: ms(200),
            took_effect: false,
            evidence: "0 packets dropped".to_string(),
        }));
        let v = coverage(&h, &bounds());
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("fault #7 OneWayCut on [s1, s2]"));
        assert!(v[0].message.contains("0 packets dropped"));
        let r = check_all(&h, &bounds());
        assert_eq!((r.faults, r.faults_took_effect), (2, 1));
        assert_eq!(r.by_checker[COVERAGE], 1);
    }

    #[test]
    fn history_lines_parse_and_check() {
        let text: String = base()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        let h = crate::jepsen::history::parse(&text).unwrap();
        assert!(check_all(&h, &bounds()).ok());
    }
}
