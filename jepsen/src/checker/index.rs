//! The history indexed once for every checker, and how the checkers word
//! what they found.
//!
//! [`Index::new`] sorts every kind of record by its own timestamps (never by
//! its position in the file): client operations per module by invocation,
//! `Alive` records per module by time and folded into one [`Interval`] per
//! copy (module, node, epoch, pid), crashes, observations and heals by
//! time. It also notes oddities of the history itself (two deploys of one
//! name, a remove before any deploy, …) for [`Report::notes`](super::Report).
//! Messages name times as `CLOCK_MONOTONIC` seconds with milliseconds
//! ([`secs`]) and list at most [`MAX_LISTED`] findings of one kind per
//! module ([`push_capped`]).

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;
use crate::history::{
    Alive, Crash, Fault, FaultKind, Fencing, Nanos, Observation, Op, OpKind, Outcome, ReadValue,
    Record,
};

pub(super) const SECOND: Nanos = 1_000_000_000;
pub(super) const MILLI: Nanos = 1_000_000;

/// At most this many violations of one kind are listed per module; the rest
/// are summed up in one more violation.
pub(super) const MAX_LISTED: usize = 5;

/// Completion time of an operation whose outcome is unknown.
pub(super) const OPEN: Nanos = Nanos::MAX;

/// The client operations on one module, each list sorted by invocation.
#[derive(Default)]
pub(super) struct ModuleOps<'a> {
    pub(super) deploys: Vec<&'a Op>,
    pub(super) removes: Vec<&'a Op>,
    pub(super) reads: Vec<&'a Op>,
}

impl<'a> ModuleOps<'a> {
    /// The module's deploy (the workload deploys each name at most once).
    pub(super) fn deploy(&self) -> Option<&'a Op> {
        self.deploys.first().copied()
    }

    /// The module's remove (at most once per name).
    pub(super) fn remove(&self) -> Option<&'a Op> {
        self.removes.first().copied()
    }

    /// A remove that may have been applied (not refused).
    pub(super) fn remove_may_apply(&self) -> Option<&'a Op> {
        self.remove().filter(|r| r.outcome != Outcome::Fail)
    }

    /// Deploy acknowledged and no remove that may have been applied: the
    /// module must exist.
    pub(super) fn must_exist(&self) -> bool {
        self.deploy().is_some_and(|d| d.outcome == Outcome::Ok) && self.remove_may_apply().is_none()
    }

    pub(super) fn fencing(&self) -> Option<Fencing> {
        match self.deploy()?.kind {
            OpKind::Deploy { fencing } => Some(fencing),
            _ => None,
        }
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &'a Op> + Clone + '_ {
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
pub(super) struct Interval<'a> {
    pub(super) node: &'a str,
    pub(super) epoch: u64,
    pub(super) pid: u32,
    pub(super) first: Nanos,
    pub(super) last: Nanos,
    pub(super) records: usize,
}

impl Interval<'_> {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Index<'a> {
    pub(super) modules: BTreeMap<&'a str, ModuleOps<'a>>,
    pub(super) faults: Vec<&'a Fault>,
    /// Per module, sorted by `at_ns`.
    pub(super) alive: BTreeMap<&'a str, Vec<&'a Alive>>,
    /// Per module, sorted by (first, node, pid, epoch).
    pub(super) intervals: BTreeMap<&'a str, Vec<Interval<'a>>>,
    pub(super) crashes: Vec<&'a Crash>,
    /// Sorted by `at_ns`.
    pub(super) observations: Vec<&'a Observation>,
    /// Sorted.
    pub(super) healed: Vec<Nanos>,
    pub(super) notes: Vec<String>,
}

impl<'a> Index<'a> {
    pub(super) fn new(records: &'a [Record]) -> Index<'a> {
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

    pub(super) fn module_names(&self) -> BTreeSet<&'a str> {
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
    pub(super) fn alive_in(&self, module: &str, at: Nanos, window: Nanos) -> &[&'a Alive] {
        let Some(list) = self.alive.get(module) else {
            return &[];
        };
        let lo = at.saturating_sub(window);
        let start = list.partition_point(|a| a.at_ns <= lo);
        let end = list.partition_point(|a| a.at_ns <= at);
        &list[start..end.max(start)]
    }

    /// Modules some `CrashLoop` fault targeted (`module@node`).
    pub(super) fn crash_looped(&self) -> BTreeSet<&'a str> {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::CrashLoop)
            .flat_map(|f| f.targets.iter())
            .map(|t| t.split_once('@').map_or(t.as_str(), |(m, _)| m))
            .collect()
    }
}

/// `CLOCK_MONOTONIC` nanoseconds as seconds with milliseconds.
pub(super) fn secs(ns: Nanos) -> String {
    if ns == OPEN {
        return "∞".to_string();
    }
    format!("{}.{:03}s", ns / SECOND, (ns % SECOND) / MILLI)
}

pub(super) fn describe_op(op: &Op) -> String {
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
pub(super) fn push_capped(
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
