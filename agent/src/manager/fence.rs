//! Lease fencing: an `at-most-one` module never runs on a node whose lease
//! has run out, so the cluster can move it without two copies running.
//!
//! ## Rules (pure, table-tested below)
//! A lease granted in a heartbeat reply runs from the moment its heartbeat
//! was *sent* ([`renew`]); a grant never moves the end backwards. The fence
//! starts `stop_grace` plus [`FENCE_MARGIN`] before the lease ends
//! ([`fence_start`]), so SIGKILL lands before the lease's end even for a
//! module that ignores SIGTERM. While the lease fences ([`lease_fences`]),
//! an `at-most-one` module may not start ([`may_start`]); `at-least-one`
//! modules always may.
//!
//! The fence has a second line that does not depend on the agent: every
//! `at-most-one` module runs under a shim ([`crate::shim`]) that holds
//! [`shim_deadline`] itself and kills the module's whole tree when it
//! passes; the fence loop hands every renewal on to the shims.
//!
//! ## Data flow
//! [`Agent::fence_loop`] sleeps until the fence start of the current lease
//! (woken early by every renewal), then asks the table ([`Table::fence`])
//! which processes to stop. The stops run at once; [`Table::fenced`] then
//! records each module as `Fenced` and reports it.

use std::time::Duration;

use proto::heartbeat::{ModuleStatus, ReportKind};
use proto::spec::Fencing;
use tokio::time::Instant;

use super::Agent;
use super::table::{Effect, Table, Victim};
use crate::process::ProcessHandle;

/// Margin before the lease's end by which SIGKILL must have gone out, for
/// timer lateness and the kill itself.
pub const FENCE_MARGIN: Duration = Duration::from_millis(50);

/// The grace the fence allows under leases of `lease_ms`: the configured
/// `stop_grace`, but never more than half the lease less
/// [`FENCE_MARGIN`], so the fence starts no earlier than halfway through a
/// fresh lease and a few missed renewals do not stop anything. (With a
/// grace as long as the lease, every `at-most-one` module would be fenced
/// as soon as it started.) `0`: no lease granted yet, the configured grace.
pub fn fence_grace(stop_grace: Duration, lease_ms: u64) -> Duration {
    if lease_ms == 0 {
        return stop_grace;
    }
    stop_grace.min(Duration::from_millis(lease_ms / 2).saturating_sub(FENCE_MARGIN))
}

/// Longest lease the agent holds from one grant: a reply granting more
/// (a leader's bug or a forgery, up to `u64::MAX` ms) renews the lease for
/// this long only, with a warning ([`Table::accepted`]).
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// When the fence starts for a lease ending at `deadline`: `stop_grace`
/// (plus [`FENCE_MARGIN`]) earlier.
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

/// The deadline a module's shim holds ([`crate::shim`]): for an
/// `at-most-one` module, the lease end less [`FENCE_MARGIN`] (when the
/// fence's SIGKILL is due too), or `now` if no lease was ever granted;
/// `None` for an `at-least-one` module (no deadline). The shim kills the
/// module's whole tree at this deadline unless told a later one, whatever
/// the agent is doing by then.
pub fn shim_deadline(fencing: Fencing, lease: Option<Instant>, now: Instant) -> Option<Instant> {
    match fencing {
        Fencing::AtLeastOne => None,
        Fencing::AtMostOne => Some(match lease {
            Some(d) => d.checked_sub(FENCE_MARGIN).unwrap_or(d),
            None => now,
        }),
    }
}

/// The new lease end after a reply granting `lease_ms` to the heartbeat
/// sent at `sent_at`; 0 leaves the lease as it was. A grant never moves the
/// end backwards (a slow reply to an older heartbeat cannot shorten it).
/// A grant is capped at [`MAX_LEASE`]; an end past what the clock can hold
/// leaves the lease as it was.
pub fn renew(current: Option<Instant>, sent_at: Instant, lease_ms: u64) -> Option<Instant> {
    if lease_ms == 0 {
        return current;
    }
    let Some(granted) = sent_at.checked_add(Duration::from_millis(lease_ms).min(MAX_LEASE)) else {
        return current;
    };
    Some(match current {
        Some(c) if c > granted => c,
        _ => granted,
    })
}

impl Table {
    /// The shim deadline of `module`'s next process ([`shim_deadline`]).
    pub fn shim_deadline_of(&self, module: &str, now: Instant) -> Option<Instant> {
        let fencing = self.slot(module).map_or(Fencing::AtMostOne, |s| s.fencing);
        shim_deadline(fencing, self.lease, now)
    }

    /// The running `at-most-one` processes with the shim deadline of the
    /// current lease, for the fence loop to hand on after a renewal.
    pub fn leashed(&self, now: Instant) -> (Option<Instant>, Vec<ProcessHandle>) {
        let handles = self
            .slots
            .iter()
            .filter(|s| s.fencing == Fencing::AtMostOne)
            .filter_map(|s| s.proc.as_ref().map(|p| p.handle.clone()))
            .collect();
        (shim_deadline(Fencing::AtMostOne, self.lease, now), handles)
    }

