//! Same-run references for the benches and the fleet simulator: what this
//! machine does with the product's own server stack, measured in the same
//! run as the figures it is set beside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `GET url` in a closed loop from `conns` tasks sharing `http` (so up to
/// `conns` connections) for `length`: successful requests a second. Each
/// request has a 5 s timeout; failures are not counted.
pub async fn get_rate(http: &reqwest::Client, url: &str, conns: usize, length: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (http, url, count) = (http.clone(), url.to_string(), count.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let ok = http
                        .get(&url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
