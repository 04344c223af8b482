//! Waiting for a condition with a deadline, never a bare sleep.
//!
//! [`eventually`] is the one way a test waits: it polls an async check until
//! the check yields a value, and panics naming what it waited for when the
//! deadline passes. [`poll_until`] is the same loop for a caller that wants
//! to handle the deadline itself (a harness that reports an error instead of
//! panicking).
//!
//! The check runs at once, then after 5 ms, and the pause doubles up to
//! 50 ms: a cheap local check (a lock, a file, `/proc`) sees a change within
//! a few milliseconds, and a check that asks a cluster over HTTP does not
//! send it more than about 20 requests a second. The last check runs at the
//! deadline.

use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Polls `check` until it yields `Some`, or `None` once `timeout` has
/// passed.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Polls `check` until it yields `Some`, or panics naming `what` once
/// `timeout` has passed.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}
