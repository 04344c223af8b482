//! Recording pre-stagings: when a node's heartbeat first reports a module's
//! package pre-staged (see [`crate::prestage`]), the leader commits
//! [`RecordPrestaged`] (event `package_prestaged`), in the background so
//! the heartbeat reply does not wait for it. A repeat (a new leader
//! learning it again) is rejected by `apply` and only logged at debug
//! level.

use std::sync::Arc;

use proto::{Epoch, ModuleName};

use super::Leader;
use crate::state::{Outcome, RecordPrestaged, Transition};

impl Leader {
    /// Commits the pre-stagings `node` reported for the first time.
    pub(super) fn record_prestaged(self: &Arc<Self>, node: &str, news: Vec<(ModuleName, Epoch)>) {
        if news.is_empty() {
            return;
        }
        let transitions: Vec<Transition> = news
            .into_iter()
            .map(|(module, epoch)| {
                Transition::RecordPrestaged(RecordPrestaged {
                    module,
                    node: node.to_string(),
                    epoch,
                })
            })
            .collect();
        let leader = self.clone();
        self.app.tasks.spawn(async move {
            let proposed = tokio::select! {
                _ = leader.cancel.cancelled() => return,
                r = leader.app.propose(transitions.clone()) => r,
            };
            match proposed {
                Ok(resp) => {
                    for (t, o) in transitions.iter().zip(&resp.outcomes) {
                        if let Outcome::Rejected(r) = o {
                            tracing::debug!(transition = ?t, "pre-staging not recorded: {}", r.message());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(term = leader.term, error = %e, "recording pre-staged packages failed")
                }
            }
        });
    }
}
