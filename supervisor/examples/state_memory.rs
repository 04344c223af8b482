//! What the replicated state costs in memory at fleet scale, part by part,
//! in one process without a cluster: N modules are deployed through
//! `ClusterState::apply` (as the write-path bench's deploys are: pending on
//! a label no node has, 18 to a log entry), then the state's parts are
//! dropped one by one and the heap each gave back is printed, with the
//! encoded size of the state (a snapshot's payload) and how long encoding
//! takes.
//!
//! `cargo run --release --example state_memory -- [modules]` (default
//! 1,000,000). Heap figures are glibc's `mallinfo2` (bytes in use), so they
//! are exact whatever the allocator keeps for reuse; RSS is `/proc`.

use std::time::Instant;

use proto::spec::ModuleSpec;
use supervisor::state::{Batch, ClusterState, Deploy, ModuleRecord, Transition};

/// Heap bytes in use (small blocks and mmapped ones). The workspace denies
/// `unsafe`; this measuring tool calls one C function that only reads
/// counters.
#[allow(unsafe_code)]
fn in_use() -> i64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as i64
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn spec(name: &str) -> ModuleSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "package": {"name": "demo", "version": "1.0.0"},
        "placement": {"labels": {"zone": "nowhere"}}
    }))
    .expect("spec")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("modules: a number"));
    let per_entry = 18;
    println!(
        "sizes: ModuleRecord {} B, ModuleSpec {} B, Event {} B (inline, before heap parts)",
        size_of::<ModuleRecord>(),
        size_of::<ModuleSpec>(),
        size_of::<proto::record::Event>()
    );
    let base = in_use();
    let rss0 = testkit::procstat::rss_mb(std::process::id());
    let mut s = ClusterState::default();
    let started = Instant::now();
    let mut index = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(per_entry) {
        index += 1;
        let transitions = chunk
            .iter()
            .map(|i| {
                Transition::Deploy(Deploy {
                    spec: spec(&format!("m{i:07}")),
                })
            })
            .collect();
        s.apply(
            index,
            &Batch {
                at_ms: 1_700_000_000_000 + index,
                transitions,
            },
        );
    }
    let total = in_use() - base;
    println!(
        "{n} modules in {index} entries applied in {:.1} s: heap {:.0} MB ({:.0} B a module), RSS +{:.0} MB",
        started.elapsed().as_secs_f64(),
        mb(total),
        total as f64 / n as f64,
        testkit::procstat::rss_mb(std::process::id()) - rss0
    );

    let t = Instant::now();
    let frozen = s.frozen();
    let before = in_use();
    println!(
        "frozen copy (what a snapshot encodes from): {:.1} ms, heap +{:.1} MB",
        t.elapsed().as_secs_f64() * 1e3,
        mb(before - in_use()).abs()
    );
    let t = Instant::now();
    let bytes = proto::encode(&frozen).expect("encode");
    println!(
        "encoded: {:.0} MB ({:.0} B a module) in {:.2} s",
        mb(bytes.len() as i64),
        bytes.len() as f64 / n as f64,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let decoded: ClusterState = proto::decode(&bytes).expect("decode");
    println!(
        "decoded (what installing a snapshot does): {:.2} s, equal: {}",
        t.elapsed().as_secs_f64(),
        decoded == s
    );
    drop((bytes, decoded, frozen));

    // Part by part: what each gives back when dropped.
    let mut parts = Vec::new();
    let mut took = |name: &str, s: &mut ClusterState, f: &dyn Fn(&mut ClusterState)| {
        let before = in_use();
        f(s);
        parts.push((name.to_string(), before - in_use()));
    };
    took("why (causal chains)", &mut s, &|s| {
        s.why = Default::default()
    });
    took("versions", &mut s, &|s| s.versions = Default::default());
    took("events (last 10,000)", &mut s, &|s| {
        s.events = Default::default()
    });
    took("placed (index by node)", &mut s, &|s| {
        s.placed = Default::default()
    });
    took("modules (records)", &mut s, &|s| {
        s.modules = Default::default()
    });
    took("the rest (planner index, ...)", &mut s, &|s| {
        *s = ClusterState::default()
    });
    println!("heap by part:");
    for (name, bytes) in &parts {
        println!(
            "  {name:<32} {:>8.1} MB {:>6.0} B a module",
            mb(*bytes),
            *bytes as f64 / n as f64
        );
    }
}
