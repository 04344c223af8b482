//! The packages depmgr confirmed to exist, so that a deploy does not cost
//! a round trip to depmgr each time.
//!
//! A deploy is refused (404) when depmgr does not know its package
//! (`name@version`, an exact version). depmgr's packages are immutable
//! once pushed, so an answer "it exists" stays true: it is cached for
//! `--package-cache-ttl-ms` (then asked again, in case the package was
//! quarantined or the depmgr replaced), for at most [`MAX_ENTRIES`]
//! packages (beyond that the oldest answer is forgotten first). "It does
//! not exist" is never cached: the package may be pushed the next moment,
//! and the next deploy must see it, so an unknown package costs a round
//! trip every time and is answered 404 every time. An error or a timeout
//! is not an answer and is not cached either.
//!
//! Each replica has its own cache (a deploy is checked by the leader; a
//! new leader starts with its own, possibly empty, cache).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::manifest::PackageRef;

/// Most packages remembered at once.
pub const MAX_ENTRIES: usize = 10_000;

/// What depmgr says of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// depmgr holds it.
    Exists,
    /// depmgr answered 404.
    Missing,
    /// No answer (unreachable, timeout, another error): why.
    NoAnswer(String),
}

/// Positive answers of depmgr, each until it expires.
pub struct PackageCache {
    ttl: Duration,
    inner: Mutex<Entries>,
    /// Checks answered from the cache, and checks that asked depmgr.
    pub hits: AtomicU64,
    pub lookups: AtomicU64,
}

#[derive(Default)]
struct Entries {
    /// Package → when its answer was received.
    known: HashMap<PackageRef, Instant>,
    /// The same, by time (for evicting the oldest); `seq` breaks ties.
    by_age: BTreeMap<(Instant, u64), PackageRef>,
    seq: u64,
}

impl PackageCache {
    /// A cache keeping positive answers for `ttl` (zero: keeps nothing,
    /// every check asks depmgr).
    pub fn new(ttl: Duration) -> PackageCache {
        PackageCache {
            ttl,
            inner: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().expect("package cache lock poisoned")
    }

    /// Whether depmgr said `package` exists less than the TTL ago.
    pub fn knows(&self, package: &PackageRef) -> bool {
        let now = Instant::now();
        let mut e = self.entries();
        match e.known.get(package) {
            Some(at) if now.duration_since(*at) < self.ttl => true,
            Some(at) => {
                let at = *at;
                e.known.remove(package);
                e.by_age.retain(|(t, _), p| !(*t == at && p == package));
                false
            }
            None => false,
        }
    }

    /// Records that depmgr said `package` exists, now.
    fn remember(&self, package: &PackageRef) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut e = self.entries();
        if let Some(old) = e.known.insert(package.clone(), now) {
            e.by_age.retain(|(t, _), p| !(*t == old && p == package));
        }
        e.seq += 1;
        let seq = e.seq;
        e.by_age.insert((now, seq), package.clone());
        while e.known.len() > MAX_ENTRIES {
            let Some((_, oldest)) = e.by_age.pop_first() else {
                break;
            };
            e.known.remove(&oldest);
        }
    }

    /// Whether `package` exists: from the cache when depmgr said so within
    /// the TTL, else by `ask` (depmgr), whose positive answer is cached.
    pub async fn check<F, Fut>(&self, package: &PackageRef, ask: F) -> Lookup
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        if self.knows(package) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Exists;
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = ask().await;
        if answer == Lookup::Exists {
            self.remember(package);
        }
        answer
    }

    /// Packages remembered now (expired ones included until asked).
    pub fn len(&self) -> usize {
        self.entries().known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn pkg(name: &str, version: &str) -> PackageRef {
        PackageRef::new(name, version)
    }

    /// A depmgr that knows `web@1.0.0` only, counting the questions.
    struct Depmgr {
        asked: AtomicU32,
    }

    impl Depmgr {
        async fn show(&self, p: &PackageRef) -> Lookup {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if p == &pkg("web", "1.0.0") {
                Lookup::Exists
            } else {
                Lookup::Missing
            }
        }
        fn asked(&self) -> u32 {
            self.asked.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_known_package_is_answered_without_depmgr_an_unknown_one_is_asked_every_time() {
        let cache = PackageCache::new(Duration::from_secs(3600));
        let depmgr = Depmgr {
            asked: AtomicU32::new(0),
        };
        let web = pkg("web", "1.0.0");
        assert_eq!(
            cache.check(&web, || depmgr.show(&web)).await,
            Lookup::Exists
        );
        assert_eq!(depmgr.asked(), 1);
        for _ in 0..5 {
            assert_eq!(
                cache.check(&web, || depmgr.show(&web)).await,
                Lookup::Exists
            );
        }
        assert_eq!(depmgr.asked(), 1, "known: answered from the cache");
        assert_eq!(cache.hits.load(Ordering::Relaxed), 5);

        // Unknown (another version of a known package too): asked each
        // time, answered Missing each time, never remembered.
        for missing in [pkg("web", "2.0.0"), pkg("nope", "1.0.0")] {
            for _ in 0..3 {
                assert_eq!(
                    cache.check(&missing, || depmgr.show(&missing)).await,
                    Lookup::Missing
                );
            }
        }
        assert_eq!(depmgr.asked(), 7);
        assert_eq!(cache.len(), 1);

        // No answer is not cached either.
        let down = pkg("down", "1.0.0");
        let e = cache
            .check(&down, || async { Lookup::NoAnswer("timeout".into()) })
            .await;
        assert_eq!(e, Lookup::NoAnswer("timeout".into()));
        assert!(!cache.knows(&down));
    }

    #[tokio::test]
    async fn answers_expire_and_a_zero_ttl_keeps_nothing() {
        let web = pkg("web", "1.0.0");
        let off = PackageCache::new(Duration::ZERO);
        assert_eq!(
            off.check(&web, || async { Lookup::Exists }).await,
            Lookup::Exists
        );
        assert!(off.is_empty() && !off.knows(&web));

        // An answer older than the TTL is asked again (the entry is aged
        // by hand: no sleeping).
        let cache = PackageCache::new(Duration::from_secs(1));
        cache.check(&web, || async { Lookup::Exists }).await;
        assert!(cache.knows(&web));
        {
            let mut e = cache.entries();
            let old = Instant::now() - Duration::from_secs(2);
            e.known.insert(web.clone(), old);
            e.by_age.clear();
            e.by_age.insert((old, 0), web.clone());
        }
        assert!(!cache.knows(&web), "expired");
        assert!(cache.is_empty());
        let asked = AtomicU32::new(0);
        let again = cache
            .check(&web, || async {
                asked.fetch_add(1, Ordering::SeqCst);
                Lookup::Missing
            })
            .await;
        assert_eq!(again, Lookup::Missing, "depmgr's new answer counts");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest_first() {
        let cache = PackageCache::new(Duration::from_secs(3600));
        for i in 0..MAX_ENTRIES + 10 {
            cache.remember(&pkg("p", &format!("1.0.{i}")));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(!cache.knows(&pkg("p", "1.0.0")));
        assert!(!cache.knows(&pkg("p", "1.0.9")));
        assert!(cache.knows(&pkg("p", "1.0.10")));
        assert!(cache.knows(&pkg("p", &format!("1.0.{}", MAX_ENTRIES + 9))));
    }
}
