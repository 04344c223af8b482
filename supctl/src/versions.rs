//! `supctl update`, `rollback`, `history`, `rollout` and `quarantine`:
//! moving modules between revisions and following the rollout until it has
//! settled.

use std::time::{Duration, Instant};

use admin_api::views::{FleetRolloutView, StartRollout};
use admin_api::{AdminClient, ModuleView, RevisionView, Updated};
use anyhow::{Result, bail};

/// How often a waiting command asks for the module again.
const POLL: Duration = Duration::from_millis(250);

/// How a rollout ended, as a waiting command saw it.
pub enum Settled {
    Completed(ModuleView),
    Reverted(ModuleView),
}

/// Waits until the rollout to `revision` of `name` is no longer in
/// progress (or `timeout` passes), printing each change of its state.
pub async fn wait_rollout(
    c: &AdminClient,
    name: &str,
    revision: u32,
    timeout: Duration,
    quiet: bool,
) -> Result<Settled> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let m = c.module(name).await?;
        let rollout = m.rollout.as_ref();
        let step = format!(
            "{} on {} (revision {}{})",
            m.state,
            m.node.as_deref().unwrap_or("no node"),
            m.revision,
            rollout.map_or(String::new(), |r| format!(", rollout {}", r.state))
        );
        if step != last && !quiet {
            eprintln!("  {name}: {step}");
            last = step;
        }
        match rollout {
            Some(r) if r.state == "completed" && r.to == revision => {
                return Ok(Settled::Completed(m));
            }
            Some(r) if r.state == "reverted" && r.from == revision => {
                return Ok(Settled::Reverted(m));
            }
            // Another rollout took over (an operator, or a revert after a
            // quarantine): say what the module does now.
            Some(r) if r.to != revision && r.from != revision => {
                bail!(
                    "{name}: another rollout (revision {} to {}) replaced the one to revision {revision}",
                    r.from,
                    r.to
                );
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "{name}: the rollout to revision {revision} has not settled after {timeout:?} (now {last}); it goes on: follow it with `supctl events --follow` or `supctl history {name}`"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints how an update or rollback ended; an error when it was reverted.
pub fn report(name: &str, u: &Updated, settled: Settled) -> Result<()> {
    match settled {
        Settled::Completed(m) => {
            println!(
                "{name}: revision {} running on {} ({})",
                u.revision,
                m.node.as_deref().unwrap_or("-"),
                m.package
            );
            Ok(())
        }
        Settled::Reverted(m) => {
            let reason = m
                .rollout
                .and_then(|r| r.reason)
                .unwrap_or_else(|| "no reason recorded".into());
            bail!(
                "{name}: revision {} failed and was reverted to revision {}: {reason}",
                u.revision,
                m.revision
            )
        }
    }
}

pub fn print_history(revisions: &[RevisionView]) {
    println!(
        "{:>8}  {:<24} {:<11} {:>4} {:>8} {:>9}  SINCE",
        "REVISION", "PACKAGE", "OUTCOME", "GOOD", "RESTORES", "FAILOVERS"
    );
    for r in revisions {
        println!(
            "{:>8}  {:<24} {:<11} {:>4} {:>8} {:>9}  {}",
            r.revision,
            r.package.to_string(),
            r.outcome,
            if r.good { "yes" } else { "no" },
            r.restores,
            r.failovers,
            crate::time_of_day(r.at_ms)
        );
    }
}

/// `name@version`, split.
pub fn parse_package(s: &str) -> Result<(String, String)> {
    match s.split_once('@') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => bail!("{s:?} is not <package>@<version> (e.g. web@1.0.1)"),
    }
}

/// `supctl rollout <package>@<version>`: starts a fleet rollout (the
/// cluster updates every module whose spec uses `package` at another
/// version, `max_parallel` at a time, each behind its health gate, and
/// pauses once more than `max_failures` failed), then follows it until it
/// completed (exit 0, or 1 when some modules failed), paused or was
/// cancelled (exit 1 with the reason), printing each module as it settles.
pub async fn fleet_rollout(
    c: &AdminClient,
    package: &str,
    max_parallel: u32,
    max_failures: u32,
    detach: bool,
    timeout: Duration,
) -> Result<()> {
    let (name, version) = parse_package(package)?;
    let f = c
        .start_rollout(&StartRollout {
            package: name,
            version,
            max_parallel,
            max_failures,
        })
        .await?;
    let total = f.pending.len();
    if detach {
        println!(
            "rollout {} of {}: {total} modules, {} at a time (follow it with `supctl rollouts show {}`)",
            f.id, f.package, f.max_parallel, f.id
        );
        return Ok(());
    }
    if total == 0 {
        println!("no module uses {} at another version", f.package);
        return Ok(());
    }
    eprintln!(
        "rollout {} of {}: {total} modules, {} at a time",
        f.id, f.package, f.max_parallel
    );
    let deadline = Instant::now() + timeout;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let f = c.rollout(f.id).await?;
        for m in &f.active {
            if seen.insert(format!("active {}", m.module)) {
                eprintln!(
                    "  {}: updating to revision {}",
                    m.module,
                    m.revision.unwrap_or_default()
                );
            }
        }
        for m in &f.completed {
            if seen.insert(format!("done {m}")) {
                eprintln!("  {m}: healthy");
            }
        }
        for m in f.failed.iter().chain(&f.skipped) {
            if seen.insert(format!("done {}", m.module)) {
                let what = if f.failed.contains(m) {
                    "failed"
                } else {
                    "skipped"
                };
                eprintln!(
                    "  {}: {what}: {}",
                    m.module,
                    m.reason.as_deref().unwrap_or("-")
                );
            }
        }
        let summary = format!(
            "rollout {} of {}: {} updated, {} failed, {} skipped, {} not started",
            f.id,
            f.package,
            f.completed.len(),
            f.failed.len(),
            f.skipped.len(),
            f.pending.len()
        );
        match f.state.as_str() {
            "completed" if f.failed.is_empty() => {
                println!("{summary}");
                return Ok(());
            }
            "completed" => bail!("{summary}"),
            "paused" | "cancelled" => bail!(
                "{summary}; {}: {} (resume it with `supctl rollouts resume {}`, or cancel it)",
                f.state,
                f.reason.as_deref().unwrap_or("no reason recorded"),
                f.id
            ),
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "{summary}; still running after {timeout:?}: it goes on (follow it with `supctl rollouts show {}`)",
                f.id
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `supctl rollouts`: one line per fleet rollout.
pub fn print_rollouts(list: &[FleetRolloutView]) {
    println!(
        "{:>4}  {:<24} {:<10} {:>7} {:>6} {:>7} {:>6} {:>7}  STARTED",
        "ID", "PACKAGE", "STATE", "PENDING", "ACTIVE", "UPDATED", "FAILED", "SKIPPED"
    );
    for f in list {
        println!(
            "{:>4}  {:<24} {:<10} {:>7} {:>6} {:>7} {:>6} {:>7}  {}",
            f.id,
            f.package.to_string(),
            f.state,
            f.pending.len(),
            f.active.len(),
            f.completed.len(),
            f.failed.len(),
            f.skipped.len(),
            crate::time_of_day(f.started_ms)
        );
    }
}

/// `supctl rollouts show <id>`: the rollout and its modules.
pub fn print_rollout(f: &FleetRolloutView) {
    println!(
        "rollout {} of {}: {} ({} at a time, pauses after {} failures){}",
        f.id,
        f.package,
        f.state,
        f.max_parallel,
        f.max_failures,
        f.reason
            .as_deref()
            .map_or(String::new(), |r| format!(": {r}"))
    );
    for m in &f.active {
        println!(
            "  active     {} (revision {})",
            m.module,
            m.revision.unwrap_or_default()
        );
    }
    for m in &f.completed {
        println!("  updated    {m}");
    }
    for m in &f.failed {
        println!(
            "  failed     {}: {}",
            m.module,
            m.reason.as_deref().unwrap_or("-")
        );
    }
    for m in &f.skipped {
        println!(
            "  skipped    {}: {}",
            m.module,
            m.reason.as_deref().unwrap_or("-")
        );
    }
    for m in &f.pending {
        println!("  pending    {m}");
    }
}
