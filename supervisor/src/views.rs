//! The admin API's views ([`admin_api`]) built from the replicated state.
//! The view types live in the `admin-api` crate so that its clients need
//! neither openraft nor RocksDB; this module is the one place that fills
//! them in.

pub use admin_api::views::*;

use crate::state::{
    ClusterState, Event, FleetRollout, ModuleRecord, NodeHealth, NodeRecord, PlaceCause,
};

/// The view of module `name`.
pub fn module(state: &ClusterState, name: &str, m: &ModuleRecord) -> ModuleView {
    let versions = state.versions_of(name);
    ModuleView {
        name: name.to_string(),
        node: m.placement.as_ref().map(|p| p.node.clone()),
        epoch: m.placement.as_ref().map(|p| p.epoch),
        state: m.state.as_str().to_string(),
        restore_attempts: m.restore_attempts,
        failovers: m.failovers,
        package: m.spec.package.clone(),
        fencing: m.spec.fencing,
        reason: m.reason.clone(),
        tried_nodes: m.tried_nodes.clone(),
        placed_by: m.placement.as_ref().map(|p| {
            match &p.cause {
                PlaceCause::Initial => "initial",
                PlaceCause::Failover { .. } | PlaceCause::NodeLost { .. } => "failover",
                PlaceCause::Drain => "drain",
                PlaceCause::Rollout { .. } => "rollout",
            }
            .to_string()
        }),
        installed_version: m.package.as_ref().map(|p| p.manifest.version.clone()),
        updated_ms: m.updated_ms,
        revision: versions.as_ref().map_or(1, |v| v.revision),
        rollout: versions
            .as_ref()
            .and_then(|v| v.rollout.as_ref())
            .map(|r| RolloutView {
                from: r.from,
                to: r.to,
                state: r.state.as_str().to_string(),
                reason: r.reason.clone(),
                started_ms: r.started_ms,
            }),
    }
}

/// The kept revisions of module `name`, oldest first.
pub fn history(state: &ClusterState, name: &str) -> Option<Vec<RevisionView>> {
    let v = state.versions_of(name)?;
    Some(
        v.history
            .iter()
            .map(|r| RevisionView {
                revision: r.revision,
                package: r.spec.package.clone(),
                at_ms: r.at_ms,
                outcome: r.outcome.as_str().to_string(),
                good: r.good,
                restores: r.restores,
                failovers: r.failovers,
                spec: proto::spec::ModuleSpec::clone(&r.spec),
            })
            .collect(),
    )
}

/// The quarantined package versions, by name and version.
pub fn quarantined(state: &ClusterState) -> Vec<QuarantineView> {
    state
        .packages
        .quarantined
        .iter()
        .map(|(p, q)| QuarantineView {
            package: p.clone(),
            since_ms: q.since_ms,
            nodes: q.nodes.clone(),
            reason: q.reason.clone(),
            modules: state
                .modules
                .iter()
                .filter(|(_, m)| m.spec.package == *p)
                .map(|(n, _)| n.clone())
                .collect(),
        })
        .collect()
}

/// The view of a fleet rollout.
pub fn fleet_rollout(f: &FleetRollout) -> FleetRolloutView {
    let with_reason = |list: &[(String, String)]| {
        list.iter()
            .map(|(m, r)| FleetModuleView {
                module: m.clone(),
                revision: None,
                reason: Some(r.clone()),
            })
            .collect()
    };
    FleetRolloutView {
        id: f.id,
        package: f.package.clone(),
        state: f.state.as_str().to_string(),
        reason: f.reason.clone(),
        max_parallel: f.max_parallel,
        max_failures: f.max_failures,
        started_ms: f.started_ms,
        updated_ms: f.updated_ms,
        pending: f.pending.clone(),
        active: f
            .active
            .iter()
            .map(|(m, r)| FleetModuleView {
                module: m.clone(),
                revision: Some(*r),
                reason: None,
            })
            .collect(),
        completed: f.completed.clone(),
        failed: with_reason(&f.failed),
        skipped: with_reason(&f.skipped),
    }
}

/// The view of node `id`, with the modules placed on it.
pub fn node(state: &ClusterState, id: &str, n: &NodeRecord) -> NodeView {
    let status = match (n.draining, n.health) {
        (true, NodeHealth::Ready) => "draining",
        (_, NodeHealth::Ready) => "ready",
        (_, NodeHealth::Suspect) => "suspect",
        (_, NodeHealth::Down) => "down",
    };
    NodeView {
        id: id.to_string(),
        addr: n.addr.clone(),
        status: status.to_string(),
        labels: n.labels.clone(),
        modules: state.modules_on(id).map(|(name, _)| name.clone()).collect(),
        // Filled in by the leader (`GET /v1/nodes`).
        lease_left_ms: None,
    }
}

/// The view of a recorded event.
pub fn event(e: &Event) -> EventView {
    EventView {
        index: e.index,
        log_index: e.log_index,
        at_ms: e.at_ms,
        kind: e.kind.to_string(),
        module: e.module.clone(),
        node: e.node.clone(),
        detail: e
            .detail
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cause: e.cause,
    }
}
