//! The directives for a node's agent, derived from the committed state and
//! the node's module table (what its agent says it has installed).
//!
//! Level-triggered: a directive is repeated in every heartbeat reply until
//! the agent's table shows it took effect, so agents treat repeats as
//! no-ops. Derived from committed state only, never from a plan in flight,
//! so what an agent is told has always been decided durably first. Every
//! directive carries the placement's epoch; an agent refuses one older than
//! the highest epoch it has seen for the module (fencing).
//!
//! - **install** what is placed on the node, once its package is retrieved
//!   and its previous copy released, and the node does not have that epoch;
//! - **restore** a restoring module whose restore order the table does not
//!   show executed yet;
//! - **stop** what the node has but is not placed there (any more), or
//!   what is being removed (`stopped`: its record goes once the table shows
//!   it stopped), except
//!   the old copy of an at-least-one module during a rollout to another
//!   node, which runs until the new copy is healthy (the placement's
//!   `previous` is then released);
//! - **prefetch** the package of a module placed elsewhere that would fail
//!   over to this node next ([`crate::prestage::prefetches_for`], asked
//!   for beside this function by `crate::observe`).
//!
//! An at-least-one rollout's new copy is installed without waiting for the
//! release of the old one; a module held for a quarantined package
//! version is not installed anywhere.
//!
//! None at all while the node's table names another cluster than this one
//! (its agent still holds that cluster's epochs, which this cluster's
//! cannot be compared with): the reply names this cluster, the agent adopts
//! it and sends its table again, and from then on it is directed.
//!
//! Pure: a function of its arguments.

use std::collections::BTreeMap;

use proto::heartbeat::{Directive, Install, ModuleTable, Restore, Stop, TableEntry};
use proto::manifest::ConfigPackage;

use proto::spec::Fencing;

use crate::state::{ClusterState, ModuleRecord, ModuleState, PlaceCause};

/// An at-least-one module moving to another revision on another node: its
/// old copy keeps running until the new one is healthy.
fn surging(m: &ModuleRecord) -> bool {
    m.spec.fencing == Fencing::AtLeastOne
        && m.placement
            .as_ref()
            .is_some_and(|p| matches!(p.cause, PlaceCause::Rollout { .. }) && p.previous.is_some())
}

/// The directives for a node's agent, derived from committed state and the
/// node's table: install what is placed there and not installed, repeat a
/// restore not yet executed, stop what is not placed there.
pub fn directives_for(
    state: &ClusterState,
    node: &str,
    table: &ModuleTable,
    depmgr: &str,
) -> Vec<Directive> {
    let mut out = Vec::new();
    if table.cluster != 0 && table.cluster != state.cluster_id {
        return out;
    }
    let installed: BTreeMap<&str, &TableEntry> = table
        .modules
        .iter()
        .map(|e| (e.module.as_str(), e))
        .collect();
    for (name, m) in state.modules_on(node) {
        let (Some(p), Some(package)) = (&m.placement, &m.package) else {
            continue;
        };
        if matches!(
            m.state,
            ModuleState::Failed | ModuleState::Stopped | ModuleState::Pending
        ) || (p.previous.is_some() && !surging(m))
            || state.versions.get(name).is_some_and(|v| v.held.is_some())
        {
            continue;
        }
        match installed.get(name.as_str()) {
            Some(e) if e.epoch > p.epoch => {}
            Some(e) if e.epoch == p.epoch => {
                if m.state == ModuleState::Restoring && e.restore_seq < m.restore_seq {
                    out.push(Directive::Restore(Restore {
                        module: name.clone(),
                        epoch: p.epoch,
                        seq: m.restore_seq,
                        backoff_ms: m.spec.restart.backoff_ms,
                    }));
                }
            }
            _ => out.push(Directive::Install(Install {
                module: name.clone(),
                epoch: p.epoch,
                fencing: m.spec.fencing,
                package: ConfigPackage::clone(package),
                depmgr: depmgr.to_string(),
            })),
        }
    }
    for e in &table.modules {
        // A module being removed (`stopped`) is placed nowhere any more.
        let m = state
            .modules
            .get(&e.module)
            .filter(|m| m.state != ModuleState::Stopped);
        let placed_here = m
            .and_then(|m| m.placement.as_ref())
            .is_some_and(|p| p.node == node && p.epoch >= e.epoch);
        let old_copy_kept = m.is_some_and(|m| {
            surging(m)
                && m.placement
                    .as_ref()
                    .is_some_and(|p| p.previous.as_deref() == Some(node))
        });
        if !placed_here && !old_copy_kept {
            out.push(Directive::Stop(Stop {
                module: e.module.clone(),
                epoch: state.last_index.max(e.epoch),
            }));
        }
    }
    out
}
