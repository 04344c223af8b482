//! What-if (`POST /v1/plan`): the pure planner run on a copy of the state,
//! with an operator's action or a node loss applied to it, until it
//! decides nothing more. Nothing is committed; the answer names the moves,
//! the modules that would wait or fail, and how long each move keeps a
//! module down.
//!
//! The copy goes through what would really happen:
//! - `drain`: the `Drain` transition, then the planner's passes;
//! - `lose`: the node falls silent now: the failure detector (the
//!   planner's own) sees it silent for the TTL (suspect: at-least-one
//!   modules move), then for the lease plus the drift margin (down: the
//!   rest move), exactly the two verdicts a `kill -9` of its agent leads
//!   to;
//! - `deploy` / `update`: the `Deploy` / `Update` transition, then the
//!   passes.
//!
//! Between passes, every placement the simulation made is assumed to go
//! well (its previous copy stops, it installs and runs healthy), so that a
//! drain moves its next module, as it does once the previous one is up.
//! Installs are not simulated: a move's down time is the part the
//! cluster's own timing decides, and its install adds to it.
//!
//! Pure, like `plan`: no clock (`now` is passed in), no I/O.

use proto::record::Event;
use proto::spec::Fencing;

use crate::observe::Observed;
use crate::state::{
    Batch, ClusterState, Deploy, Drain, Healthy, ModuleState, Outcome, PlaceCause, Rejection,
    ReleasePrevious, Transition, Update,
};
use crate::views::{PlanRequest, PlanView, PlannedMove, PlannedStep, PlannedWait};

use super::{Timing, plan};

/// Most planning passes one prediction runs (a drain of a node with many
/// modules moves one per pass).
const MAX_PASSES: usize = 10_000;

