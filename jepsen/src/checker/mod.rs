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
//!
//! One file per checker; `index` holds the indexed history they share and
//! the wording of their messages. The golden fixtures in
//! `jepsen/tests/fixtures/` pin the verdict of every checker on small
//! recorded histories, passing and violating.

mod at_most_one;
mod convergence;
mod coverage;
mod index;
mod linearizable;
mod lost_or_resurrected;
#[cfg(test)]
mod test_history;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use at_most_one::{PAUSE_SLACK_NS, at_most_one};
pub use convergence::convergence;
pub use coverage::coverage;
pub use linearizable::linearizable;
pub use lost_or_resurrected::lost_or_resurrected;

use at_most_one::at_most_one_in;
use convergence::analyse_convergence;
use coverage::coverage_in;
use index::{Index, MILLI, SECOND};
use linearizable::linearizable_in;
use lost_or_resurrected::lost_or_resurrected_in;

use crate::history::{Outcome, Record};

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

/// The stated bounds the checkers hold the cluster to (missing fields take
/// their defaults when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_history::*;

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

    #[test]
    fn history_lines_parse_and_check() {
        let text: String = base()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        let h = crate::history::parse(&text).unwrap();
        assert!(check_all(&h, &bounds()).ok());
    }
}
