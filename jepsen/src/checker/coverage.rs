//! The coverage checker: every injected fault took effect.
//!
//! A fault the harness could not see take effect (no packet dropped, the
//! process not stopped, the module neither crashing nor moved) tested
//! nothing: it is a violation, so that a campaign cannot pass without having
//! exercised its faults.

use super::index::{Index, secs};
use super::{Bounds, COVERAGE, Violation};
use crate::history::Record;

/// Every injected fault took effect (`took_effect`); one violation per
/// fault that did not, naming its id, kind, targets and evidence.
pub fn coverage(records: &[Record], _bounds: &Bounds) -> Vec<Violation> {
    coverage_in(&Index::new(records))
}

pub(super) fn coverage_in(idx: &Index) -> Vec<Violation> {
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
    use super::*;
    use crate::checker::check_all;
    use crate::checker::test_history::*;
    use crate::history::{Fault, FaultKind};

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
}