/// Predicts what `request` would lead to. `Err` when the action itself
/// would be refused (unknown node, already draining, ...).
pub fn what_if(
    state: &ClusterState,
    observed: &Observed,
    now: u64,
    timing: Timing,
    request: &PlanRequest,
) -> Result<PlanView, Rejection> {
    let mut sim = Sim {
        state: state.clone(),
        observed: observed.clone(),
        index: state.last_index,
        now,
        timing,
        steps: Vec::new(),
    };
    let first_epoch = state.last_index + 1;
    let detector = timing.covering(state.lease);
    let mut assumptions = vec![
        "nothing else changes meanwhile (no other failure, no other operator action)".to_string(),
        "every install the plan starts works, and each module runs healthy".to_string(),
    ];
    let action = match request {
        PlanRequest::Drain { node } => {
            sim.commit(vec![Transition::Drain(Drain { node: node.clone() })], true)?;
            sim.settle(first_epoch);
            "drain"
        }
        PlanRequest::Lose { node } => {
            let record = state
                .nodes
                .get(node)
                .ok_or_else(|| Rejection::NotFound(format!("unknown node {node:?}")))?;
            if record.health == crate::state::NodeHealth::Down {
                return Err(Rejection::Conflict(format!(
                    "node {node:?} is already down: its modules have moved or wait"
                )));
            }
            // The node falls silent now while the others go on
            // heartbeating: the copy's clock moves on to each verdict of
            // the detector (with the leader's own grace window, as it
            // really runs), every other node heard at that moment.
            let ttl = detector.heartbeat_ttl_ms;
            let down = detector.down_after_ms();
            sim.observed.nodes.entry(node.clone()).or_default();
            for silent in [ttl, down] {
                sim.now = now.saturating_add(silent);
                for (name, obs) in sim.observed.nodes.iter_mut() {
                    obs.last_seen_ms = if name == node { now } else { sim.now };
                }
                sim.settle(first_epoch);
            }
            assumptions.push(format!(
                "{node}'s agent stops heartbeating now: suspect after {ttl} ms, down after {down} ms"
            ));
            "lose"
        }
        PlanRequest::Deploy { spec } => {
            spec.validate()
                .map_err(|e| Rejection::Invalid(format!("module spec: {e}")))?;
            sim.commit(
                vec![Transition::Deploy(Deploy { spec: spec.clone() })],
                true,
            )?;
            sim.settle(first_epoch);
            "deploy"
        }
        PlanRequest::Update { spec } => {
            spec.validate()
                .map_err(|e| Rejection::Invalid(format!("module spec: {e}")))?;
            sim.commit(
                vec![Transition::Update(Update { spec: spec.clone() })],
                true,
            )?;
            sim.settle(first_epoch);
            "update"
        }
    };
    let mut view = PlanView {
        action: action.to_string(),
        transitions: sim.steps,
        assumptions,
        ..PlanView::default()
    };
    let lost = match request {
        PlanRequest::Lose { node } => Some(node.as_str()),
        _ => None,
    };
    for (name, after) in &sim.state.modules {
        let before = state.modules.get(name);
        let from = before
            .and_then(|m| m.placement.as_ref())
            .map(|p| p.node.clone());
        let placed = after.placement.as_ref().filter(|p| p.epoch >= first_epoch);
        if let Some(p) = placed {
            let fencing = after.spec.fencing;
            let (down_ms, down) = down_time(&p.cause, fencing, from.as_deref(), &p.node, detector);
            view.moves.push(PlannedMove {
                module: name.clone(),
                from: from.clone(),
                to: p.node.clone(),
                cause: cause_name(&p.cause).to_string(),
                fencing: fencing_name(fencing).to_string(),
                down_ms_at_least: down_ms,
                down,
            });
            continue;
        }
        let changed = before.is_none_or(|b| b.state != after.state || b.reason != after.reason);
        let reason = after.reason.clone().unwrap_or_default();
        match after.state {
            ModuleState::Failed if changed => view.failed.push(PlannedWait {
                module: name.clone(),
                reason,
            }),
            ModuleState::FailingOver | ModuleState::Pending if changed => {
                view.waiting.push(PlannedWait {
                    module: name.clone(),
                    reason: if reason.is_empty() {
                        "no eligible node is ready".to_string()
                    } else {
                        reason
                    },
                })
            }
            // On the lost node and still there: it waits for a node.
            _ if lost.is_some()
                && from.as_deref() == lost
                && after.state != ModuleState::Failed =>
            {
                view.waiting.push(PlannedWait {
                    module: name.clone(),
                    reason: if reason.is_empty() {
                        "no eligible node is ready".to_string()
                    } else {
                        reason
                    },
                })
            }
            _ => {}
        }
    }
    Ok(view)
}

/// The copy the prediction runs on.
struct Sim {
    state: ClusterState,
    observed: Observed,
    index: u64,
    now: u64,
    timing: Timing,
    steps: Vec<PlannedStep>,
}

impl Sim {
    /// Applies one entry's worth of transitions to the copy; with `strict`
    /// a rejection is the answer (the operator's own action). The events it
    /// records are the prediction's steps when `record`.
    fn commit(&mut self, transitions: Vec<Transition>, strict: bool) -> Result<(), Rejection> {
        self.apply(transitions, strict, true)
    }

    fn apply(
        &mut self,
        transitions: Vec<Transition>,
        strict: bool,
        record: bool,
    ) -> Result<(), Rejection> {
        self.index += 1;
        let seen = self.state.next_event;
        let batch = Batch {
            at_ms: self.now,
            transitions,
        };
        let response = self.state.apply(self.index, &batch);
        if strict && let Some(Outcome::Rejected(r)) = response.outcomes.first() {
            return Err(r.clone());
        }
        if record {
            let new = self.state.events.iter().filter(|e| e.index > seen);
            self.steps.extend(new.map(step));
        }
        Ok(())
    }

