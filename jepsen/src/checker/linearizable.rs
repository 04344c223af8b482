//! The linearizability checker: per module, the admin API's reads and
//! writes are linearizable against a register whose version only grows.
//!
//! Each op gets a [`Key`] (its version, writes before reads); the history is
//! linearizable iff no op completed before another was invoked with a
//! smaller key, which one `O(n log n)` [`sweep`] finds. The proof is on
//! [`linearizable`].

use std::collections::BTreeMap;

use super::index::{Index, MAX_LISTED, OPEN, describe_op, push_capped};
use super::{Bounds, LINEARIZABLE, Violation};
use crate::history::{Nanos, Op, Outcome, ReadValue, Record};

/// A version no placement reaches: the module is removed.
const REMOVED: u64 = u64::MAX;
/// Between the placements and [`REMOVED`]: a remove was applied and the
/// module shows `stopped` until its copy is known stopped (then the
/// cluster itself takes it to [`REMOVED`], as it writes placements).
const STOPPING: u64 = u64::MAX - 1;

/// A position in the module's life: versions only grow, and at one version
/// the write that establishes it comes before the reads that see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// 0 = not yet deployed, then the deploy's epoch, then placement epochs
    /// (Raft log indexes, all greater than the deploy's), then
    /// [`REMOVED`].
    version: u64,
    /// Writes (`false`) order before reads (`true`) of the same version.
    read: bool,
}

#[derive(Debug, Clone, Copy)]
struct LinOp<'a> {
    op: &'a Op,
    invoke: Nanos,
    /// [`OPEN`] for `Unknown` writes.
    complete: Nanos,
    key: Key,
}

/// Finds every op `B` with some `A` such that `A.complete < B.invoke` and
/// `A.key > B.key`, in `O(n log n)`: ops sorted by completion are swept
/// into a running maximum as the ops sorted by invocation pass them. Returns
/// how many such `B` there are and the first few `(A, B)` pairs (by `B`'s
/// invocation; `A` the greatest key completed before `B`).
fn sweep(ops: &[LinOp]) -> (usize, Vec<(usize, usize)>) {
    let mut by_complete: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].complete != OPEN)
        .collect();
    by_complete.sort_by_key(|&i| (ops[i].complete, i));
    let mut by_invoke: Vec<usize> = (0..ops.len()).collect();
    by_invoke.sort_by_key(|&i| (ops[i].invoke, i));
    let mut next = 0;
    let mut max: Option<usize> = None;
    let mut count = 0;
    let mut pairs = Vec::new();
    for &b in &by_invoke {
        while let Some(&a) = by_complete.get(next) {
            if ops[a].complete >= ops[b].invoke {
                break;
            }
            if max.is_none_or(|m| ops[a].key > ops[m].key) {
                max = Some(a);
            }
            next += 1;
        }
        if let Some(a) = max
            && ops[a].key > ops[b].key
        {
            count += 1;
            if pairs.len() < MAX_LISTED {
                pairs.push((a, b));
            }
        }
    }
    (count, pairs)
}

fn describe_version(v: u64) -> String {
    match v {
        0 => "0 (not deployed)".to_string(),
        REMOVED => "∞ (removed)".to_string(),
        STOPPING => "∞-1 (stopped, being removed)".to_string(),
        v => v.to_string(),
    }
}

