//! The lease terms the cluster relies on, replicated so that replicas
//! started with other flags cannot disagree about them.
//!
//! Each leader grants agents its own `--lease-ms` and declares a silent node
//! down after the lease plus `--lease-drift-ms`. If those were only flags, a
//! new leader started with a shorter lease could declare a node down while
//! the node still holds a longer lease granted by the previous leader, and
//! move an `at-most-one` module before it fenced itself. So the terms are in
//! the state ([`ClusterState::lease`]) and the planner keeps them covering
//! every lease that may still be held (`crate::plan`):
//! - a leader whose own terms exceed the recorded ones raises them (field
//!   by field) at once, and grants no more than the recorded lease until the
//!   raise is committed;
//! - a leader whose own terms are shorter lowers them only once the
//!   recorded lease plus drift has passed since it became leader (every
//!   lease an earlier leader granted has then ended);
//! - the failure detector waits for the longer of its own and the recorded
//!   terms.

use proto::record::EventKind;
use serde::{Deserialize, Serialize};

use super::{ClusterState, Rejection};

/// A lease length and the clock-drift margin added to it before a silent
/// node is declared down (ms). All zero in a new cluster: no lease granted
/// yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    pub lease_ms: u64,
    pub drift_ms: u64,
}

impl LeaseTerms {
    /// Field by field, the longer of the two.
    pub fn max(self, other: LeaseTerms) -> LeaseTerms {
        LeaseTerms {
            lease_ms: self.lease_ms.max(other.lease_ms),
            drift_ms: self.drift_ms.max(other.drift_ms),
        }
    }

    /// True when `self` covers `other` field by field.
    pub fn covers(self, other: LeaseTerms) -> bool {
        self.lease_ms >= other.lease_ms && self.drift_ms >= other.drift_ms
    }
}

/// Planner: record new lease terms (applied only if the recorded ones are
/// still `expect`, so a repeated or outdated proposal has no effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLease {
    pub terms: LeaseTerms,
    pub expect: LeaseTerms,
}

impl RecordLease {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        if state.lease != self.expect {
            return Err(Rejection::Conflict(format!(
                "lease terms are {:?}, not the expected {:?}",
                state.lease, self.expect
            )));
        }
        if state.lease == self.terms {
            return Err(Rejection::Conflict("lease terms unchanged".into()));
        }
        let was = state.lease;
        state.lease = self.terms;
        state.event(
            index,
            at,
            EventKind::LeaseTerms,
            None,
            None,
            &[
                ("lease_ms", self.terms.lease_ms.to_string()),
                ("drift_ms", self.terms.drift_ms.to_string()),
                ("was_lease_ms", was.lease_ms.to_string()),
                ("was_drift_ms", was.drift_ms.to_string()),
            ],
        );
        Ok(())
    }
}
