//! `jepsen`: partition tests of the whole cluster on namespaced hosts.
//!
//! ```text
//! jepsen [--seed N] [--seeds K] [--secs S] [--out DIR] [--append-md FILE]
//! ```
//!
//! Runs seeds N, N+1, … N+K-1 (N random when not given; each is printed
//! with the command that replays it), each with S seconds of faults, then a
//! heal and a quiet period. Each run leaves `history.jsonl`, `summary.json`
//! and the processes' logs under `DIR/seed-<N>/`. Exits 1 if any checker
//! found a violation, 2 if the harness itself could not run. Needs root:
//! it creates network namespaces and iptables rules, all inside private
//! namespaces of its own so that nothing outlives it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jepsen::cluster;
use jepsen::netns::{self, INNER_ENV};
use jepsen::run::{self, RunConfig, Summary};

#[derive(Debug, Parser, Clone)]
#[command(name = "jepsen", about = "Partition tests of the supervisor cluster")]
struct Args {
    /// First seed (random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run, one after another.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Seconds of faults per seed (the heal and the observation come after).
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Where runs leave their files.
    #[arg(long, default_value = "jepsen-runs")]
    out: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 2)]
    clients: u32,
    /// Append a table row per seed to this Markdown file.
    #[arg(long)]
    append_md: Option<PathBuf>,
}

fn main() {
    let code = match std::env::var(INNER_ENV).as_deref() {
        Ok("init") => netns::run_as_init().unwrap_or_else(|e| {
            eprintln!("jepsen: {e:#}");
            2
        }),
        Ok("harness") => harness(Args::parse()),
        _ => {
            // Parse here too, so bad flags and --help answer before any
            // namespace is made.
            Args::parse();
            if !nix::unistd::geteuid().is_root() {
                eprintln!(
                    "jepsen: must run as root (it creates network namespaces and iptables rules)"
                );
                std::process::exit(2);
            }
            netns::reexec_in_private_namespaces().unwrap_or_else(|e| {
                eprintln!("jepsen: {e:#}");
                2
            })
        }
    };
    std::process::exit(code);
}

fn harness(args: Args) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jepsen: starting the runtime: {e}");
            return 2;
        }
    };
    let bins = match cluster::bin_dir() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("jepsen: {e:#}");
            return 2;
        }
    };
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let out = std::path::absolute(&args.out).unwrap_or(args.out.clone());
    let mut summaries: Vec<Summary> = vec![];
    let mut harness_failed = false;
    for seed in first..first + args.seeds {
        println!(
            "seed {seed} ({} s of faults; replay: jepsen --seed {seed} --secs {})",
            args.secs, args.secs
        );
        let dir = out.join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RunConfig {
            seed,
            length: Duration::from_secs(args.secs),
            dir: dir.clone(),
            bins: bins.clone(),
            clients: args.clients,
        };
        match rt.block_on(run::run(&cfg)) {
            Ok(s) => {
                print_summary(&s, &dir);
                summaries.push(s);
            }
            Err(e) => {
                eprintln!("seed {seed}: the harness failed: {e:#}");
                harness_failed = true;
            }
        }
    }
    if let Some(md) = &args.append_md {
        let mut text = std::fs::read_to_string(md).unwrap_or_default();
        for s in &summaries {
            text.push_str(&md_row(s));
        }
        if let Err(e) = std::fs::write(md, text) {
            eprintln!("jepsen: writing {}: {e}", md.display());
        }
    }
    let bad: Vec<u64> = summaries
        .iter()
        .filter(|s| !s.ok())
        .map(|s| s.seed)
        .collect();
    println!(
        "{} seeds run, {} with violations{}",
        summaries.len(),
        bad.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(" (seeds {bad:?})")
        }
    );
    if harness_failed {
        2
    } else if !bad.is_empty() {
        1
    } else {
        0
    }
}

fn print_summary(s: &Summary, dir: &std::path::Path) {
    let ops: Vec<String> = s.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let faults: Vec<String> = s
        .faults
        .iter()
        .map(|(k, (n, took))| format!("{k} {took}/{n}"))
        .collect();
    println!("  operations: {}", ops.join(", "));
    println!("  faults (took effect/injected): {}", faults.join(", "));
    println!(
        "  ledger: {} alive records, {} crash records",
        s.alive_records, s.crash_records
    );
    match s.converge_ms {
        Some(ms) => println!("  converged {ms} ms after the heal"),
        None => println!("  never converged"),
    }
    if s.ok() {
        println!("  no violations ({})", dir.display());
    } else {
        println!(
            "  VIOLATIONS: {:?} (history in {})",
            s.violations,
            dir.join("history.jsonl").display()
        );
        for v in s.report.violations.iter().take(20) {
            println!(
                "    [{}] {}: {}",
                v.checker,
                v.module.as_deref().unwrap_or("-"),
                v.message
            );
        }
    }
}

fn md_row(s: &Summary) -> String {
    let count = |prefix: &str| -> usize {
        s.ops
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    };
    let by_outcome = |o: &str| -> usize {
        s.ops
            .iter()
            .filter(|(k, _)| k.ends_with(o))
            .map(|(_, v)| *v)
            .sum()
    };
    let faults: usize = s.faults.values().map(|(n, _)| n).sum();
    let took: usize = s.faults.values().map(|(_, t)| t).sum();
    format!(
        "| {} | {} | {} ({} ok / {} fail / {} unknown) | {}/{} | {} | {} | {} |\n",
        s.seed,
        s.length_s,
        count("deploy") + count("remove") + count("read"),
        by_outcome("/ok"),
        by_outcome("/fail"),
        by_outcome("/unknown"),
        took,
        faults,
        s.converge_ms
            .map(|m| format!("{:.1} s", m as f64 / 1000.0))
            .unwrap_or_else(|| "never".into()),
        s.alive_records,
        if s.violations.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", s.violations)
        }
    )
}