    /// Planning passes until one decides nothing; after each, the
    /// placements made since `first_epoch` are assumed to come up.
    fn settle(&mut self, first_epoch: u64) {
        for _ in 0..MAX_PASSES {
            let p = plan(&self.state, &self.observed, self.now, self.timing);
            // Lease terms and the cluster id are bookkeeping, not decisions.
            let decisions: Vec<Transition> = p
                .transitions
                .into_iter()
                .filter(|t| {
                    !matches!(
                        t,
                        Transition::RecordLease(_) | Transition::RecordClusterId(_)
                    )
                })
                .collect();
            let completions = self.completions(first_epoch);
            if decisions.is_empty() && completions.is_empty() {
                return;
            }
            if !decisions.is_empty() {
                let _ = self.apply(decisions, false, true);
            }
            if !completions.is_empty() {
                let _ = self.apply(completions, false, false);
            }
        }
    }

    /// What the assumption that every placement comes up adds: its
    /// previous copy released, then healthy.
    fn completions(&self, first_epoch: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        for (name, m) in &self.state.modules {
            let Some(p) = &m.placement else { continue };
            if p.epoch < first_epoch
                || !matches!(m.state, ModuleState::Installing | ModuleState::FailingOver)
                || m.reason.is_some()
            {
                continue;
            }
            if p.previous.is_some() {
                out.push(Transition::ReleasePrevious(ReleasePrevious {
                    module: name.clone(),
                    epoch: p.epoch,
                }));
            }
            out.push(Transition::Healthy(Healthy {
                module: name.clone(),
                epoch: p.epoch,
            }));
        }
        out
    }
}

fn step(e: &Event) -> PlannedStep {
    PlannedStep {
        kind: e.kind.to_string(),
        module: e.module.clone(),
        node: e.node.clone(),
        text: e.explain(),
    }
}

fn cause_name(cause: &PlaceCause) -> &'static str {
    match cause {
        PlaceCause::Initial => "initial",
        PlaceCause::Failover { .. } => "failover",
        PlaceCause::Drain => "drain",
        PlaceCause::NodeLost { .. } => "node_lost",
        PlaceCause::Rollout { .. } => "rollout",
    }
}

fn fencing_name(f: Fencing) -> &'static str {
    match f {
        Fencing::AtMostOne => "at-most-one",
        Fencing::AtLeastOne => "at-least-one",
    }
}

/// How long a move keeps the module down, by the cluster's own timing (its
/// install on `to` adds to it), and in words.
fn down_time(
    cause: &PlaceCause,
    fencing: Fencing,
    from: Option<&str>,
    to: &str,
    t: Timing,
) -> (u64, String) {
    let from_name = from.unwrap_or("its node");
    match (cause, fencing) {
        (PlaceCause::Initial, _) => (0, format!("nothing stops: it starts on {to}")),
        (PlaceCause::NodeLost { .. }, Fencing::AtLeastOne) => (
            t.heartbeat_ttl_ms,
            format!(
                "down with {from_name} until it is suspect ({} ms), then until it runs on {to}",
                t.heartbeat_ttl_ms
            ),
        ),
        (PlaceCause::NodeLost { .. }, Fencing::AtMostOne) => (
            t.down_after_ms(),
            format!(
                "down with {from_name} until its lease has surely run out ({} ms: lease {} + drift {}), then until it runs on {to}",
                t.down_after_ms(),
                t.lease_ms,
                t.drift_ms
            ),
        ),
        (PlaceCause::Drain | PlaceCause::Failover { .. }, Fencing::AtMostOne) => (
            0,
            format!("stops on {from_name} first; down until it runs on {to}"),
        ),
        (PlaceCause::Drain | PlaceCause::Failover { .. }, Fencing::AtLeastOne) => (
            0,
            format!("starts on {to} while its copy on {from_name} stops"),
        ),
        (PlaceCause::Rollout { .. }, _) if from == Some(to) => (
            0,
            format!("the agent on {to} stops the old revision, then starts the new one"),
        ),
        (PlaceCause::Rollout { .. }, Fencing::AtLeastOne) => (
            0,
            format!("the old revision on {from_name} runs until the new one is healthy on {to}"),
        ),
        (PlaceCause::Rollout { .. }, Fencing::AtMostOne) => (
            0,
            format!("stops on {from_name} first; down until the new revision runs on {to}"),
        ),
    }
}
