//! `supctl rollout` and `rollouts`: fleet rollouts, followed until they
//! settled (`update` and `rollback` wait in `wait`).

use std::time::{Duration, Instant};

use admin_api::AdminClient;
use admin_api::views::{FleetRolloutView, StartRollout};
use anyhow::{Result, bail};

/// How often `supctl rollout` asks for the rollout again.
const POLL: Duration = Duration::from_millis(250);

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
