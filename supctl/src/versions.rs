//! `supctl update`, `rollback`, `history`, `rollout` and `quarantine`:
//! moving modules between revisions and following the rollout until it has
//! settled.

use std::time::{Duration, Instant};

use admin_api::{AdminClient, ModuleView, RevisionView, Updated};
use anyhow::{Context, Result, bail};

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

/// `supctl rollout <package>@<version>`: every module whose current spec
/// uses `package` at another version is updated to `version`,
/// `max_parallel` at a time, each waiting for its health gate; once more
/// than `max_failures` have been reverted, no further module is started
/// and the command fails, naming what was left.
pub async fn fleet_rollout(
    c: &AdminClient,
    package: &str,
    max_parallel: usize,
    max_failures: usize,
    timeout: Duration,
) -> Result<()> {
    let (name, version) = parse_package(package)?;
    let modules = c.modules().await?;
    let targets: Vec<ModuleView> = modules
        .into_iter()
        .filter(|m| m.package.name == name && m.package.version != version)
        .collect();
    if targets.is_empty() {
        println!("no module uses {name} at another version than {version}");
        return Ok(());
    }
    println!(
        "rolling out {name}@{version} to {} modules, {} at a time",
        targets.len(),
        max_parallel.max(1)
    );
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    let mut queue = targets.into_iter();
    loop {
        if failed.len() > max_failures {
            let left: Vec<String> = queue.map(|m| m.name).collect();
            bail!(
                "paused: {} modules reverted ({}), more than --max-failures {max_failures}; {} updated; not started: {}",
                failed.len(),
                failed.join(", "),
                done.len(),
                if left.is_empty() {
                    "none".to_string()
                } else {
                    left.join(", ")
                }
            );
        }
        let wave: Vec<ModuleView> = queue.by_ref().take(max_parallel.max(1)).collect();
        if wave.is_empty() {
            break;
        }
        let mut waits = Vec::new();
        for m in &wave {
            let history = c.history(&m.name).await?;
            let current = history
                .iter()
                .find(|r| r.revision == m.revision)
                .with_context(|| {
                    format!("{}: revision {} is not in its history", m.name, m.revision)
                })?;
            let mut spec = serde_json::to_value(&current.spec)?;
            spec["package"]["version"] = serde_json::Value::String(version.clone());
            match c.update(&m.name, &spec).await {
                Ok(u) => waits.push((m.name.clone(), u)),
                Err(e) => {
                    eprintln!("  {}: not updated: {e}", m.name);
                    failed.push(m.name.clone());
                }
            }
        }
        for (module, u) in waits {
            match wait_rollout(c, &module, u.revision, timeout, true).await? {
                Settled::Completed(_) => {
                    println!("  {module}: revision {} healthy", u.revision);
                    done.push(module);
                }
                Settled::Reverted(m) => {
                    let reason = m.rollout.and_then(|r| r.reason).unwrap_or_default();
                    println!("  {module}: reverted to revision {}: {reason}", m.revision);
                    failed.push(module);
                }
            }
        }
    }
    if failed.is_empty() {
        println!("{name}@{version}: {} modules updated", done.len());
        Ok(())
    } else {
        bail!(
            "{name}@{version}: {} modules updated, {} reverted or refused ({})",
            done.len(),
            failed.len(),
            failed.join(", ")
        )
    }
}
