//! The table as a planner: tables of (state, input) → effects, each effect
//! written as a short line so a row reads like a script.

use std::path::PathBuf;

use proto::heartbeat::{Install, ModuleStatus, ReportKind, Restore, Stop};
use proto::manifest::{ArtifactRef, Manifest};

use super::*;
use crate::Error;
use crate::manager::view::NodeIdentity;
use proto::heartbeat::Directive;

const GRACE: Duration = Duration::from_millis(1000);

fn config() -> TableConfig {
    TableConfig {
        incarnation: 7,
        stop_grace: GRACE,
        default_depmgr: Some("http://fallback:1".into()),
        shutdown: CancellationToken::new(),
    }
}

fn package(health: bool) -> ConfigPackage {
    let extra = if health {
        "[health]\nexec = [\"true\"]\n"
    } else {
        ""
    };
    ConfigPackage {
        manifest: Manifest::from_toml(&format!(
            "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"\n{extra}"
        ))
        .expect("manifest"),
        artifacts: vec![ArtifactRef {
            name: "web".into(),
            version: "1.0.0".into(),
            digest: "ab".repeat(32),
        }],
    }
}

fn install(epoch: Epoch, fencing: Fencing) -> Directive {
    Directive::Install(Install {
        module: "web".into(),
        epoch,
        fencing,
        package: package(false),
        depmgr: String::new(),
    })
}
fn restore(epoch: Epoch, seq: u32) -> Directive {
    Directive::Restore(Restore {
        module: "web".into(),
        epoch,
        seq,
        backoff_ms: 0,
    })
}
fn stop(epoch: Epoch) -> Directive {
    Directive::Stop(Stop {
        module: "web".into(),
        epoch,
    })
}

fn launch() -> Launch {
    Launch {
        program: PathBuf::from("/bin/true"),
        args: vec![],
        dir: PathBuf::from("/"),
        env: vec![],
        log: PathBuf::from("/dev/null"),
        rotation: Default::default(),
    }
}

/// One line per effect.
fn describe(effects: &[Effect]) -> Vec<String> {
    let stopping = |old: &Option<ProcessHandle>| match old {
        Some(h) => format!(" (stop pid {})", h.pid),
        None => String::new(),
    };
    effects
        .iter()
        .map(|e| match e {
            Effect::Persist((_, p)) => {
                let modules: Vec<String> = p
                    .modules
                    .iter()
                    .map(|m| format!("{}@{}", m.name, m.epoch))
                    .collect();
                let epochs: Vec<String> = p
                    .epochs
                    .iter()
                    .map(|(n, r)| match r.stopped_at {
                        Some(s) => format!("{n}:{}/stop {s}", r.highest),
                        None => format!("{n}:{}", r.highest),
                    })
                    .collect();
                format!(
                    "persist [{}] epochs [{}]",
                    modules.join(" "),
                    epochs.join(" ")
                )
            }
            Effect::Notify => "notify".into(),
            Effect::LeaseChanged => "lease changed".into(),
            Effect::Spawn(Task::Install { install, old, .. }) => format!(
                "install {}@{} from {}{}",
                install.module,
                install.epoch,
                install.depmgr,
                stopping(old)
            ),
            Effect::Spawn(Task::Restore { module, old, .. }) => {
                format!("restore {module}{}", stopping(old))
            }
            Effect::Spawn(Task::Stop { module, old, .. }) => {
                format!("stop {module}{}", stopping(old))
            }
            Effect::Stop(h) => format!("stop pid {}", h.pid),
            Effect::Start {
                module,
                after_install,
                ..
            } => format!(
                "start {module} after {}",
                if *after_install { "install" } else { "restore" }
            ),
            Effect::Launch(p) => format!("launch {}@{} seq {}", p.module, p.epoch, p.restore_seq),
            Effect::Probe(p) => format!("probe {}", p.module),
            Effect::Fence(v) => {
                let v: Vec<String> = v
                    .iter()
                    .map(|v| format!("{} pid {}", v.module, v.handle.pid))
                    .collect();
                format!("fence [{}]", v.join(", "))
            }
            Effect::StopAll(h) => {
                let pids: Vec<String> = h.iter().map(|h| h.pid.to_string()).collect();
                format!("stop all [{}]", pids.join(" "))
            }
            Effect::RemovePlacement { module, epoch } => format!("rm {module}/{epoch}"),
            Effect::KeepOnlyPlacement { module, keep } => format!("keep only {module}/{keep}"),
            Effect::ForgetFiles { module } => format!("forget files of {module}"),
            Effect::Prefetch(p) => format!("prefetch {}@{}", p.module, p.epoch),
        })
        .collect()
}

/// A reply of one directive whose snapshot saved: the snapshot (as a
/// `Persist`, when there is one), then the effects of executing it.
fn reply(t: &mut Table, d: Directive) -> Vec<Effect> {
    reply_of(t, vec![d], Ok(()))
}

