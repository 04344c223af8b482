//! Pure decisions of the node manager: what to do with a directive, and when
//! the lease fences a module. No clock, no I/O: callers pass what they
//! observed and `now`, so every rule is a table test below.
//!
//! ## Directive rules
//! Directives are level-triggered (the leader repeats one until heartbeats
//! show it took effect), so every rule makes a repeat a no-op:
//! - Any directive whose epoch is below the highest epoch accepted for the
//!   module is refused (logged and reported as `StaleDirective`).
//! - Install: a new module, or a newer epoch than the installed one →
//!   install (replacing the old placement). The same epoch again → no-op,
//!   whatever became of the first install. An epoch at or below the last
//!   stop executed for the module → refused: the stop superseded it.
//! - Restore: executed when its `seq` is above the last executed one for
//!   the installed epoch; otherwise a no-op. A restore for a module that is
//!   not installed here (or for another epoch) cannot be executed: ignored
//!   with a warning, the missing table entry tells the leader.
//! - Stop: stops and forgets the module; a repeat while stopping, or a stop
//!   for an unknown module, is a no-op.
//!
//! ## Lease rules
//! A lease granted in a reply runs from the moment its heartbeat was sent.
//! The fence for `at-most-one` modules starts `stop_grace` (plus a small
//! margin) before the lease ends, so SIGKILL lands before the lease's end.

use std::time::Duration;

use proto::Epoch;
use proto::heartbeat::{Directive, ModuleStatus};
use proto::spec::Fencing;
use tokio::time::Instant;

use crate::state::EpochRecord;

/// What the decision needs to know of a module the agent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleView {
    pub epoch: Epoch,
    pub status: ModuleStatus,
    /// Last restore order executed for this placement (0: none).
    pub restore_seq: u32,
    /// The package of this placement is unpacked and recorded.
    pub installed: bool,
    /// A stop is under way (the module leaves the table once it is dead).
    pub stopping: bool,
}

/// What to do with one directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Execute it.
    Execute,
    /// A repeat of something done or under way: nothing to do.
    Repeat,
    /// Older than what the agent has seen: refuse, log, report.
    Stale(String),
    /// Cannot be executed here; log it (the heartbeat's table shows why).
    Unusable(String),
}

/// Decides about one directive given the module as held (if any) and the
/// module's epoch record (if any).
pub fn decide(
    module: Option<&ModuleView>,
    record: Option<&EpochRecord>,
    d: &Directive,
) -> Decision {
    let epoch = d.epoch();
    if let Some(r) = record
        && epoch < r.highest
    {
        return Decision::Stale(format!(
            "{} directive for epoch {epoch} is older than epoch {} already seen",
            kind(d),
            r.highest
        ));
    }
    match d {
        Directive::Install(_) => {
            if let Some(stopped) = record.and_then(|r| r.stopped_at)
                && epoch <= stopped
            {
                return Decision::Stale(format!(
                    "install for epoch {epoch} was superseded by a stop at epoch {stopped}"
                ));
            }
            match module {
                Some(m) if m.epoch == epoch => Decision::Repeat,
                _ => Decision::Execute,
            }
        }
        Directive::Restore(r) => match module {
            None => Decision::Unusable(format!(
                "restore for epoch {epoch}: module is not installed on this node"
            )),
            Some(m) if m.epoch != epoch => Decision::Unusable(format!(
                "restore for epoch {epoch}: installed placement has epoch {}",
                m.epoch
            )),
            Some(m) if m.stopping || r.seq <= m.restore_seq => Decision::Repeat,
            Some(m) if !m.installed => Decision::Unusable(format!(
                "restore {} for epoch {epoch}: package is not installed (status {})",
                r.seq,
                m.status.as_str()
            )),
            Some(_) => Decision::Execute,
        },
        Directive::Stop(_) => match module {
            None => Decision::Repeat,
            Some(m) if epoch < m.epoch => Decision::Stale(format!(
                "stop for epoch {epoch} is older than the installed epoch {}",
                m.epoch
            )),
            Some(m) if m.stopping => Decision::Repeat,
            Some(_) => Decision::Execute,
        },
    }
}

fn kind(d: &Directive) -> &'static str {
    match d {
        Directive::Restore(_) => "restore",
        Directive::Install(_) => "install",
        Directive::Stop(_) => "stop",
    }
}

/// Margin before the lease's end by which SIGKILL must have gone out, for
/// timer lateness and the kill itself.
pub const FENCE_MARGIN: Duration = Duration::from_millis(50);

