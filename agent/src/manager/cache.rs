//! The bound on the archive cache (`<data-dir>/cache/<sha256>.tar.gz`):
//! at most `--cache-max-bytes` of archives, least recently used evicted
//! first, never an archive a module held by this agent uses.
//!
//! ## Data flow
//! ```text
//! start ──► Cache::open (every cached archive, oldest use first by mtime)
//! install / restore / prefetch ──► Installer::archive ──► Cache::used(digest, bytes)
//!     (cache hit or fresh download; the file's mtime is set to now)
//! after each of them ──► Agent::trim_cache ──► Cache::evict(pinned) ──► files removed
//! ```
//! `pinned` is every digest of every module in the table (installed,
//! installing, restoring, stopped: the agent may need it again without
//! depmgr) and of the prefetches in flight. Last use is a counter in
//! memory (so ties cannot happen), seeded at start from the files'
//! modification times, which every use sets to now (so the order
//! survives a restart).
//!
//! ## Invariants
//! - An archive a module held by this agent uses is never evicted, even
//!   when the pinned archives alone exceed the bound (the cache is then
//!   over it; logged).
//! - Eviction only removes whole verified archives; a removed archive is
//!   downloaded again (by digest, verified) the next time it is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Default of `--cache-max-bytes`: 2 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// What the cache holds and when each archive was last used.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Grows with every use.
    clock: u64,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    bytes: u64,
    /// `clock` at the last use.
    used: u64,
}

/// The archives to evict from `entries` (digest → (bytes, last use)) so
/// that they total at most `max_bytes`: least recently used first, never a
/// `pinned` one. Pure.
pub fn victims(
    entries: &BTreeMap<String, (u64, u64)>,
    max_bytes: u64,
    pinned: &BTreeSet<String>,
) -> Vec<String> {
    let mut total: u64 = entries.values().map(|(b, _)| *b).sum();
    let mut order: Vec<(u64, &String, u64)> = entries
        .iter()
        .filter(|(d, _)| !pinned.contains(*d))
        .map(|(d, (bytes, used))| (*used, d, *bytes))
        .collect();
    order.sort();
    let mut out = Vec::new();
    for (_, digest, bytes) in order {
        if total <= max_bytes {
            break;
        }
        total = total.saturating_sub(bytes);
        out.push(digest.clone());
    }
    out
}

/// The digest of a cache file name `<sha256>.tar.gz`, if it is one.
fn digest_of(name: &str) -> Option<&str> {
    let d = name.strip_suffix(".tar.gz")?;
    proto::manifest::check_digest(d).ok().map(|_| d)
}

impl Cache {
    /// The cache in `dir` (every `<sha256>.tar.gz` there, ordered by
    /// modification time), bounded to `max_bytes`. Blocking (reads the
    /// directory once).
    pub fn open(dir: &Path, max_bytes: u64) -> Cache {
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        if let Ok(list) = std::fs::read_dir(dir) {
            for e in list.flatten() {
                let name = e.file_name();
                let Some(digest) = name.to_str().and_then(digest_of) else {
                    continue;
                };
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((mtime, digest.to_string(), meta.len()));
            }
        }
        found.sort();
        let mut inner = Inner::default();
        for (_, digest, bytes) in found {
            inner.clock += 1;
            inner.entries.insert(
                digest,
                Entry {
                    bytes,
                    used: inner.clock,
                },
            );
        }
        Cache {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes of archives held.
    pub fn total_bytes(&self) -> u64 {
        self.lock().entries.values().map(|e| e.bytes).sum()
    }

    /// Archives held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the archive `digest` is held (as far as this agent knows:
    /// it was stored or used, and not evicted or found corrupt since).
    pub fn holds(&self, digest: &str) -> bool {
        self.lock().entries.contains_key(digest)
    }

    /// The archive `digest` (`bytes` long) was just stored or used: it is
    /// now the most recently used. Sets the file's modification time so
    /// the order survives a restart (best effort). Blocking (one
    /// metadata call).
    pub fn used(&self, digest: &str, bytes: u64) {
        {
            let mut inner = self.lock();
            inner.clock += 1;
            let used = inner.clock;
            inner
                .entries
                .insert(digest.to_string(), Entry { bytes, used });
        }
        let path = self.dir.join(format!("{digest}.tar.gz"));
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// The archive `digest` is gone (found corrupt and removed).
    pub fn forget(&self, digest: &str) {
        self.lock().entries.remove(digest);
    }

    /// Takes out the archives to evict ([`victims`]) and returns their
    /// paths; the caller removes the files.
    pub fn evict(&self, pinned: &BTreeSet<String>) -> Vec<PathBuf> {
        let mut inner = self.lock();
        let entries: BTreeMap<String, (u64, u64)> = inner
            .entries
            .iter()
            .map(|(d, e)| (d.clone(), (e.bytes, e.used)))
            .collect();
        let out = victims(&entries, self.max_bytes, pinned);
        for d in &out {
            inner.entries.remove(d);
        }
        let total: u64 = inner.entries.values().map(|e| e.bytes).sum();
        if total > self.max_bytes {
            tracing::warn!(
                total_bytes = total,
                max_bytes = self.max_bytes,
                "the archive cache is over --cache-max-bytes: what is left is used by modules held here (or being pre-staged) and is never evicted"
            );
        }
        out.into_iter()
            .map(|d| self.dir.join(format!("{d}.tar.gz")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn least_recently_used_go_first_never_pinned_ones() {
        // a (oldest, pinned), b, c, e (newest): 40 bytes each, bound 100.
        let entries: BTreeMap<String, (u64, u64)> = [('a', 1), ('b', 2), ('c', 3), ('e', 4)]
            .into_iter()
            .map(|(c, used)| (d(c), (40, used)))
            .collect();
        let pinned = BTreeSet::from([d('a')]);
        assert_eq!(victims(&entries, 100, &pinned), [d('b'), d('c')]);
        assert_eq!(victims(&entries, 160, &pinned), Vec::<String>::new());
        assert_eq!(victims(&entries, 120, &BTreeSet::new()), [d('a')]);
        // Pinned ones alone over the bound: everything else goes, they stay.
        let all_but_e = BTreeSet::from([d('a'), d('b'), d('c')]);
        assert_eq!(victims(&entries, 10, &all_but_e), [d('e')]);
    }

    #[test]
    fn open_orders_by_modification_time_and_skips_other_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = std::time::SystemTime::now();
        for (c, age) in [('a', 10), ('b', 30), ('c', 20)] {
            let p = tmp.path().join(format!("{}.tar.gz", d(c)));
            std::fs::write(&p, vec![0u8; 10]).expect("write");
            let f = std::fs::File::options()
                .append(true)
                .open(&p)
                .expect("open");
            f.set_modified(now - std::time::Duration::from_secs(age))
                .expect("mtime");
        }
        std::fs::write(tmp.path().join("x.tmp"), b"partial").expect("write");
        let cache = Cache::open(tmp.path(), 15);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.total_bytes(), 30);
        // b is the oldest, then c.
        let gone = cache.evict(&BTreeSet::new());
        let names: Vec<String> = gone
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [format!("{}.tar.gz", d('b')), format!("{}.tar.gz", d('c'))]
        );
        // A use makes an archive the newest.
        let cache = Cache::open(tmp.path(), 15);
        cache.used(&d('b'), 10);
        assert_eq!(cache.evict(&BTreeSet::new()).len(), 2);
        assert!(cache.holds(&d('b')));
    }
}