/// A reply of `ds` whose save ended with `saved`.
fn reply_of(t: &mut Table, ds: Vec<Directive>, saved: Result<(), String>) -> Vec<Effect> {
    reply_from(t, 0, ds, saved)
}

/// A reply of cluster `cluster` carrying `ds`, whose save ended with `saved`.
fn reply_from(
    t: &mut Table,
    cluster: u64,
    ds: Vec<Directive>,
    saved: Result<(), String>,
) -> Vec<Effect> {
    let mut plan = t.plan_reply(cluster, ds);
    let mut effects: Vec<Effect> = plan
        .snapshot
        .take()
        .map(Effect::Persist)
        .into_iter()
        .collect();
    effects.extend(t.execute_reply(plan, saved));
    effects
}

/// The `op` of the task among `effects`.
fn task_op(effects: &[Effect]) -> u64 {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Spawn(Task::Install { op, .. })
            | Effect::Spawn(Task::Restore { op, .. })
            | Effect::Spawn(Task::Stop { op, .. }) => Some(*op),
            _ => None,
        })
        .expect("a task")
}

/// A table driven through its own transitions, and the module's current op.
struct World {
    t: Table,
    op: u64,
    now: Instant,
}

impl World {
    /// Nothing held; a lease of 10 s granted now.
    fn empty() -> World {
        let now = Instant::now();
        let mut t = Table::new(config(), &PersistedState::new(7));
        t.accepted(0, now, 10_000, "leader:1");
        World { t, op: 0, now }
    }

    /// `web` installed at `epoch` (its install task still running).
    fn installing(epoch: Epoch, fencing: Fencing) -> World {
        let mut w = World::empty();
        let e = reply(&mut w.t, install(epoch, fencing));
        w.op = task_op(&e);
        w
    }

    /// `web` installed at epoch 7, its process not started yet.
    fn installed(fencing: Fencing) -> World {
        let mut w = World::installing(7, fencing);
        w.t.install_done("web", w.op, Ok(()));
        w
    }

    /// `web` installed, its process launched with pid 42.
    fn running(epoch: Epoch, fencing: Fencing, health: bool) -> World {
        let mut w = World::installing(epoch, fencing);
        if health {
            w.t.slots[0].package = package(true);
        }
        w.t.install_done("web", w.op, Ok(()));
        let plan = w.launch_plan(true);
        w.t.launched(&plan, &launch(), Ok(ProcessHandle::fake(42, None)), w.now);
        w
    }

    fn launch_plan(&mut self, after_install: bool) -> LaunchPlan {
        match self.t.start("web", self.op, after_install, self.now).pop() {
            Some(Effect::Launch(p)) => p,
            other => panic!("no launch: {other:?}"),
        }
    }

    fn status(&self) -> Option<ModuleStatus> {
        self.t.slot("web").map(|s| s.status)
    }

    fn last_report(&self) -> Option<(ReportKind, String)> {
        self.t.reports.last().map(|r| (r.kind, r.message.clone()))
    }
}

fn fail(why: &str) -> Error {
    Error::InvalidPackage(why.into())
}

/// A row: what it shows, the state, the input, the effects, the module's
/// status afterwards (`None`: not in the table).
type Row = (
    &'static str,
    fn() -> World,
    fn(&mut World) -> Vec<Effect>,
    &'static [&'static str],
    Option<ModuleStatus>,
);

fn run(rows: &[Row]) {
    for (what, state, input, want, status) in rows {
        let mut w = state();
        let got = describe(&input(&mut w));
        assert_eq!(got, *want, "{what}: effects");
        assert_eq!(w.status(), *status, "{what}: status");
    }
}

