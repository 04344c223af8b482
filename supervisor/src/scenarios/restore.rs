//! A module deployed, installed and restored in place (claim 1, first
//! half): placement on the preferred node, install directive, healthy after
//! `min_healthy_ms`, a crash turned into a restore order in the same round
//! trip, and a restore that was not executed repeated, not counted twice.

use proto::heartbeat::{Directive, ModuleStatus};

use super::*;

#[test]
fn deploy_places_on_preferred_node_and_installs() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let mut s = spec("web");
    s.placement.node = Some("b".into());
    sim.deploy(s);
    sim.settle();
    assert_eq!(sim.node_of("web"), "b");
    let d = sim.directives("b");
    assert!(
        matches!(&d[..], [Directive::Install(i)] if i.module == "web" && i.epoch == sim.module("web").placement.as_ref().unwrap().epoch)
    );
    assert!(sim.directives("a").is_empty());
    sim.execute("b", ModuleStatus::Running);
    sim.run_for(600, &["a", "b", "c"]);
    assert_eq!(
        sim.module("web").state,
        ModuleState::Installing,
        "not healthy long enough yet"
    );
    sim.run_for(600, &["a", "b", "c"]);
    assert_eq!(sim.module("web").state, ModuleState::Running);
    assert_eq!(
        sim.kinds("web"),
        [
            EventKind::ModuleDeployed,
            EventKind::Placed,
            EventKind::PackageRetrieved,
            EventKind::Installed
        ]
    );
}

#[test]
fn crash_is_restored_in_place() {
    let mut sim = Sim::new(&["a", "b"]);
    let node = sim.running(spec("web"));
    sim.set_status(&node, "web", ModuleStatus::Failed);
    sim.step();
    let m = sim.module("web");
    assert_eq!(
        (m.state, m.restore_attempts, m.restore_seq),
        (ModuleState::Restoring, 1, 1)
    );
    // The restore directive goes out in the same round trip.
    assert!(
        matches!(&sim.directives(&node)[..], [Directive::Restore(r)] if r.seq == 1 && r.backoff_ms == 100)
    );
    sim.execute(&node, ModuleStatus::Running);
    assert!(
        sim.directives(&node).is_empty(),
        "restore not repeated once executed"
    );
    sim.run_for(1200, &["a", "b"]);
    let m = sim.module("web");
    assert_eq!((m.state, m.restore_attempts), (ModuleState::Running, 0));
    assert_eq!(sim.node_of("web"), node);
    assert!(sim.kinds("web").ends_with(&[
        EventKind::FailureDetected,
        EventKind::RestoreOrdered,
        EventKind::Restored
    ]));
}

#[test]
fn restore_not_yet_executed_is_repeated_not_counted() {
    let mut sim = Sim::new(&["a"]);
    sim.running(spec("web"));
    sim.set_status("a", "web", ModuleStatus::Failed);
    sim.step();
    // The agent never got the reply: still failed with restore_seq 0.
    sim.run_for(900, &["a"]);
    assert_eq!(sim.module("web").restore_attempts, 1);
    assert!(matches!(&sim.directives("a")[..], [Directive::Restore(r)] if r.seq == 1));
}