/// Per module, the admin reads and writes are linearizable.
///
/// The model is a register whose version only grows: 0 = not yet deployed,
/// then the deploy's epoch `d`, then placements with increasing epochs (Raft
/// log indexes, all `> d`, written by the cluster itself, so they need no
/// client op), then ∞-1 = stopped (removed, its copy not yet known
/// stopped), then ∞ = removed (written by the cluster once the copy is
/// stopped). Each op gets a version:
///
/// - deploy `Ok` with epoch `d` writes `d`; a deploy `Unknown` (or `Ok`
///   without an epoch) writes a guessed `d` = (smallest epoch any read saw)
///   − 1, or 1 — any value below every placement orders the same; a refused
///   deploy is no write, and its module is skipped (a read seeing it is
///   reported by [`lost_or_resurrected`]);
/// - remove `Ok` or `Unknown` writes ∞-1, a refused one is no write;
/// - read `Present{state: "stopped"}` reads ∞-1; otherwise
///   `Present{epoch: Some(e)}` reads `e`, `Present{epoch: None}` (pending,
///   not yet placed) reads `d`;
/// - read `Absent` reads 0 if it may come before the deploy (invoked before
///   the deploy's acknowledgement, or the deploy never acknowledged), ∞ if a
///   remove that may apply was invoked before the read completed, and is a
///   lost deploy otherwise. When both are possible it reads ∞ if an op of
///   version > 0 completed before it was invoked (0 would then certainly be
///   a violation), else 0 (which then cannot be one); this choice is
///   monotone in time, so it never creates a violation another choice
///   would avoid.
///
/// `Unknown` writes never complete (their effect may land any time after
/// invocation). Order ops by key = (version, writes before reads). Then the
/// history is linearizable iff there are no `A`, `B` with
/// `A.complete < B.invoke` and `key(A) > key(B)`. Necessity: real time puts
/// `A` before `B` in any linearization, and keys never go down along one.
/// Sufficiency: give each op the point
/// `p(X) = max(X.invoke, max{Y.invoke : key(Y) < key(X)})`. Then
/// `p(X) >= X.invoke`, and `p(X) <= X.complete` because no `Y` of smaller
/// key is invoked after `X` completed; and `key(X) < key(Y)` implies
/// `p(X) <= p(Y)`. Ordering by (point, key) is thus a sequential order
/// within every op's interval, respecting real time, along which versions
/// never go down and every read follows the write of its version: each read
/// sees the register's current version (placements slotting in between as
/// needed). The check is an `O(n log n)` sweep (see `sweep`).
///
/// Also: two reads naming the same epoch name the same node.
pub fn linearizable(records: &[Record], _bounds: &Bounds) -> Vec<Violation> {
    linearizable_in(&Index::new(records))
}