#[test]
fn directives() {
    use ModuleStatus::*;
    let running = || World::running(7, Fencing::AtMostOne, false);
    run(&[
        (
            "install on an empty node: persist the epoch, then the task",
            World::empty,
            |w| reply(&mut w.t, install(7, Fencing::AtMostOne)),
            &[
                "persist [] epochs [web:7]",
                "notify",
                "install web@7 from http://fallback:1",
            ],
            Some(Installing),
        ),
        (
            "the same install again is a repeat",
            running,
            |w| reply(&mut w.t, install(7, Fencing::AtMostOne)),
            &[],
            Some(Running),
        ),
        (
            "a newer epoch replaces the placement and stops its process",
            running,
            |w| reply(&mut w.t, install(9, Fencing::AtMostOne)),
            &[
                "persist [] epochs [web:9]",
                "notify",
                "install web@9 from http://fallback:1 (stop pid 42)",
            ],
            Some(Installing),
        ),
        (
            "an older epoch is refused and reported",
            running,
            |w| reply(&mut w.t, install(5, Fencing::AtMostOne)),
            &["notify"],
            Some(Running),
        ),
        (
            "a refusal is reported once",
            running,
            |w| {
                reply(&mut w.t, install(5, Fencing::AtMostOne));
                reply(&mut w.t, install(5, Fencing::AtMostOne))
            },
            &[],
            Some(Running),
        ),
        (
            "a newer restore stops the process and restores",
            running,
            |w| reply(&mut w.t, restore(7, 1)),
            &[
                "persist [web@7] epochs [web:7]",
                "notify",
                "restore web (stop pid 42)",
            ],
            Some(Restoring),
        ),
        (
            "a restore already executed is a repeat",
            running,
            |w| {
                reply(&mut w.t, restore(7, 3));
                reply(&mut w.t, restore(7, 2))
            },
            &[],
            Some(Restoring),
        ),
        (
            "a restore for a module not held is ignored",
            World::empty,
            |w| reply(&mut w.t, restore(7, 1)),
            &[],
            None,
        ),
        (
            "a restore of an install still running is ignored",
            || World::installing(7, Fencing::AtMostOne),
            |w| reply(&mut w.t, restore(7, 1)),
            &[],
            Some(Installing),
        ),
        (
            "a stop records the stop epoch and stops the process",
            running,
            |w| reply(&mut w.t, stop(7)),
            &[
                "persist [web@7] epochs [web:7/stop 7]",
                "notify",
                "stop web (stop pid 42)",
            ],
            Some(Running),
        ),
        (
            "a stop under way is not repeated",
            running,
            |w| {
                reply(&mut w.t, stop(7));
                reply(&mut w.t, stop(7))
            },
            &[],
            Some(Running),
        ),
        (
            "an install at or below a stop is stale",
            running,
            |w| {
                let op = task_op(&reply(&mut w.t, stop(7)));
                w.t.forget("web", op);
                reply(&mut w.t, install(7, Fencing::AtMostOne))
            },
            &["notify"],
            None,
        ),
        (
            "a full node refuses a new module",
            || {
                let mut w = World::empty();
                let mut p = PersistedState::new(7);
                p.modules = (0..MAX_MODULES)
                    .map(|i| InstalledModule {
                        name: format!("m{i}"),
                        epoch: 1,
                        fencing: Fencing::AtLeastOne,
                        package: package(false),
                        depmgr: String::new(),
                        restore_seq: 0,
                        starts: 0,
                    })
                    .collect();
                w.t = Table::new(config(), &p);
                w
            },
            |w| reply(&mut w.t, install(7, Fencing::AtMostOne)),
            &["notify"],
            None,
        ),
    ]);
}

#[test]
fn task_steps() {
    use ModuleStatus::*;
    let installing = || World::installing(7, Fencing::AtMostOne);
    run(&[
        (
            "installed: persist, clean older placements, start",
            installing,
            |w| w.t.install_done("web", w.op, Ok(())),
            &[
                "persist [web@7] epochs [web:7]",
                "keep only web/7",
                "start web after install",
            ],
            Some(Installing),
        ),
        (
            "install failed: report it, remove the placement",
            installing,
            |w| w.t.install_done("web", w.op, Err(fail("bad package"))),
            &["notify", "rm web/7"],
            Some(InstallFailed),
        ),
        (
            "a superseded install changes nothing",
            installing,
            |w| {
                let old = w.op;
                reply(&mut w.t, install(8, Fencing::AtMostOne));
                w.t.install_done("web", old, Ok(()))
            },
            &[],
            Some(Installing),
        ),
        (
            "restored: start",
            || World::running(7, Fencing::AtMostOne, false),
            |w| {
                let op = task_op(&reply(&mut w.t, restore(7, 1)));
                w.t.restore_done("web", op, Ok(()))
            },
            &["start web after restore"],
            Some(Restoring),
        ),
        (
            "restore failed: the module failed",
            || World::running(7, Fencing::AtMostOne, false),
            |w| {
                let op = task_op(&reply(&mut w.t, restore(7, 1)));
                w.t.restore_done("web", op, Err(fail("gone")))
            },
            &["notify"],
            Some(Failed),
        ),
        (
            "stopped: forget the module and its files",
            || World::running(7, Fencing::AtMostOne, false),
            |w| {
                let op = task_op(&reply(&mut w.t, stop(7)));
                w.t.forget("web", op)
            },
            &[
                "persist [] epochs [web:7/stop 7]",
                "notify",
                "forget files of web",
            ],
            None,
        ),
    ]);
    let mut w = World::installing(7, Fencing::AtMostOne);
    w.t.install_done("web", w.op, Err(fail("bad package")));
    assert_eq!(
        w.last_report(),
        Some((ReportKind::InstallFailed, "bad package".into()))
    );
}

