//! Pre-staging's record: a module's configuration package was downloaded
//! and verified into the cache of the node its next failover would go to
//! ([`RecordPrestaged`], event `package_prestaged`).
//!
//! It records only the event: pre-staging changes no module or node (what
//! a node holds in its cache is the agent's, reported in its heartbeats;
//! see `crate::prestage`). The leader proposes it when a node's heartbeat
//! first reports a module pre-staged; a repeat for the same module, node
//! and epoch (a new leader learning it again) is rejected while the first
//! record is among the kept events.

use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, Rejection, not_found};

/// The package of `module`'s placement at `epoch` is in `node`'s cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPrestaged {
    pub module: ModuleName,
    pub node: NodeId,
    pub epoch: Epoch,
}

impl RecordPrestaged {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        if !state.nodes.contains_key(&self.node) {
            return Err(not_found("node", &self.node));
        }
        let m = state.placed_module(&self.module, self.epoch)?;
        let Some(package) = &m.package else {
            return Err(Rejection::Conflict(format!(
                "module {:?} has no package retrieved at epoch {}",
                self.module, self.epoch
            )));
        };
        let package = package.manifest.package_ref().to_string();
        if m.placement.as_ref().is_some_and(|p| p.node == self.node) {
            return Err(Rejection::Conflict(format!(
                "module {:?} is placed on {}: nothing to pre-stage there",
                self.module, self.node
            )));
        }
        let epoch = self.epoch.to_string();
        let recorded = state.events.iter().rev().any(|e| {
            e.kind == EventKind::PackagePrestaged
                && e.module.as_deref() == Some(self.module.as_str())
                && e.node.as_deref() == Some(self.node.as_str())
                && e.detail.get("epoch") == Some(&epoch)
        });
        if recorded {
            return Err(Rejection::Conflict(format!(
                "package of {:?} at epoch {epoch} already recorded pre-staged on {}",
                self.module, self.node
            )));
        }
        state.event(
            index,
            at,
            EventKind::PackagePrestaged,
            Some(&self.module),
            Some(&self.node),
            &[("epoch", epoch), ("package", package)],
        );
        Ok(())
    }
}