pub(super) fn linearizable_in<'a>(idx: &Index<'a>) -> Vec<Violation> {
    const C: &str = LINEARIZABLE;
    let mut out = Vec::new();
    for (&name, m) in &idx.modules {
        let Some(deploy) = m.deploy() else { continue };
        if deploy.outcome == Outcome::Fail {
            continue;
        }
        let reads: Vec<&Op> = m
            .reads
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Ok && r.read.is_some())
            .collect();

        // Same epoch, same node.
        let mut node_of: BTreeMap<u64, &Op> = BTreeMap::new();
        let mut split = Vec::new();
        for &r in &reads {
            if let Some(ReadValue::Present {
                node,
                epoch: Some(e),
                ..
            }) = &r.read
            {
                match node_of.get(e) {
                    None => {
                        node_of.insert(*e, r);
                    }
                    Some(first) => {
                        if let Some(ReadValue::Present { node: n0, .. }) = &first.read
                            && n0 != node
                        {
                            split.push(format!(
                                "epoch {e} on two nodes: {} and {}",
                                describe_op(first),
                                describe_op(r)
                            ));
                        }
                    }
                }
            }
        }
        push_capped(&mut out, C, Some(name), "epochs on two nodes", split);

        let deploy_version = match (deploy.outcome, deploy.epoch) {
            (Outcome::Ok, Some(d)) => d,
            _ => node_of
                .keys()
                .next()
                .map_or(1, |e| e.saturating_sub(1).max(1)),
        };
        let deploy_complete = match deploy.outcome {
            Outcome::Ok => deploy.complete_ns,
            _ => OPEN,
        };
        let remove = m.remove_may_apply();

        let mut ops: Vec<LinOp> = Vec::new();
        let write = |o: &'a Op, version: u64| -> LinOp<'a> {
            LinOp {
                op: o,
                invoke: o.invoke_ns,
                complete: if o.outcome == Outcome::Unknown {
                    OPEN
                } else {
                    o.complete_ns
                },
                key: Key {
                    version,
                    read: false,
                },
            }
        };
        ops.push(write(deploy, deploy_version));
        if let Some(r) = remove {
            ops.push(write(r, STOPPING));
        }
        let mut ambiguous = Vec::new();
        let mut lost = Vec::new();
        for &r in &reads {
            let version = match &r.read {
                Some(ReadValue::Present { state, .. }) if state == "stopped" => STOPPING,
                Some(ReadValue::Present { epoch, .. }) => epoch.unwrap_or(deploy_version),
                _ => {
                    let before_deploy = r.invoke_ns < deploy_complete;
                    let after_remove = remove.is_some_and(|w| w.invoke_ns < r.complete_ns);
                    match (before_deploy, after_remove) {
                        (true, true) => {
                            ambiguous.push(r);
                            continue;
                        }
                        (true, false) => 0,
                        (false, true) => REMOVED,
                        (false, false) => {
                            lost.push(format!(
                                "lost deploy: {} after {}, and no remove invoked before it completed",
                                describe_op(r),
                                describe_op(deploy)
                            ));
                            continue;
                        }
                    }
                }
            };
            ops.push(LinOp {
                op: r,
                invoke: r.invoke_ns,
                complete: r.complete_ns,
                key: Key {
                    version,
                    read: true,
                },
            });
        }
        push_capped(&mut out, C, Some(name), "lost-deploy reads", lost);
        // Absent reads that may be 0 or ∞: ∞ iff something of version > 0
        // completed before them.
        let first_positive = ops
            .iter()
            .filter(|o| o.key.version > 0)
            .map(|o| o.complete)
            .min()
            .unwrap_or(OPEN);
        for r in ambiguous {
            let version = if first_positive < r.invoke_ns {
                REMOVED
            } else {
                0
            };
            ops.push(LinOp {
                op: r,
                invoke: r.invoke_ns,
                complete: r.complete_ns,
                key: Key {
                    version,
                    read: true,
                },
            });
        }

        let (count, pairs) = sweep(&ops);
        for (a, b) in pairs {
            let (a, b) = (&ops[a], &ops[b]);
            out.push(Violation::new(
                C,
                Some(name),
                format!(
                    "{} (version {}) completed before {} (version {}) was invoked",
                    describe_op(a.op),
                    describe_version(a.key.version),
                    describe_op(b.op),
                    describe_version(b.key.version),
                ),
            ));
        }
        if count > MAX_LISTED {
            out.push(Violation::new(
                C,
                Some(name),
                format!(
                    "… and {} more ops invoked after an op of a newer version completed (of {count})",
                    count - MAX_LISTED
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::checker::index::MILLI;
    use crate::checker::test_history::*;
    use crate::history::{Fencing, OpKind};

    fn lin(h: &[Record]) -> Vec<Violation> {
        linearizable(h, &bounds())
    }

    #[test]
    fn linearizable_clean_history_passes() {
        let h = vec![
            read("m", 0, 10, ReadValue::Absent),
            deploy("m", Fencing::AtMostOne, 5, 100, Outcome::Ok, Some(3)),
            // Concurrent with the deploy: either is fine.
            read("m", 20, 30, ReadValue::Absent),
            read("m", 40, 50, pending()),
            read("m", 110, 120, pending()),
            read("m", 130, 140, present("a1", 5)),
            read("m", 150, 160, present("a1", 5)),
            read("m", 170, 180, present("a2", 9)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 210, 220, present("a2", 9)),
            read("m", 230, 240, ReadValue::Absent),
            read("m", 310, 320, ReadValue::Absent),
        ];
        assert!(lin(&h).is_empty(), "{:#?}", lin(&h));
    }

    fn stopped(node: &str, epoch: u64) -> ReadValue {
        ReadValue::Present {
            node: Some(node.to_string()),
            epoch: Some(epoch),
            state: "stopped".to_string(),
        }
    }

    #[test]
    fn removed_module_stopped_then_absent_passes_and_back_is_caught() {
        let ok = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 5)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 310, 320, stopped("a1", 5)),
            read("m", 330, 340, ReadValue::Absent),
        ];
        assert!(lin(&ok).is_empty(), "{:#?}", lin(&ok));
        // Stopped again after it was gone: resurrected.
        let back = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 310, 320, ReadValue::Absent),
            read("m", 330, 340, stopped("a1", 5)),
        ];
        assert_eq!(lin(&back).len(), 1, "{:#?}", lin(&back));
        // Running after a stopped read: the removal went back.
        let back = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 310, 320, stopped("a1", 5)),
            read("m", 330, 340, present("a1", 5)),
        ];
        assert_eq!(lin(&back).len(), 1, "{:#?}", lin(&back));
    }

    #[test]
    fn stale_read_after_a_newer_read_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a2", 9)),
            read("m", 130, 140, present("a1", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].message
                .contains("(version 9) completed before read Present(node a1, epoch 5")
        );
        // Overlapping, they may be ordered either way.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 135, present("a2", 9)),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&h).is_empty());
    }

    #[test]
    fn same_epoch_on_two_nodes_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, present("a2", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("epoch 5 on two nodes"));
    }

    #[test]
    fn pending_read_counts_as_the_deploy_version() {
        // Pending before the placement is seen: fine.
        let ok = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, pending()),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&ok).is_empty());
        // Pending after a placement was read: stale.
        let stale = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, pending()),
        ];
        let v = lin(&stale);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("(version 5)") && v[0].message.contains("(version 3)"));
        // The same with an unknown deploy (its version guessed below 5).
        let stale = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, pending()),
        ];
        assert_eq!(lin(&stale).len(), 1);
    }

    #[test]
    fn pending_read_before_the_deploy_was_invoked_is_caught() {
        let h = vec![
            read("m", 0, 10, pending()),
            deploy("m", Fencing::AtMostOne, 20, 100, Outcome::Ok, Some(3)),
        ];
        assert_eq!(lin(&h).len(), 1);
    }

    #[test]
    fn absent_read_after_an_acked_deploy_is_a_lost_deploy() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, ReadValue::Absent),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.starts_with("lost deploy"));
        // With an unknown deploy it may simply not have happened (yet).
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, ReadValue::Absent),
            read("m", 130, 140, present("a1", 5)),
        ];
        assert!(lin(&h).is_empty());
        // But not after a read saw it.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Unknown, None),
            read("m", 110, 120, present("a1", 5)),
            read("m", 130, 140, ReadValue::Absent),
        ];
        assert_eq!(lin(&h).len(), 1, "{:#?}", lin(&h));
    }

    #[test]
    fn absent_read_during_a_slow_deploy_ack_and_a_remove() {
        // The deploy's ack is slow; meanwhile it was read, removed and read
        // absent: the absent read is after the remove, not before the deploy.
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 1000, Outcome::Ok, Some(3)),
            read("m", 10, 20, present("a1", 5)),
            remove("m", 30, 40, Outcome::Ok),
            read("m", 50, 60, ReadValue::Absent),
        ];
        assert!(lin(&h).is_empty(), "{:#?}", lin(&h));
    }

    #[test]
    fn present_after_an_acked_remove_is_caught() {
        let h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            remove("m", 200, 300, Outcome::Ok),
            read("m", 310, 320, present("a1", 5)),
        ];
        let v = lin(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("remove Ok"));
        // An unknown remove may land later; a refused one never.
        for outcome in [Outcome::Unknown, Outcome::Fail] {
            let h = vec![
                deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
                remove("m", 200, 300, outcome),
                read("m", 310, 320, present("a1", 5)),
            ];
            assert!(lin(&h).is_empty());
        }
    }

    #[test]
    fn violations_are_capped_per_module() {
        let mut h = vec![
            deploy("m", Fencing::AtMostOne, 0, 100, Outcome::Ok, Some(3)),
            read("m", 110, 120, present("a1", 9)),
        ];
        for i in 0..20 {
            h.push(read("m", 200 + 10 * i, 205 + 10 * i, present("a1", 5)));
        }
        let v = lin(&h);
        assert_eq!(v.len(), MAX_LISTED + 1, "{v:#?}");
        assert!(v[MAX_LISTED].message.contains("15 more"));
    }

    /// Naive `O(n²)` version of `sweep`: how many ops have a predecessor of
    /// greater key.
    fn naive(ops: &[LinOp]) -> usize {
        ops.iter()
            .filter(|b| {
                ops.iter()
                    .any(|a| a.complete != OPEN && a.complete < b.invoke && a.key > b.key)
            })
            .count()
    }

    #[test]
    fn sweep_agrees_with_the_naive_check() {
        let dummy = op("m", OpKind::Read, 0, 0, Outcome::Ok);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.gen_range(0..12);
            let ops: Vec<LinOp> = (0..n)
                .map(|_| {
                    let invoke = rng.gen_range(0..50u64);
                    LinOp {
                        op: &dummy,
                        invoke,
                        complete: if rng.gen_bool(0.1) {
                            OPEN
                        } else {
                            invoke + rng.gen_range(0..15)
                        },
                        key: Key {
                            version: rng.gen_range(0..4),
                            read: rng.gen_bool(0.7),
                        },
                    }
                })
                .collect();
            let (count, pairs) = sweep(&ops);
            assert_eq!(count, naive(&ops));
            for (a, b) in pairs {
                assert!(ops[a].complete < ops[b].invoke && ops[a].key > ops[b].key);
            }
        }
    }

    /// A history of a few modules executed one op at a time (linearization
    /// points strictly increasing, versions never decreasing); with
    /// `concurrent`, each op's interval is widened randomly around its
    /// point, so ops overlap but the history stays linearizable.
    fn generated(rng: &mut StdRng, concurrent: bool) -> Vec<Record> {
        enum Ev {
            Deploy(Outcome, u64),
            Remove(Outcome),
            Read(ReadValue),
        }
        let mut h = Vec::new();
        for m in 0..rng.gen_range(1..4) {
            let name = format!("m{m}");
            let mut evs = Vec::new();
            for _ in 0..rng.gen_range(0..4) {
                evs.push(Ev::Read(ReadValue::Absent));
            }
            let d = rng.gen_range(1..50);
            let outcome = if rng.gen_bool(0.2) {
                Outcome::Unknown
            } else {
                Outcome::Ok
            };
            evs.push(Ev::Deploy(outcome, d));
            for _ in 0..rng.gen_range(0..3) {
                evs.push(Ev::Read(pending()));
            }
            let mut e = d;
            for p in 0..rng.gen_range(0..5) {
                e += rng.gen_range(1..10);
                let node = format!("a{}", p % 3 + 1);
                for _ in 0..rng.gen_range(0..5) {
                    evs.push(Ev::Read(present(&node, e)));
                }
            }
            if rng.gen_bool(0.5) {
                let outcome = if rng.gen_bool(0.2) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                };
                evs.push(Ev::Remove(outcome));
                for _ in 0..rng.gen_range(0..4) {
                    evs.push(Ev::Read(ReadValue::Absent));
                }
            }
            let mut point = rng.gen_range(0..1000u64) * 10;
            let mut deploy_invoke = 0;
            for ev in evs {
                point += rng.gen_range(10..100);
                let (mut invoke, complete) = if concurrent {
                    (
                        point.saturating_sub(rng.gen_range(0..300)),
                        point + rng.gen_range(0..300),
                    )
                } else {
                    (point - 2, point + 2)
                };
                let client = rng.gen_range(0..8);
                let mut o = match ev {
                    Ev::Deploy(outcome, d) => {
                        deploy_invoke = invoke;
                        let mut o = op(
                            &name,
                            OpKind::Deploy {
                                fencing: Fencing::AtMostOne,
                            },
                            invoke,
                            complete,
                            outcome,
                        );
                        o.epoch = (outcome == Outcome::Ok).then_some(d);
                        o
                    }
                    Ev::Remove(outcome) => {
                        invoke = invoke.max(deploy_invoke + 1);
                        op(&name, OpKind::Remove, invoke, complete, outcome)
                    }
                    Ev::Read(v) => Op {
                        read: Some(v),
                        ..op(&name, OpKind::Read, invoke, complete, Outcome::Ok)
                    },
                };
                o.client = client;
                h.push(Record::Op(o));
            }
        }
        h
    }

    #[test]
    fn generated_linearizable_histories_pass() {
        let mut rng = StdRng::seed_from_u64(42);
        for i in 0..3000 {
            let concurrent = i % 2 == 1;
            let h = generated(&mut rng, concurrent);
            let v = lin(&h);
            assert!(
                v.is_empty(),
                "history {i} (concurrent: {concurrent}): {v:#?}\n{h:#?}"
            );
        }
    }

    #[test]
    fn generated_histories_with_a_stale_read_fail() {
        // A sequential history plus one read, after everything, of a version
        // older than the newest one read: always caught.
        let mut rng = StdRng::seed_from_u64(43);
        let mut checked = 0;
        for _ in 0..500 {
            let mut h = generated(&mut rng, false);
            let Some((name, e, end)) = h.iter().rev().find_map(|r| match r {
                Record::Op(Op {
                    module,
                    read: Some(ReadValue::Present { epoch: Some(e), .. }),
                    complete_ns,
                    ..
                }) if *e > 1 => Some((module.clone(), *e, *complete_ns)),
                _ => None,
            }) else {
                continue;
            };
            let t = (end - T0) / MILLI + 1_000;
            h.push(read(&name, t, t + 1, present("a9", e - 1)));
            assert!(!lin(&h).is_empty(), "{h:#?}");
            checked += 1;
        }
        assert!(checked > 100);
    }

    #[test]
    fn tens_of_thousands_of_reads_are_quick() {
        let mut h = vec![deploy(
            "m",
            Fencing::AtMostOne,
            0,
            100,
            Outcome::Ok,
            Some(3),
        )];
        for i in 0..50_000u64 {
            let e = 5 + i / 1000;
            h.push(read("m", 200 + 3 * i, 205 + 3 * i, present("a1", e)));
        }
        let start = std::time::Instant::now();
        assert!(lin(&h).is_empty());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