#[test]
fn process_events() {
    use ModuleStatus::*;
    let installed_amo = || World::installed(Fencing::AtMostOne);
    run(&[
        (
            "start under a lease: launch",
            installed_amo,
            |w| w.t.start("web", w.op, true, w.now),
            &["launch web@7 seq 0"],
            Some(Installing),
        ),
        (
            "start of an at-most-one module without a lease: fenced",
            installed_amo,
            |w| {
                w.t.lease = None;
                w.t.start("web", w.op, true, w.now)
            },
            &["notify"],
            Some(Fenced),
        ),
        (
            "an at-least-one module starts without a lease",
            || World::installed(Fencing::AtLeastOne),
            |w| {
                w.t.lease = None;
                w.t.start("web", w.op, true, w.now)
            },
            &["launch web@7 seq 0"],
            Some(Installing),
        ),
        (
            "launched: running, persisted",
            installed_amo,
            |w| {
                let plan = w.launch_plan(true);
                let h = ProcessHandle::fake(42, None);
                w.t.launched(&plan, &launch(), Ok(h), w.now)
            },
            &["notify", "persist [web@7] epochs [web:7]"],
            Some(Running),
        ),
        (
            "launched with a health check: starting, probed",
            || {
                let mut w = World::installed(Fencing::AtMostOne);
                w.t.slots[0].package = package(true);
                w
            },
            |w| {
                let plan = w.launch_plan(true);
                let h = ProcessHandle::fake(42, None);
                w.t.launched(&plan, &launch(), Ok(h), w.now)
            },
            &["notify", "probe web", "persist [web@7] epochs [web:7]"],
            Some(Starting),
        ),
        (
            "cannot launch after an install: install failed",
            installed_amo,
            |w| {
                let plan = w.launch_plan(true);
                w.t.launched(&plan, &launch(), Err(fail("no exec")), w.now)
            },
            &["notify"],
            Some(InstallFailed),
        ),
        (
            "cannot launch after a restore: failed",
            installed_amo,
            |w| {
                let plan = w.launch_plan(false);
                w.t.launched(&plan, &launch(), Err(fail("no exec")), w.now)
            },
            &["notify"],
            Some(Failed),
        ),
        (
            "superseded while spawning: stop what was spawned",
            installed_amo,
            |w| {
                let plan = w.launch_plan(true);
                reply(&mut w.t, install(8, Fencing::AtMostOne));
                let h = ProcessHandle::fake(42, None);
                w.t.launched(&plan, &launch(), Ok(h), w.now)
            },
            &["notify", "stop pid 42"],
            Some(Installing),
        ),
        (
            "the fence ran while spawning: stop it, fenced",
            installed_amo,
            |w| {
                let plan = w.launch_plan(true);
                let h = ProcessHandle::fake(42, None);
                let late = w.now + Duration::from_secs(60);
                w.t.launched(&plan, &launch(), Ok(h), late)
            },
            &["notify", "stop pid 42"],
            Some(Fenced),
        ),
        (
            "exited before it was recorded: failed",
            installed_amo,
            |w| {
                let plan = w.launch_plan(true);
                let h = ProcessHandle::fake(42, Some("exited with code 1"));
                w.t.launched(&plan, &launch(), Ok(h), w.now)
            },
            &["notify", "persist [web@7] epochs [web:7]"],
            Some(Failed),
        ),
        (
            "an exit nobody asked for is a failure",
            || World::running(7, Fencing::AtMostOne, false),
            |w| w.t.exited("web", w.op, "exited with code 3"),
            &["notify"],
            Some(Failed),
        ),
        (
            "an exit after a stop was asked for is not",
            || World::running(7, Fencing::AtMostOne, false),
            |w| {
                reply(&mut w.t, stop(7));
                w.t.exited("web", w.op, "killed by signal 15")
            },
            &[],
            Some(Running),
        ),
        (
            "first passing probe: running",
            || World::running(7, Fencing::AtMostOne, true),
            |w| w.t.probe_passed("web", w.op),
            &["notify"],
            Some(Running),
        ),
        (
            "a passing probe when running changes nothing",
            || World::running(7, Fencing::AtMostOne, false),
            |w| w.t.probe_passed("web", w.op),
            &[],
            Some(Running),
        ),
        (
            "failing probe: failed, process stopped",
            || World::running(7, Fencing::AtMostOne, true),
            |w| w.t.probe_failed("web", w.op, "probe failed".into()),
            &["notify", "stop pid 42"],
            Some(Failed),
        ),
        (
            "shutdown stops every process",
            || World::running(7, Fencing::AtMostOne, false),
            |w| w.t.stop_all(),
            &["stop all [42]"],
            Some(Running),
        ),
        (
            "then every module is stopped",
            || World::running(7, Fencing::AtMostOne, false),
            |w| {
                w.t.stop_all();
                w.t.all_stopped()
            },
            &["notify"],
            Some(Stopped),
        ),
    ]);
    let mut w = World::running(7, Fencing::AtMostOne, false);
    w.t.exited("web", w.op, "exited with code 3");
    assert_eq!(
        w.last_report(),
        Some((ReportKind::Failed, "process 42 exited with code 3".into()))
    );
    assert_eq!(w.t.status_view("a", w.now).modules[0].pid, None);
}

