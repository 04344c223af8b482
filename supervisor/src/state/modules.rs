//! Modules as operators ask for them: the module record, and the
//! transitions that create and delete one ([`Deploy`], [`Remove`]).
//!
//! A deploy adds a `pending` record (the planner places it); a remove
//! deletes the record and takes it out of the modules-by-node index, so the
//! node's agent is told to stop the copy by the next directives. The spec a
//! deploy carries was validated at the edge before it was proposed (the
//! admin API's `parse_spec`); `apply` checks only the state: the name is
//! free, the preferred node is known, the package version is not
//! quarantined. A deploy is the module's revision 1 (`versions`).

use std::sync::Arc;

use proto::manifest::ConfigPackage;
use proto::spec::ModuleSpec;
use proto::{Epoch, ModuleName, NodeId};
use serde::{Deserialize, Serialize};

use super::{ClusterState, EventKind, ModuleState, Placement, Rejection, Versions, not_found};

/// A module and everything decided about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Shared with the current revision's record in `versions` (one copy
    /// a module instead of two: the spec with its labels is the largest
    /// part of both).
    pub spec: Arc<ModuleSpec>,
    pub state: ModuleState,
    pub placement: Option<Placement>,
    /// The configuration package retrieved for the current placement
    /// (held apart from the record, which the state's map holds inline:
    /// a package is most of a record's size; encoded as the package).
    pub package: Option<Arc<ConfigPackage>>,
    /// Restores ordered since the module was last healthy.
    pub restore_attempts: u32,
    /// Restore orders issued for the current placement (never reset while
    /// the placement lasts; the agent echoes it back).
    pub restore_seq: u32,
    /// Failovers performed over the module's life.
    pub failovers: u32,
    /// Nodes that failed the module in the current failure episode, in
    /// order; a failover never picks one of them (claim 2).
    pub tried_nodes: Vec<NodeId>,
    /// Failover nodes tried in the current episode (bounded by
    /// `failover.max_nodes`).
    pub episode_failovers: u32,
    /// Why the module is failed or what went wrong last.
    pub reason: Option<String>,
    /// Index of the deploy.
    pub deployed_at: Epoch,
    pub updated_ms: u64,
}

impl ModuleRecord {
    /// The record a deploy of `spec` at log `index`, stamped `at`, adds.
    pub fn pending(spec: &Arc<ModuleSpec>, index: u64, at: u64) -> ModuleRecord {
        ModuleRecord {
            spec: spec.clone(),
            state: ModuleState::Pending,
            placement: None,
            package: None,
            restore_attempts: 0,
            restore_seq: 0,
            failovers: 0,
            tried_nodes: vec![],
            episode_failovers: 0,
            reason: None,
            deployed_at: index,
            updated_ms: at,
        }
    }
}

/// Operator: deploy a new module. The spec is valid (checked at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub spec: ModuleSpec,
}

impl Deploy {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let name = self.spec.name.clone();
        if state.modules.contains_key(&name) {
            return Err(Rejection::Conflict(format!(
                "module {name:?} already exists"
            )));
        }
        if let Some(node) = &self.spec.placement.node
            && !state.nodes.contains_key(node)
        {
            return Err(Rejection::NotFound(format!(
                "placement.node: unknown node {node:?}"
            )));
        }
        state.check_not_quarantined(&self.spec.package)?;
        let spec = Arc::new(self.spec.clone());
        state
            .modules
            .insert(name.clone(), ModuleRecord::pending(&spec, index, at));
        state
            .versions
            .insert(name.clone(), Versions::first(&spec, at));
        let pkg = self.spec.package.to_string();
        state.event(
            index,
            at,
            EventKind::ModuleDeployed,
            Some(&name),
            None,
            &[("package", pkg)],
        );
        Ok(())
    }
}

/// Operator: stop and remove a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    pub module: ModuleName,
}

impl Remove {
    pub(super) fn apply(
        &self,
        state: &mut ClusterState,
        index: u64,
        at: u64,
    ) -> Result<(), Rejection> {
        let m = state
            .modules
            .remove(&self.module)
            .ok_or_else(|| not_found("module", &self.module))?;
        state.versions.remove(&self.module);
        let node = m.placement.map(|p| p.node);
        if let Some(n) = &node {
            state.unindex(n, &self.module);
        }
        state.event(
            index,
            at,
            EventKind::ModuleRemoved,
            Some(&self.module),
            node.as_deref(),
            &[],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Batch, Outcome, RegisterNode, Transition};

    fn spec(name: &str, node: Option<&str>, attempts: u32) -> ModuleSpec {
        let mut spec: ModuleSpec = serde_json::from_value(serde_json::json!({
            "name": name, "package": {"name": "p", "version": "1.0.0"}
        }))
        .expect("spec");
        spec.placement.node = node.map(str::to_string);
        spec.restart.attempts = attempts;
        spec
    }

    /// `apply` checks the state (free name, known node), not the spec's
    /// rules: those are the edge's, so what the log holds is applied the
    /// same by every version, whatever its validation rules.
    #[test]
    fn deploy_checks_the_state_not_the_spec_rules() {
        let mut state = ClusterState::default();
        state.apply(
            1,
            &Batch {
                at_ms: 1,
                transitions: vec![Transition::RegisterNode(RegisterNode {
                    node: "a".into(),
                    addr: "a:1".into(),
                    labels: Default::default(),
                })],
            },
        );
        let out_of_rule = spec("web", Some("a"), 0);
        assert!(out_of_rule.validate().is_err(), "the edge refuses it");
        let cases = [
            (out_of_rule, None),
            (spec("web", None, 3), Some("already exists")),
            (spec("api", Some("z"), 3), Some("unknown node")),
            (spec("api", None, 3), None),
        ];
        for (i, (spec, rejected)) in cases.into_iter().enumerate() {
            let index = i as u64 + 2;
            let before = state.clone();
            let resp = state.apply(
                index,
                &Batch {
                    at_ms: index,
                    transitions: vec![Transition::Deploy(Deploy { spec: spec.clone() })],
                },
            );
            match (rejected, &resp.outcomes[..]) {
                (None, [Outcome::Applied { epoch }]) => {
                    assert_eq!(*epoch, index);
                    let m = &state.modules[&spec.name];
                    assert_eq!((m.state, m.deployed_at), (ModuleState::Pending, index));
                    assert_eq!(
                        state.events.back().map(|e| e.kind),
                        Some(EventKind::ModuleDeployed)
                    );
                }
                (Some(why), [Outcome::Rejected(r)]) => {
                    assert!(r.message().contains(why), "{r:?}");
                    assert_eq!(state.modules, before.modules);
                    assert_eq!(state.events, before.events);
                }
                (want, got) => panic!("{}: want rejected {want:?}, got {got:?}", spec.name),
            }
        }
    }
}