/// When the fence starts for a lease ending at `deadline`: `stop_grace`
/// (plus [`FENCE_MARGIN`]) earlier, so a module that ignores SIGTERM is
/// killed before the lease's end.
pub fn fence_start(deadline: Instant, stop_grace: Duration) -> Instant {
    deadline
        .checked_sub(stop_grace + FENCE_MARGIN)
        .unwrap_or(deadline)
}

/// True when the lease (ending at `deadline`; `None`: never granted) no
/// longer allows an `at-most-one` module to run at `now`.
pub fn lease_fences(deadline: Option<Instant>, stop_grace: Duration, now: Instant) -> bool {
    match deadline {
        None => true,
        Some(d) => now >= fence_start(d, stop_grace),
    }
}

/// True when a module with this fencing mode may be (re)started at `now`.
pub fn may_start(
    fencing: Fencing,
    deadline: Option<Instant>,
    stop_grace: Duration,
    now: Instant,
) -> bool {
    fencing == Fencing::AtLeastOne || !lease_fences(deadline, stop_grace, now)
}

/// The new lease end after a reply granting `lease_ms` to the heartbeat
/// sent at `sent_at`; 0 leaves the lease as it was. A grant never moves the
/// end backwards (a slow reply to an older heartbeat cannot shorten it).
pub fn renew(current: Option<Instant>, sent_at: Instant, lease_ms: u64) -> Option<Instant> {
    if lease_ms == 0 {
        return current;
    }
    let granted = sent_at + Duration::from_millis(lease_ms);
    Some(match current {
        Some(c) if c > granted => c,
        _ => granted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::heartbeat::{Install, Restore, Stop};
    use proto::manifest::{ConfigPackage, Manifest};

    fn install(epoch: Epoch) -> Directive {
        Directive::Install(Install {
            module: "web".into(),
            epoch,
            fencing: Fencing::AtMostOne,
            package: ConfigPackage {
                manifest: Manifest::from_toml("name = \"web\"\nversion = \"1.0.0\"")
                    .expect("manifest"),
                artifacts: vec![],
            },
            depmgr: "http://127.0.0.1:1".into(),
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
    fn view(epoch: Epoch, status: ModuleStatus, restore_seq: u32) -> ModuleView {
        ModuleView {
            epoch,
            status,
            restore_seq,
            installed: !matches!(
                status,
                ModuleStatus::Installing | ModuleStatus::InstallFailed
            ),
            stopping: false,
        }
    }
    fn rec(highest: Epoch, stopped_at: Option<Epoch>) -> EpochRecord {
        EpochRecord {
            highest,
            stopped_at,
        }
    }

    #[test]
    fn directive_table() {
        use Decision::*;
        use ModuleStatus::*;
        let stale = |d: Decision| matches!(d, Stale(_));
        let unusable = |d: Decision| matches!(d, Unusable(_));
        let running7 = view(7, Running, 2);
        let r7 = rec(7, None);
        let stopping = ModuleView {
            stopping: true,
            ..running7
        };

        // Install.
        assert_eq!(decide(None, None, &install(7)), Execute);
        assert_eq!(decide(Some(&running7), Some(&r7), &install(7)), Repeat);
        assert_eq!(
            decide(Some(&view(7, InstallFailed, 0)), Some(&r7), &install(7)),
            Repeat
        );
        assert_eq!(decide(Some(&running7), Some(&r7), &install(9)), Execute);
        assert!(stale(decide(Some(&running7), Some(&r7), &install(5))));
        assert!(stale(decide(None, Some(&rec(7, Some(7))), &install(7))));
        assert_eq!(decide(None, Some(&rec(7, Some(7))), &install(8)), Execute);
        // Restart after an agent restart: record but module gone → install.
        assert_eq!(decide(None, Some(&r7), &install(7)), Execute);

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

    #[test]
    fn lease_table() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let grace = ms(1000);
        // Never granted: fenced; at-least-one may always start.
        assert!(lease_fences(None, grace, t0));
        assert!(!may_start(Fencing::AtMostOne, None, grace, t0));
        assert!(may_start(Fencing::AtLeastOne, None, grace, t0));

        let lease = renew(None, t0, 3000);
        assert_eq!(lease, Some(t0 + ms(3000)));
        assert!(!lease_fences(lease, grace, t0 + ms(1949)));
        assert!(lease_fences(lease, grace, t0 + ms(1950)));
        // 0 = not renewed; an older grant does not shorten the lease.
        assert_eq!(renew(lease, t0 + ms(500), 0), lease);
        let later = renew(lease, t0 + ms(500), 3000);
        assert_eq!(later, Some(t0 + ms(3500)));
        assert_eq!(renew(later, t0 + ms(100), 3000), later);
        // A lease shorter than the grace fences at once.
        assert!(lease_fences(renew(None, t0, 500), grace, t0));
    }
}