#[test]
fn lease_and_fence() {
    use ModuleStatus::*;
    let running = || World::running(7, Fencing::AtMostOne, false);
    run(&[
        (
            "a renewal wakes the fence and drops the reports carried",
            running,
            |w| {
                w.t.exited("web", w.op, "exited with code 1");
                let e = w.t.accepted(1, w.now, 5000, "leader:1");
                assert!(w.t.reports.is_empty());
                e
            },
            &["lease changed"],
            Some(Failed),
        ),
        (
            "the fence before the lease's end does nothing",
            running,
            |w| w.t.fence(w.now),
            &[],
            Some(Running),
        ),
        (
            "the fence after it takes at-most-one processes out",
            running,
            |w| w.t.fence(w.now + Duration::from_secs(9)),
            &["fence [web pid 42]"],
            Some(Running),
        ),
        (
            "at-least-one modules are spared",
            || World::running(7, Fencing::AtLeastOne, false),
            |w| w.t.fence(w.now + Duration::from_secs(60)),
            &[],
            Some(Running),
        ),
        (
            "fenced processes are reported",
            running,
            |w| {
                let victims = match w.t.fence(w.now + Duration::from_secs(9)).pop() {
                    Some(Effect::Fence(v)) => v,
                    other => panic!("{other:?}"),
                };
                let stopped: Vec<(Victim, String)> = victims
                    .into_iter()
                    .map(|v| (v, "killed by signal 15".to_string()))
                    .collect();
                w.t.fenced(&stopped)
            },
            &["notify"],
            Some(Fenced),
        ),
    ]);
}

#[test]
fn views() {
    let mut w = World::running(7, Fencing::AtMostOne, false);
    let me = NodeIdentity {
        node: "a".into(),
        addr: "127.0.0.1:1".into(),
        labels: Default::default(),
    };
    let (hb, n) = w.t.heartbeat(&me, 1, None);
    assert_eq!(n, 0);
    let table = hb.table.expect("table until acknowledged");
    assert_eq!(table.modules[0].module, "web");
    assert_eq!(hb.statuses.to_statuses(), Some(vec![ModuleStatus::Running]));
    let (hb, _) = w.t.heartbeat(&me, 2, Some(hb.table_version));
    assert!(hb.table.is_none(), "acknowledged: left out");

    w.t.exited("web", w.op, "exited with code 1");
    let s = w.t.status_view("a", w.now);
    assert_eq!(s.modules[0].state, "failed");
    assert_eq!(s.modules[0].restarts, 0);
    assert_eq!(s.pending_reports, 1);
    assert_eq!(s.leader.as_deref(), Some("leader:1"));
    assert!(s.lease_ms_left > 9000);
}

/// The directive rules alone ([`decide`]).
#[test]
fn directive_rules() {
    use Decision::*;
    use ModuleStatus::*;
    let view = |epoch, status, restore_seq| ModuleView {
        epoch,
        status,
        restore_seq,
        installed: !matches!(status, Installing | InstallFailed),
        stopping: false,
    };
    let rec = |highest, stopped_at| EpochRecord {
        highest,
        stopped_at,
    };
    let i = |e| install(e, Fencing::AtMostOne);
    let stale = |d: Decision| matches!(d, Stale(_));
    let unusable = |d: Decision| matches!(d, Unusable(_));
    let running7 = view(7, Running, 2);
    let r7 = rec(7, None);
    let stopping = ModuleView {
        stopping: true,
        ..running7
    };

    // Install.
    assert_eq!(decide(None, None, &i(7)), Execute);
    assert_eq!(decide(Some(&running7), Some(&r7), &i(7)), Repeat);
    assert_eq!(
        decide(Some(&view(7, InstallFailed, 0)), Some(&r7), &i(7)),
        Repeat
    );
    assert_eq!(decide(Some(&running7), Some(&r7), &i(9)), Execute);
    assert!(stale(decide(Some(&running7), Some(&r7), &i(5))));
    assert!(stale(decide(None, Some(&rec(7, Some(7))), &i(7))));
    assert_eq!(decide(None, Some(&rec(7, Some(7))), &i(8)), Execute);
    // Restart after an agent restart: record but module gone → install.
    assert_eq!(decide(None, Some(&r7), &i(7)), Execute);

    // Restore.
    assert_eq!(decide(Some(&running7), Some(&r7), &restore(7, 3)), Execute);
    assert_eq!(decide(Some(&running7), Some(&r7), &restore(7, 2)), Repeat);
    assert_eq!(decide(Some(&running7), Some(&r7), &restore(7, 1)), Repeat);
    assert!(stale(decide(Some(&running7), Some(&r7), &restore(6, 9))));
    assert!(unusable(decide(None, None, &restore(7, 1))));
    assert!(unusable(decide(Some(&running7), Some(&r7), &restore(8, 1))));
    assert!(unusable(decide(
        Some(&view(7, InstallFailed, 0)),
        Some(&r7),
        &restore(7, 1)
    )));
    assert_eq!(decide(Some(&stopping), Some(&r7), &restore(7, 3)), Repeat);
    assert_eq!(
        decide(Some(&view(7, Fenced, 2)), Some(&r7), &restore(7, 3)),
        Execute
    );

    // Stop.
    assert_eq!(decide(None, None, &stop(3)), Repeat);
    assert_eq!(decide(Some(&running7), Some(&r7), &stop(7)), Execute);
    assert_eq!(decide(Some(&running7), Some(&r7), &stop(8)), Execute);
    assert!(stale(decide(Some(&running7), Some(&r7), &stop(6))));
    assert_eq!(decide(Some(&stopping), Some(&r7), &stop(7)), Repeat);
}

