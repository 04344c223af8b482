//! The convergence checker: after the final heal the replicas agree, the
//! ledger matches what they list, within the stated bound and to the end.
//!
//! Each observation after the `Healed` record is judged on its own
//! ([`unconverged_reasons`]: empty when converged). The analysis also
//! yields what the other checkers and the report need: the time of the first
//! converged observation (from which a removed module's copies must be
//! stopped, see [`lost_or_resurrected`](fn@super::lost_or_resurrected)),
//! the time to converge, and how often the cluster flapped after it.

use std::collections::BTreeSet;

use super::index::{Index, MAX_LISTED, secs};
use super::{Bounds, CONVERGENCE, Violation};
use crate::history::{Alive, Nanos, Observation, Record};

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

pub(super) struct ConvergenceAnalysis {
    pub(super) violations: Vec<Violation>,
    pub(super) first_converged_at: Option<Nanos>,
    pub(super) converge_ns: Option<Nanos>,
    pub(super) after_heal: usize,
    pub(super) unconverged_after_converged: usize,
    pub(super) notes: Vec<String>,
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

pub(super) fn analyse_convergence(idx: &Index, bounds: &Bounds) -> ConvergenceAnalysis {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::check_all;
    use crate::checker::index::{MILLI, SECOND};
    use crate::checker::test_history::*;
    use crate::history::{FaultKind, Fencing, Outcome};

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
}
