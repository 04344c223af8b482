//! Builders of small histories for the checkers' unit tests: times in
//! milliseconds after a plausible monotonic origin, a copy's ledger as one
//! `Alive` every 50 ms, three replicas agreeing in every observation, and
//! [`base`], a clean run the tests break one guarantee at a time.

use super::index::{MILLI, SECOND};
use super::{Bounds, Violation};
use crate::history::{
    Alive, Fault, FaultKind, Fencing, ModuleSeen, Nanos, Observation, Op, OpKind, Outcome,
    ReadValue, Record, ReplicaView,
};

/// A plausible monotonic origin, so no time is near zero.
pub(super) const T0: Nanos = 1_000 * SECOND;

pub(super) fn ms(x: u64) -> Nanos {
    T0 + x * MILLI
}

pub(super) fn bounds() -> Bounds {
    Bounds::default()
}

pub(super) fn op(module: &str, kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
    Op {
        client: 1,
        module: module.to_string(),
        kind,
        invoke_ns: ms(invoke),
        complete_ns: ms(complete),
        outcome,
        read: None,
        epoch: None,
        error: None,
    }
}

pub(super) fn deploy(
    module: &str,
    fencing: Fencing,
    invoke: u64,
    complete: u64,
    outcome: Outcome,
    epoch: Option<u64>,
) -> Record {
    Record::Op(Op {
        epoch,
        ..op(
            module,
            OpKind::Deploy { fencing },
            invoke,
            complete,
            outcome,
        )
    })
}

pub(super) fn remove(module: &str, invoke: u64, complete: u64, outcome: Outcome) -> Record {
    Record::Op(op(module, OpKind::Remove, invoke, complete, outcome))
}

pub(super) fn read(module: &str, invoke: u64, complete: u64, v: ReadValue) -> Record {
    Record::Op(Op {
        read: Some(v),
        ..op(module, OpKind::Read, invoke, complete, Outcome::Ok)
    })
}

pub(super) fn present(node: &str, epoch: u64) -> ReadValue {
    ReadValue::Present {
        node: Some(node.to_string()),
        epoch: Some(epoch),
        state: "running".to_string(),
    }
}

pub(super) fn pending() -> ReadValue {
    ReadValue::Present {
        node: None,
        epoch: None,
        state: "pending".to_string(),
    }
}

/// A copy's ledger: one `Alive` every 50 ms over `[from, to]` (ms).
pub(super) fn alive(
    module: &str,
    node: &str,
    epoch: u64,
    pid: u32,
    from: u64,
    to: u64,
) -> Vec<Record> {
    (from..=to)
        .step_by(50)
        .map(|t| {
            Record::Alive(Alive {
                module: module.to_string(),
                node: node.to_string(),
                epoch,
                pid,
                at_ns: ms(t),
            })
        })
        .collect()
}

pub(super) fn seen(name: &str, node: &str, epoch: u64, state: &str) -> ModuleSeen {
    ModuleSeen {
        name: name.to_string(),
        node: Some(node.to_string()),
        epoch: Some(epoch),
        state: state.to_string(),
    }
}

/// Three replicas agreeing on leader 1 and on `modules`.
pub(super) fn obs(at: u64, modules: &[ModuleSeen]) -> Record {
    Record::Observation(Observation {
        at_ns: ms(at),
        replicas: (1..=3)
            .map(|id| ReplicaView {
                id,
                leader: Some(1),
                last_applied: 100,
                modules: modules.to_vec(),
            })
            .collect(),
    })
}

pub(super) fn fault(id: u32, kind: FaultKind, targets: &[&str], start: u64, end: u64) -> Record {
    Record::Fault(Fault {
        id,
        kind,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        start_ns: ms(start),
        end_ns: ms(end),
        took_effect: true,
        evidence: "seen".to_string(),
    })
}

pub(super) fn healed(at: u64) -> Record {
    Record::Healed { at_ns: ms(at) }
}

pub(super) fn of<'v>(vs: &'v [Violation], checker: &str) -> Vec<&'v Violation> {
    vs.iter().filter(|v| v.checker == checker).collect()
}

pub(super) fn mentions(vs: &[Violation], module: &str, text: &str) -> bool {
    vs.iter()
        .any(|v| v.module.as_deref() == Some(module) && v.message.contains(text))
}

/// A clean run: m1 (at-most-one) deployed and running on a1 epoch 5;
/// m2 (at-least-one) deployed, run on a2 epoch 6, removed; a pause fault
/// on a3; healed at 5 s, observed every 500 ms from 5.5 s to 12 s.
pub(super) fn base() -> Vec<Record> {
    let mut h = vec![
        read("m1", 0, 50, ReadValue::Absent),
        deploy("m1", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
        deploy("m2", Fencing::AtLeastOne, 10, 120, Outcome::Ok, Some(4)),
        read("m1", 110, 150, pending()),
        read("m1", 300, 320, present("a1", 5)),
        read("m2", 400, 420, present("a2", 6)),
        remove("m2", 2000, 2100, Outcome::Ok),
        read("m2", 2200, 2250, ReadValue::Absent),
        fault(1, FaultKind::PauseAgent, &["a3"], 1000, 2000),
        healed(5000),
    ];
    h.extend(alive("m1", "a1", 5, 10, 200, 12000));
    h.extend(alive("m2", "a2", 6, 20, 300, 2050));
    for t in (5500..=12000).step_by(500) {
        h.push(obs(t, &[seen("m1", "a1", 5, "running")]));
    }
    h
}

/// `base` with the observations of m1 replaced from `from` on (ms).
pub(super) fn with_obs_from(mut h: Vec<Record>, from: u64, modules: &[ModuleSeen]) -> Vec<Record> {
    h.retain(|r| !matches!(r, Record::Observation(o) if o.at_ns >= ms(from)));
    for t in (from..=12000).step_by(500) {
        h.push(obs(t, modules));
    }
    h
}