/// A reply granting `u64::MAX` ms renews the lease for the cap only (and
/// does not panic adding it to the clock).
#[test]
fn a_huge_lease_grant_is_capped() {
    let mut w = World::running(7, Fencing::AtMostOne, false);
    w.t.accepted(0, w.now, u64::MAX, "leader:1");
    let left = w.t.status_view("a", w.now).lease_ms_left;
    assert_eq!(
        left,
        fence::MAX_LEASE.as_millis() as u64,
        "lease left: {left} ms"
    );
}

/// A directive naming a module by a name the supervisor would refuse is
/// not executed, and shows among the refusals.
#[test]
fn directive_with_a_bad_module_name_is_refused() {
    let mut w = World::empty();
    for bad in ["../../etc", "", "a b", &"x".repeat(10_000)] {
        let mut d = install(3, Fencing::AtMostOne);
        if let Directive::Install(i) = &mut d {
            i.module = bad.to_string();
        }
        let effects = reply(&mut w.t, d);
        assert!(effects.is_empty(), "{bad:.20}: {effects:?}");
        let mut r = restore(3, 1);
        if let Directive::Restore(x) = &mut r {
            x.module = bad.to_string();
        }
        assert!(reply(&mut w.t, r).is_empty());
    }
    let s = w.t.status_view("a", w.now);
    assert!(s.modules.is_empty(), "{:?}", s.modules);
    assert_eq!(s.pending_reports, 0);
    assert!(
        s.refused
            .iter()
            .any(|r| r.contains("module name \"../../etc\"")),
        "{:?}",
        s.refused
    );
    assert!(s.refused.iter().all(|r| r.len() < 300), "{:?}", s.refused);
}

fn named(mut d: Directive, name: &str) -> Directive {
    match &mut d {
        Directive::Install(i) => i.module = name.into(),
        Directive::Restore(r) => r.module = name.into(),
        Directive::Stop(s) => s.module = name.into(),
        Directive::Prefetch(p) => p.module = name.into(),
    }
    d
}

/// A reply is decided as a whole: one snapshot for all its directives,
/// holding every epoch record they raise, then their tasks in order.
#[test]
fn a_reply_is_saved_once() {
    let mut w = World::running(7, Fencing::AtMostOne, false);
    let effects = reply_of(
        &mut w.t,
        vec![
            named(install(3, Fencing::AtLeastOne), "api"),
            restore(7, 4),
            named(stop(2), "gone"),
            install(7, Fencing::AtMostOne),
        ],
        Ok(()),
    );
    assert_eq!(
        describe(&effects),
        [
            "persist [web@7] epochs [api:3 web:7]",
            "notify",
            "install api@3 from http://fallback:1",
            "notify",
            "restore web (stop pid 42)",
        ]
    );
    let Effect::Persist((_, p)) = &effects[0] else {
        panic!("no snapshot first: {effects:?}");
    };
    assert_eq!(p.modules[0].restore_seq, 4, "the restore order is in it");
    // Repeats only: nothing to save, nothing to do.
    let plan =
        w.t.plan_reply(0, vec![restore(7, 4), install(7, Fencing::AtMostOne)]);
    assert!(plan.snapshot.is_none());
    assert_eq!(plan.executing(), 0);
    // Within one reply, a directive sees what those before it decided.
    let effects = reply_of(
        &mut w.t,
        vec![
            install(9, Fencing::AtMostOne),
            install(9, Fencing::AtMostOne),
        ],
        Ok(()),
    );
    assert_eq!(
        describe(&effects),
        [
            "persist [] epochs [api:3 web:9]",
            "notify",
            "install web@9 from http://fallback:1",
        ]
    );
}

