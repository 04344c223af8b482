//! Pre-staging on the agent binary (against a fake supervisor and a fake
//! depmgr): a `Prefetch` directive downloads and verifies a package into
//! the cache without installing anything, repeats are no-ops, a later
//! install takes it from the cache without depmgr, and the cache stays
//! within `--cache-max-bytes`, least recently used first, never evicting
//! an archive a held module uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::heartbeat::{ModuleStatus, ReportKind};
use proto::spec::Fencing;
use testkit::agent_proc::{AgentArgs, AgentProc};
use testkit::directives::{install, prefetch};
use testkit::eventually;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::fake_supervisor::FakeSupervisor;
use testkit::package::{BuiltPackage, PackageBuilder};

const SLEEPER: &str = include_str!("modules/sleeper.sh");
const T: Duration = Duration::from_secs(10);

/// A module package with `kib` KiB of incompressible payload (so archive
/// sizes are predictable), distinct per `seed`.
fn package(name: &str, seed: u64, kib: usize) -> BuiltPackage {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let payload: Vec<u8> = (0..kib * 1024)
        .map(|_| {
            // xorshift64: deterministic, incompressible enough for gzip.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    PackageBuilder::new(name, "1.0.0", "command = \"bin/run\"\n")
        .file("bin/run", SLEEPER, 0o755)
        .file("payload.bin", payload, 0o644)
        .build()
}

fn cached(data: &Path, p: &BuiltPackage) -> PathBuf {
    data.join("cache").join(format!("{}.tar.gz", p.digest))
}

struct World {
    tmp: tempfile::TempDir,
    sup: FakeSupervisor,
    pkgs: FakeDepmgr,
}

impl World {
    async fn new() -> World {
        World {
            tmp: tempfile::tempdir().expect("tempdir"),
            sup: FakeSupervisor::start().await,
            pkgs: FakeDepmgr::start().await,
        }
    }
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    async fn agent(&self, extra: &[&str]) -> AgentProc {
        let data = self.data();
        let mut args = AgentArgs::new(&data, &self.sup.addr);
        args.extra = extra.iter().map(|s| s.to_string()).collect();
        let a = AgentProc::spawn(args);
        a.ready().await;
        a
    }
    /// Waits until `n` more heartbeats were answered (the directives in
    /// force were repeated that many times).
    async fn beats(&self, n: usize) {
        let from = self.sup.beat_count();
        eventually(&format!("{n} more heartbeats"), T, || async {
            (self.sup.beat_count() >= from + n).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn prefetch_caches_the_package_and_the_install_needs_no_depmgr() {
    let w = World::new().await;
    let web = package("web", 1, 16);
    let lib = package("lib", 2, 4);
    w.pkgs.put(&web);
    w.pkgs.put(&lib);
    let _agent = w.agent(&[]).await;
    w.sup
        .set_directives(vec![prefetch("web", 5, &[&lib, &web], &w.pkgs.url)]);
    let r = w.sup.wait_report("web", ReportKind::Prestaged, T).await;
    assert_eq!(r.epoch, 5);
    assert!(r.message.starts_with("2 archives cached"), "{r:?}");
    // Both archives are in the cache, whole and verified.
    for p in [&web, &lib] {
        let bytes = std::fs::read(cached(&w.data(), p)).expect("cached archive");
        assert_eq!(bytes, p.bytes);
    }
    assert_eq!(w.pkgs.fetches(), 2);
    // Nothing installed: the module is not in the table, nothing unpacked.
    assert!(w.sup.module("web").is_none());
    assert!(!w.data().join("modules").join("web").exists());
    // The leader repeats it (level-triggered): no download again.
    w.beats(5).await;
    assert_eq!(w.pkgs.fetches(), 2, "a repeat downloaded again");
    // The failover: depmgr is gone, the install takes the cache.
    w.pkgs.shutdown();
    w.sup.set_directives(vec![install(
        "web",
        9,
        Fencing::AtMostOne,
        &[&lib, &web],
        &w.pkgs.url,
    )]);
    let seen = w.sup.wait_status("web", ModuleStatus::Running, T).await;
    assert_eq!(seen.epoch, 9);
    assert_eq!(w.pkgs.fetches(), 2);
}

#[tokio::test]
async fn a_tampered_archive_is_not_prestaged() {
    let w = World::new().await;
    let web = package("web", 3, 4);
    let other = package("web", 4, 4);
    w.pkgs.put(&web);
    // depmgr answers web's digest with other bytes.
    w.pkgs.put_bytes(&web.digest, other.bytes.clone());
    let _agent = w.agent(&[]).await;
    w.sup
        .set_directives(vec![prefetch("web", 5, &[&web], &w.pkgs.url)]);
    // Tried (and repeated: each try downloads again) but never cached.
    eventually("two download attempts", T, || async {
        (w.pkgs.fetches() >= 2).then_some(())
    })
    .await;
    w.beats(3).await;
    assert!(!cached(&w.data(), &web).exists());
    assert!(
        !w.sup
            .reports()
            .iter()
            .any(|r| r.kind == ReportKind::Prestaged),
        "{:?}",
        w.sup.reports()
    );
}

/// Four archives that do not all fit: the held module's (the oldest use)
/// stays, the least recently used prefetched one goes.
#[tokio::test]
async fn the_cache_bound_evicts_the_least_recently_used_never_a_held_module() {
    let w = World::new().await;
    let a = package("a", 10, 16);
    let b = package("b", 11, 16);
    let c = package("c", 12, 16);
    let d = package("d", 13, 16);
    for p in [&a, &b, &c, &d] {
        w.pkgs.put(p);
    }
    // Room for three of the four.
    let bound: usize = [&a, &b, &c, &d]
        .iter()
        .map(|p| p.bytes.len())
        .sum::<usize>()
        - 1;
    let max = bound.to_string();
    let _agent = w.agent(&["--cache-max-bytes", &max]).await;
    let held = install("a", 1, Fencing::AtMostOne, &[&a], &w.pkgs.url);
    w.sup.set_directives(vec![held.clone()]);
    w.sup.wait_status("a", ModuleStatus::Running, T).await;
    for p in [&b, &c, &d] {
        w.sup
            .set_directives(vec![held.clone(), prefetch(&p.name, 2, &[p], &w.pkgs.url)]);
        w.sup.wait_report(&p.name, ReportKind::Prestaged, T).await;
    }
    // d's prefetch went over the bound: b, the least recently used of
    // those no module here uses, was evicted; a, older still, is held.
    eventually("b evicted", T, || async {
        (!cached(&w.data(), &b).exists()).then_some(())
    })
    .await;
    for p in [&a, &c, &d] {
        assert!(cached(&w.data(), p).exists(), "{} evicted", p.name);
    }
    let total: u64 = std::fs::read_dir(w.data().join("cache"))
        .expect("cache dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(total <= bound as u64, "{total} > {bound}");
    assert_eq!(
        w.sup.module("a").map(|s| s.status),
        Some(ModuleStatus::Running)
    );
}