    /// The fence fired at `now`: every `at-most-one` process is taken out of
    /// its slot to be stopped, unless the lease was renewed meanwhile.
    pub fn fence(&mut self, now: Instant) -> Vec<Effect> {
        if !lease_fences(self.lease, self.fence_grace(), now) {
            return vec![]; // renewed meanwhile
        }
        let victims: Vec<Victim> = self
            .slots
            .iter_mut()
            .filter(|s| s.fencing == Fencing::AtMostOne)
            .filter_map(|s| {
                s.take_proc().map(|handle| Victim {
                    module: s.name.clone(),
                    op: s.op,
                    handle,
                })
            })
            .collect();
        if victims.is_empty() {
            return vec![];
        }
        tracing::warn!(
            modules = victims.len(),
            "lease is running out without renewal: stopping at-most-one modules"
        );
        vec![Effect::Fence(victims)]
    }

    /// The processes of [`Table::fence`] are stopped (`how` each ended).
    pub fn fenced(&mut self, stopped: &[(Victim, String)]) -> Vec<Effect> {
        for (v, how) in stopped {
            let Some(slot) = self.slot_op(&v.module, v.op) else {
                continue;
            };
            let epoch = slot.epoch;
            slot.status = ModuleStatus::Fenced;
            slot.last_error = Some("fenced: lease expired".into());
            tracing::warn!(module = %v.module, pid = v.handle.pid, "fenced: {how}");
            self.report(
                &v.module,
                epoch,
                ReportKind::Fenced,
                format!("lease expired; process {} stopped ({how})", v.handle.pid),
            );
        }
        vec![Effect::Notify]
    }
}

impl Agent {
    /// Watches the lease and fences `at-most-one` modules before it ends.
    /// Runs until shutdown.
    pub async fn fence_loop(self) {
        let mut fenced_for: Option<Instant> = None;
        loop {
            let (lease, grace) = {
                let table = self.lock();
                (table.lease, table.fence_grace())
            };
            let wake = match lease {
                Some(d) if fenced_for != Some(d) => Some(fence_start(d, grace)),
                _ => None,
            };
            tokio::select! {
                _ = self.sh.shutdown.cancelled() => return,
                _ = self.sh.lease_changed.notified() => {
                    // Every shim holds the new deadline: a renewal the
                    // agent cannot hand on (stalled, hung, killed) is one
                    // the modules do not get.
                    let (deadline, handles) = self.lock().leashed(Instant::now());
                    for h in handles {
                        h.set_deadline(deadline);
                    }
                    continue;
                }
                _ = sleep_until_opt(wake) => {
                    let effects = self.lock().fence(Instant::now());
                    self.execute(effects).await;
                    fenced_for = lease;
                }
            }
        }
    }

    /// Executes [`Effect::Fence`]: every victim stopped at once, then
    /// recorded.
    pub(super) async fn stop_victims(&self, victims: Vec<Victim>) {
        let grace = self.lock().fence_grace();
        let outcomes =
            futures::future::join_all(victims.iter().map(|v| v.handle.stop(grace))).await;
        let stopped: Vec<(Victim, String)> = victims.into_iter().zip(outcomes).collect();
        let effects = self.lock().fenced(&stopped);
        self.execute(effects).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_fence_grace_is_at_most_half_the_lease() {
        let ms = Duration::from_millis;
        // Long leases: the configured grace.
        assert_eq!(fence_grace(ms(1000), 5000), ms(1000));
        assert_eq!(fence_grace(ms(500), 3000), ms(500));
        // A lease as long as the grace: half of it, less the margin.
        assert_eq!(fence_grace(ms(1000), 1000), ms(450));
        // No lease yet: the configured grace; tiny leases: no grace at all.
        assert_eq!(fence_grace(ms(1000), 0), ms(1000));
        assert_eq!(fence_grace(ms(1000), 80), ms(0));
        // Under a 1 s lease granted now, the fence starts after 500 ms.
        let t0 = Instant::now();
        let lease = renew(None, t0, 1000);
        let grace = fence_grace(ms(1000), 1000);
        assert!(!lease_fences(lease, grace, t0 + ms(499)));
        assert!(lease_fences(lease, grace, t0 + ms(500)));
    }

    #[test]
    fn a_huge_grant_is_capped() {
        let t0 = Instant::now();
        for lease_ms in [u64::MAX, 61_000, MAX_LEASE.as_millis() as u64] {
            assert_eq!(
                renew(None, t0, lease_ms),
                Some(t0 + MAX_LEASE),
                "grant of {lease_ms} ms"
            );
        }
        // A capped grant does not shorten a lease already further out.
        let far = Some(t0 + Duration::from_secs(90));
        assert_eq!(renew(far, t0, u64::MAX), far);
    }
}