/// When the reply's snapshot cannot be saved, nothing of it executes: no
/// slot changes, no process is stopped, no task starts; the error is
/// reported once and shown among the refusals. The leader's repeat
/// executes once a save succeeds.
#[test]
fn nothing_executes_when_the_save_fails() {
    let mut w = World::running(7, Fencing::AtMostOne, false);
    let full = || Err("state.json: No space left on device (os error 28)".to_string());
    let effects = reply_of(&mut w.t, vec![install(9, Fencing::AtMostOne)], full());
    assert_eq!(describe(&effects), ["persist [] epochs [web:9]", "notify"]);
    assert_eq!(w.status(), Some(ModuleStatus::Running));
    let slot = w.t.slot("web").expect("still held");
    assert_eq!(slot.epoch, 7);
    assert_eq!(slot.proc.as_ref().map(|p| p.handle.pid), Some(42));
    let (kind, why) = w.last_report().expect("a report");
    assert_eq!(kind, ReportKind::InstallFailed);
    assert_eq!(
        why,
        "install directive for epoch 9 not executed: cannot persist the epoch record: \
         state.json: No space left on device (os error 28)"
    );
    let s = w.t.status_view("a", w.now);
    assert!(
        s.refused
            .iter()
            .any(|r| r.starts_with("web: install directive for epoch 9 not executed")),
        "{:?}",
        s.refused
    );
    // The repeat, still unsaved: not executed, not reported again.
    let reports = w.t.reports.len();
    let effects = reply_of(&mut w.t, vec![install(9, Fencing::AtMostOne)], full());
    assert_eq!(describe(&effects), ["persist [] epochs [web:9]"]);
    assert_eq!(w.t.reports.len(), reports);
    assert_eq!(w.t.slot("web").map(|s| s.epoch), Some(7));
    // Space is back: the repeat executes.
    let effects = reply(&mut w.t, install(9, Fencing::AtMostOne));
    assert_eq!(
        describe(&effects),
        [
            "persist [] epochs [web:9]",
            "notify",
            "install web@9 from http://fallback:1 (stop pid 42)",
        ]
    );
    assert_eq!(w.status(), Some(ModuleStatus::Installing));
}

/// A directive that was not `Execute` when the reply was planned does not
/// execute, even if a task step made it executable since: its state was
/// not in the snapshot. The leader's repeat plans it.
#[test]
fn only_planned_directives_execute() {
    let mut w = World::installing(7, Fencing::AtMostOne);
    let plan = w.t.plan_reply(0, vec![restore(7, 1)]);
    assert!(
        plan.snapshot.is_none(),
        "a restore of an install under way waits"
    );
    w.t.install_done("web", w.op, Ok(()));
    assert!(w.t.execute_reply(plan, Ok(())).is_empty());
    assert_eq!(w.t.slot("web").map(|s| s.restore_seq), Some(0));
}

/// `web` running at epoch 5000 of cluster 11, which the table serves.
fn served_by_11() -> World {
    let mut w = World::empty();
    let e = reply_from(
        &mut w.t,
        11,
        vec![install(5000, Fencing::AtLeastOne)],
        Ok(()),
    );
    w.op = task_op(&e);
    w.t.install_done("web", w.op, Ok(()));
    let plan = w.launch_plan(true);
    w.t.launched(&plan, &launch(), Ok(ProcessHandle::fake(42, None)), w.now);
    assert_eq!(w.t.cluster, 11);
    // Within cluster 11, a low epoch is stale.
    let e = reply_from(&mut w.t, 11, vec![install(3, Fencing::AtLeastOne)], Ok(()));
    assert_eq!(describe(&e), vec!["notify"], "refused and reported only");
    assert_eq!(
        w.last_report().map(|r| r.0),
        Some(ReportKind::StaleDirective)
    );
    w
}

#[test]
fn a_new_cluster_is_adopted_before_its_low_epoch_installs() {
    let mut w = served_by_11();
    // The cluster was re-created from scratch: its log starts at 1 again.
    let e = reply_from(&mut w.t, 22, vec![install(3, Fencing::AtLeastOne)], Ok(()));
    assert_eq!(
        describe(&e),
        vec![
            "persist [] epochs [web:3]",
            "notify",
            "install web@3 from http://fallback:1 (stop pid 42)",
        ]
    );
    assert_eq!(w.t.cluster, 22);
    let (hb, _) = w.t.heartbeat(
        &NodeIdentity {
            node: "n".into(),
            addr: "a:1".into(),
            labels: BTreeMap::new(),
        },
        1,
        None,
    );
    assert_eq!(hb.table.expect("table").cluster, 22);
    assert_eq!(w.t.status_view("n", w.now).cluster, 22);
    // Cluster 22's own fencing holds from here on.
    let e = reply_from(&mut w.t, 22, vec![install(2, Fencing::AtLeastOne)], Ok(()));
    assert_eq!(describe(&e), vec!["notify"], "refused and reported only");
}

#[test]
fn a_module_of_the_old_cluster_is_left_to_the_new_leaders_stop() {
    let mut w = served_by_11();
    // The new cluster does not know `web`: its leader stops it at its own
    // last index, far below the old epoch.
    let e = reply_from(&mut w.t, 22, vec![stop(9)], Ok(()));
    assert_eq!(
        describe(&e),
        vec![
            "persist [web@0] epochs [web:9/stop 9]",
            "notify",
            "stop web (stop pid 42)",
        ]
    );
    // Later placed here by the new cluster: the install executes.
    w.t.forget("web", task_op(&e));
    let e = reply_from(&mut w.t, 22, vec![install(12, Fencing::AtLeastOne)], Ok(()));
    assert_eq!(describe(&e)[0], "persist [] epochs [web:12/stop 9]");
}

#[test]
fn a_reply_without_a_cluster_id_changes_nothing() {
    let mut w = served_by_11();
    let e = reply_from(&mut w.t, 0, vec![install(4, Fencing::AtLeastOne)], Ok(()));
    assert_eq!(describe(&e), vec!["notify"], "refused and reported only");
    assert_eq!(w.t.cluster, 11);
    assert_eq!(w.t.epochs["web"].highest, 5000);
}

