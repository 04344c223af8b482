//! Drains: an operator empties a node one module at a time, and moving is
//! not failing (no failover, no restore attempt counted).

use proto::heartbeat::ModuleStatus;

use super::*;

#[test]
fn drain_moves_modules_one_by_one_without_counting_failures() {
    let mut sim = Sim::new(&["a", "b"]);
    for name in ["m1", "m2"] {
        let mut s = spec(name);
        s.placement.node = Some("a".into());
        sim.running(s);
    }
    sim.commit(vec![Transition::Drain(Drain { node: "a".into() })]);
    sim.step();
    let moving: Vec<_> = ["m1", "m2"]
        .iter()
        .filter(|m| sim.node_of(m) == "b")
        .collect();
    assert_eq!(moving.len(), 1, "one at a time");
    for _ in 0..2 {
        sim.execute("a", ModuleStatus::Stopped);
        sim.settle();
        sim.execute("b", ModuleStatus::Running);
        sim.run_for(1200, &["a", "b"]);
    }
    for m in ["m1", "m2"] {
        assert_eq!(sim.node_of(m), "b");
        let r = sim.module(m);
        assert_eq!(
            (r.state, r.failovers, r.restore_attempts),
            (ModuleState::Running, 0, 0)
        );
    }
}
