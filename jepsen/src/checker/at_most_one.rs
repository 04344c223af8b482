//! The at-most-one checker: no two copies of an at-most-one module run at
//! the same time, and no copy of any module starts under a stale epoch.
//!
//! It works on the ledger alone, folded into one alive interval per copy
//! (see [`Index`]), plus the `PauseAgent` faults: a paused agent cannot be
//! told to stop its copies, so an overlap that starts on a paused node and
//! lasts no longer than the pause (plus [`PAUSE_SLACK_NS`]) is the stated
//! bound, not a violation.

use super::index::{Index, Interval, ModuleOps, SECOND, push_capped, secs};
use super::{AT_MOST_ONE, Bounds, Violation};
use crate::history::{Fault, FaultKind, Fencing, Nanos, Record};

/// Slack of the pause excuse in [`at_most_one`]: the paused fault may have
/// ended up to this long before the overlap began, and the overlap may last
/// up to the fault's duration plus this.
pub const PAUSE_SLACK_NS: Nanos = SECOND;

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

pub(super) fn at_most_one_in(idx: &Index) -> Vec<Violation> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_history::*;
    use crate::history::Outcome;

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
}