#[test]
fn an_adoption_whose_save_fails_executes_nothing() {
    let mut w = served_by_11();
    let e = reply_from(
        &mut w.t,
        22,
        vec![install(3, Fencing::AtLeastOne)],
        Err("disk full".into()),
    );
    assert!(
        !describe(&e).iter().any(|l| l.starts_with("install")),
        "{:?}",
        describe(&e)
    );
    // The leader's repeat executes once the state can be saved.
    let e = reply_from(&mut w.t, 22, vec![install(3, Fencing::AtLeastOne)], Ok(()));
    assert!(
        describe(&e).iter().any(|l| l.starts_with("install web@3")),
        "{:?}",
        describe(&e)
    );
}

/// The heartbeat's size bound holds whatever the table is asked to
/// report: a message is cut to `MAX_REPORT_MESSAGE` bytes at a character
/// boundary, and one heartbeat carries at most
/// `MAX_REPORTS_PER_HEARTBEAT` reports, the oldest, acknowledged by count.
#[test]
fn reports_are_bounded_in_size_and_per_heartbeat() {
    use proto::heartbeat::{MAX_REPORT_MESSAGE, MAX_REPORTS_PER_HEARTBEAT};
    let mut w = World::empty();
    // Multi-byte characters across the cut.
    w.t.report("web", 1, ReportKind::Failed, "é".repeat(MAX_REPORT_MESSAGE));
    let cut = &w.t.reports[0].message;
    assert!(cut.len() <= MAX_REPORT_MESSAGE, "{} bytes", cut.len());
    assert!(cut.ends_with('…'));
    let n = MAX_REPORTS_PER_HEARTBEAT + 10;
    for i in 1..n {
        w.t.report("web", 1, ReportKind::Failed, format!("failure {i}"));
    }
    let me = NodeIdentity {
        node: "a".into(),
        addr: "127.0.0.1:1".into(),
        labels: Default::default(),
    };
    let (hb, sent) = w.t.heartbeat(&me, 1, None);
    assert_eq!(sent, MAX_REPORTS_PER_HEARTBEAT);
    assert_eq!(hb.reports.len(), MAX_REPORTS_PER_HEARTBEAT);
    assert!(hb.reports[0].message.ends_with('…'), "the oldest first");
    w.t.accepted(sent, w.now, 10_000, "leader:1");
    let (hb, sent) = w.t.heartbeat(&me, 2, None);
    assert_eq!(sent, 10, "the rest in the next heartbeat");
    assert_eq!(
        hb.reports[0].message,
        format!("failure {MAX_REPORTS_PER_HEARTBEAT}")
    );
}

fn prefetch(module: &str, epoch: Epoch) -> Directive {
    Directive::Prefetch(proto::heartbeat::Prefetch {
        module: module.into(),
        epoch,
        package: package(false),
        depmgr: String::new(),
    })
}

/// A prefetch fences nothing and changes no module or epoch record: even
/// below the highest epoch seen (the module was stopped here at a later
/// epoch than its placement elsewhere) it is not refused, saves nothing,
/// and becomes a background prefetch (with the fallback depmgr); the held
/// module is untouched. Its report comes from `prestaged`.
#[test]
fn a_prefetch_only_fills_the_cache() {
    let mut w = World::running(7, Fencing::AtMostOne, false);
    let records = w.t.epochs.clone();
    let plan =
        w.t.plan_reply(0, vec![prefetch("web", 3), prefetch("api", 5)]);
    assert!(plan.snapshot.is_none());
    assert_eq!(plan.executing(), 0);
    let effects = w.t.execute_reply(plan, Ok(()));
    assert_eq!(describe(&effects), ["prefetch web@3", "prefetch api@5"]);
    let Effect::Prefetch(p) = &effects[1] else {
        panic!("{effects:?}");
    };
    assert_eq!(p.depmgr, "http://fallback:1");
    assert_eq!(w.t.epochs, records, "no epoch record raised");
    assert!(w.t.slot("api").is_none(), "nothing installed");
    assert_eq!(
        w.t.slot("web").map(|s| s.status),
        Some(ModuleStatus::Running)
    );
    assert!(w.t.reports.is_empty());
    assert_eq!(
        describe(&w.t.prestaged("api", 5, "1 archive".into())),
        ["notify"]
    );
    assert_eq!(
        describe(&w.t.prestaged("api", 5, "1 archive".into())),
        ["notify"]
    );
    assert_eq!(w.t.reports.len(), 1, "an equal report is queued once");
    assert_eq!(w.t.reports[0].kind, ReportKind::Prestaged);
    // A bad module name is refused before anything, as for every directive.
    let effects = reply(&mut w.t, prefetch("../x", 5));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(
        w.t.held_digests().into_iter().collect::<Vec<_>>(),
        ["ab".repeat(32)]
    );
}
