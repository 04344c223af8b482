//! Pre-staging on this node: a `Prefetch` directive names a module placed
//! on another node that would fail over here next; its configuration
//! package's archives are downloaded by digest and verified into the cache
//! (the install pipeline's [`super::install::Installer::fetch`]), nothing
//! unpacked or started, so that the install after a failover takes them
//! from the cache without depmgr. The leader is told with a `prestaged`
//! report.
//!
//! ## Rules
//! - Never in the way: a prefetch runs in a task of its own (the heartbeat
//!   loop and the directive applier only start it), at most
//!   [`MAX_PREFETCHES`] at a time (a directive beyond that is dropped; the
//!   leader repeats it), one per module; each download is bounded by
//!   `--fetch-timeout-ms` and by the archive size limit. It touches nothing
//!   but the cache, and the cache never evicts an archive a module held
//!   here uses.
//! - Repeats are no-ops: one for a prefetch in flight is dropped; one for
//!   a package whose archives are all in the cache is answered at once
//!   with the report again (a new leader learns it that way), without any
//!   download.
//! - A failure (depmgr unreachable, a digest mismatch, a timeout) is
//!   logged once per module, epoch and error; nothing is reported: the
//!   leader keeps repeating the directive, and a failover to this node
//!   would fetch the package as usual.
//! - After every prefetch, install and restore the cache is trimmed to
//!   `--cache-max-bytes` ([`super::cache`]); the archives of prefetches in
//!   flight are kept like those of held modules.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proto::heartbeat::Prefetch;

use super::Agent;

/// Most prefetches running at once.
pub const MAX_PREFETCHES: usize = 2;
/// Failures remembered for log-once; the memory is cleared past it.
const MAX_LOGGED_FAILURES: usize = 1000;

/// The prefetches in flight and the failures already logged.
#[derive(Debug, Default)]
pub(super) struct Prefetches {
    /// Module → the digests of the package being fetched.
    in_flight: BTreeMap<String, Vec<String>>,
    logged: HashSet<String>,
}

impl Agent {
    /// Executes [`super::Effect::Prefetch`]: answers a repeat from the
    /// cache, or starts the download task (see the module docs).
    pub(super) async fn prefetch(&self, p: Box<Prefetch>) {
        let digests: Vec<String> = p
            .package
            .artifacts
            .iter()
            .map(|a| a.digest.clone())
            .collect();
        let cache = self.sh.installer.cache();
        if !digests.is_empty() && digests.iter().all(|d| cache.holds(d)) {
            let message = format!("{} archives cached (already there)", digests.len());
            let effects = self.lock().prestaged(&p.module, p.epoch, message);
            self.execute(effects).await;
            return;
        }
        {
            let mut pf = self.lock_prefetches();
            if pf.in_flight.contains_key(&p.module) || pf.in_flight.len() >= MAX_PREFETCHES {
                return;
            }
            pf.in_flight.insert(p.module.clone(), digests);
        }
        tracing::info!(module = %p.module, epoch = p.epoch, package = %p.package.manifest.package_ref(), "pre-staging the package of a module that would fail over here");
        let agent = self.clone();
        self.sh
            .tasks
            .spawn(async move { agent.run_prefetch(p).await });
    }

    async fn run_prefetch(self, p: Box<Prefetch>) {
        let started = std::time::Instant::now();
        let fetched = tokio::select! {
            _ = self.sh.shutdown.cancelled() => None,
            r = self.sh.installer.fetch(&p.package, &p.depmgr) => Some(r),
        };
        match fetched {
            None => {
                self.lock_prefetches().in_flight.remove(&p.module);
            }
            Some(Ok((archives, bytes))) => {
                // Trimmed while its own archives are still pinned: older
                // ones go first.
                self.trim_cache().await;
                self.lock_prefetches().in_flight.remove(&p.module);
                tracing::info!(module = %p.module, epoch = p.epoch, archives, bytes, ms = started.elapsed().as_millis() as u64, "package pre-staged");
                let message = format!("{archives} archives cached ({bytes} bytes)");
                let effects = self.lock().prestaged(&p.module, p.epoch, message);
                self.execute(effects).await;
            }
            Some(Err(e)) => {
                let key = format!("{}/{}/{e}", p.module, p.epoch);
                let first = {
                    let mut pf = self.lock_prefetches();
                    pf.in_flight.remove(&p.module);
                    if pf.logged.len() >= MAX_LOGGED_FAILURES {
                        pf.logged.clear();
                    }
                    pf.logged.insert(key)
                };
                if first {
                    tracing::warn!(module = %p.module, epoch = p.epoch, "pre-staging failed: {e}");
                }
                self.trim_cache().await;
            }
        }
    }

    fn lock_prefetches(&self) -> std::sync::MutexGuard<'_, Prefetches> {
        self.sh.prefetches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evicts the least recently used archives beyond `--cache-max-bytes`,
    /// never one of a module held here or of a prefetch in flight.
    pub(super) async fn trim_cache(&self) {
        let mut pinned: BTreeSet<String> = self.lock().held_digests();
        pinned.extend(self.lock_prefetches().in_flight.values().flatten().cloned());
        let victims = self.sh.installer.cache().evict(&pinned);
        if victims.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for path in victims {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(path = %path.display(), "evicted from the archive cache (least recently used)"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %path.display(), "cannot evict from the archive cache: {e}"),
                }
            }
        })
        .await;
    }
}
