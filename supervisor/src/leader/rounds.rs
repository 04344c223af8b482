//! [`Rounds`]: batches "has something finished that started after I
//! asked?" waits. Heartbeat replies wait for a control-loop pass and for a
//! leadership confirmation that started after the heartbeat arrived; many
//! heartbeats in flight share one round instead of each starting its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Batches "has something finished that started after I asked?" waits:
/// a round started after `ticket()` returned is enough for that caller.
pub struct Rounds {
    next: AtomicU64,
    done: watch::Sender<(u64, bool)>,
    /// Wakes the task that runs rounds.
    pub wake: Notify,
}

impl Rounds {
    pub fn new() -> Self {
        Rounds {
            next: AtomicU64::new(1),
            done: watch::channel((0, true)).0,
            wake: Notify::new(),
        }
    }

    /// Asks for a round and waits until one that started after this call
    /// has finished; its result, or `None` on timeout.
    pub async fn wait(&self, timeout: Duration) -> Option<bool> {
        let ticket = self.next.load(Ordering::SeqCst);
        self.wake.notify_one();
        let mut rx = self.done.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|(id, _)| *id >= ticket)).await;
        match waited {
            Ok(Ok(v)) => Some(v.1),
            _ => None,
        }
    }

    /// Starts a round: returns its id.
    pub fn start(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    pub fn finish(&self, id: u64, ok: bool) {
        self.done.send_replace((id, ok));
    }
}

impl Default for Rounds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_needs_a_round_that_started_after_it_asked() {
        let rounds = std::sync::Arc::new(Rounds::new());
        // A round started before the wait does not answer it.
        let early = rounds.start();
        let r = rounds.clone();
        let waiter = tokio::spawn(async move { r.wait(Duration::from_secs(10)).await });
        // The waiter wakes the runner; run that round.
        rounds.wake.notified().await;
        rounds.finish(early, false);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "an earlier round answered a later wait"
        );
        let id = rounds.start();
        rounds.finish(id, true);
        assert_eq!(waiter.await.expect("waiter"), Some(true));
    }

    #[tokio::test]
    async fn a_wait_with_no_round_times_out() {
        let rounds = Rounds::new();
        assert_eq!(rounds.wait(Duration::from_millis(20)).await, None);
    }
}
