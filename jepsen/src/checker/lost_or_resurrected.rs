//! The lost/resurrected checker: acknowledged deploys are durable, removes
//! are final, refused deploys never take effect.
//!
//! It compares what the clients were told (ops with their outcomes) with
//! what the replicas list in the last observation and with the probes'
//! ledger. A remove that may have applied (acknowledged or unknown) frees a
//! module from having to exist; only an acknowledged one obliges it to be
//! gone. Whether the copies of a removed module were stopped is judged from
//! the first converged observation on, which [`convergence`](fn@super::convergence)
//! finds.

use super::index::{Index, describe_op, push_capped, secs};
use super::{Bounds, LOST_OR_RESURRECTED, Violation, analyse_convergence};
use crate::history::{Alive, Nanos, Outcome, ReadValue, Record};

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

pub(super) fn lost_or_resurrected_in(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_history::*;
    use crate::checker::{check_all, convergence, linearizable};
    use crate::history::{Crash, Fencing};

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
}
