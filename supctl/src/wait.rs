//! The commands that wait: `supctl deploy`, `update`, `rollback` and
//! `drain` follow the cluster until the change has settled, showing each
//! step, and exit non-zero with the reason when it failed.
//!
//! - deploy: settled once the module runs healthy (success) or failed for
//!   good (failure: the module's reason, or the last event's).
//! - update / rollback: once the rollout to the new revision completed
//!   (success) or was reverted, or the module failed (failure).
//! - drain: once every module the cluster can move (as `POST /v1/plan`
//!   predicted before the drain) runs on another node; modules left on the
//!   node or without a node make it a failure naming them.
//!
//! Two sources, so that nothing is missed and nothing hangs: the event
//! stream (`GET /v1/events/stream`, from the newest event before the
//! command, filtered to its modules) gives the steps as they happen, and
//! the module views, read after each event and every half second, decide
//! when it has settled. Without the stream (an error, a proxy that cuts
//! it) the views alone still get there.
//!
//! On a terminal (stdout and stderr both) the steps show as a spinner with
//! the current step and a line per step done; otherwise each step is a
//! plain line on stderr. The result is one line on stdout. `--timeout`
//! ends the wait (exit 1, saying the change goes on and how to watch it);
//! `--detach` (and `-o json|yaml`) does not wait at all.

use std::io::IsTerminal;
use std::time::Duration;

use admin_api::{AdminClient, EventFilter, EventView, ModuleView, StreamItem};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the module views are read while no event comes.
const POLL: Duration = Duration::from_millis(500);

/// The default of `--timeout` of the commands that wait.
pub const DEFAULT_TIMEOUT: &str = "2m";

/// `--timeout`: `90`, `90s`, `2m`, `1h`, `500ms` (a bare number is
/// seconds, as it always was).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 2m, 1h)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" | "min" | "mins" => n * 60,
        "h" => n * 3600,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// How steps are shown: a spinner on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Prefix of the plain lines (the module or node).
    label: String,
    current: Option<String>,
}

impl Progress {
    /// A spinner when stdout and stderr are terminals.
    pub fn new(label: &str) -> Progress {
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Progress::with(label, tty)
    }

    pub fn with(label: &str, tty: bool) -> Progress {
        let bar = tty.then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
            {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_string());
            bar.set_message("waiting for the cluster");
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            current: None,
        }
    }

    /// The step now (shown once: a repeat is ignored).
    pub fn step(&mut self, text: &str) {
        if self.current.as_deref() == Some(text) {
            return;
        }
        match &self.bar {
            Some(bar) => {
                if let Some(done) = self.current.take() {
                    bar.println(format!("  ✓ {done}"));
                }
                bar.set_message(text.to_string());
            }
            None => eprintln!("  {}: {text}", self.label),
        }
        self.current = Some(text.to_string());
    }

    /// Removes the spinner (the result follows on stdout).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            if let Some(done) = self.current.take() {
                bar.println(format!("  ✓ {done}"));
            }
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a command waits for.
#[derive(Debug, Clone)]
pub enum Goal {
    /// A deployed module runs healthy.
    Deploy { name: String, epoch: u64 },
    /// A rollout (update or rollback) to `revision` of `name` settled.
    Rollout { name: String, revision: u32 },
    /// The modules of a draining node moved: `movable` (as the plan
    /// predicted) run elsewhere; `staying` (with why) were not expected to.
    Drain {
        node: String,
        movable: Vec<String>,
        staying: Vec<(String, String)>,
    },
}

impl Goal {
    fn modules(&self) -> Vec<String> {
        match self {
            Goal::Deploy { name, .. } | Goal::Rollout { name, .. } => vec![name.clone()],
            Goal::Drain { movable, .. } => movable.clone(),
        }
    }

    fn label(&self) -> String {
        match self {
            Goal::Deploy { name, .. } | Goal::Rollout { name, .. } => name.clone(),
            Goal::Drain { node, .. } => format!("drain {node}"),
        }
    }

    /// How to watch it after supctl stopped waiting.
    fn watch_hint(&self) -> String {
        match self {
            Goal::Deploy { name, .. } => format!(
                "`supctl events -f --module {name}` follows it, `supctl module {name}` shows it"
            ),
            Goal::Rollout { name, .. } => format!(
                "`supctl events -f --module {name}` follows it, `supctl history {name}` shows its revisions"
            ),
            Goal::Drain { node, .. } => {
                format!("`supctl events -f` follows it, `supctl node {node}` shows what is left")
            }
        }
    }
}

/// The index of the newest event (0: none): a waiting command follows the
/// stream from there, so that it sees every event its action causes.
pub async fn newest_event(c: &AdminClient) -> u64 {
    c.events_where(None, Some(1), &EventFilter::default())
        .await
        .ok()
        .and_then(|e| e.last().map(|e| e.index))
        .unwrap_or(0)
}

/// Follows the event stream after `after` in a task, sending each event
/// (the stream reconnects on its own; an error ends it, the views go on).
fn follow(c: &AdminClient, after: u64, modules: &[String]) -> mpsc::Receiver<EventView> {
    let (tx, rx) = mpsc::channel(256);
    let filter = EventFilter {
        module: Some(modules.join(",")),
        ..EventFilter::default()
    };
    let mut stream = c.follow_events(after, filter);
    tokio::spawn(async move {
        let mut errors = 0;
        loop {
            match stream.next().await {
                Ok(StreamItem::Event(e)) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Ok(StreamItem::Gap(_)) => {}
                // No replica reachable this round: the views decide.
                Err(e) if e.status().is_none() && errors < 3 => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            }
        }
    });
    rx
}

/// What an event means for the module, as a step.
pub fn event_step(e: &EventView) -> Option<String> {
    let d = |k: &str| e.detail.get(k).cloned().unwrap_or_default();
    let on = e.node.as_deref().unwrap_or("?");
    let because = |k: &str| match e.detail.get(k) {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    };
    Some(match e.kind.as_str() {
        "module_deployed" => "deployed".to_string(),
        "placed" => format!("placed on {on} (epoch {})", d("epoch")),
        "package_retrieved" => format!("installing on {on}: package {} retrieved", d("version")),
        "installed" => format!("running on {on}"),
        "failure_detected" => format!("down on {on}"),
        "restore_ordered" => format!("restoring on {on} ({} of {})", d("attempt"), d("of")),
        "restored" => format!("running on {on} again"),
        "failover_started" => format!("failing over to {on}{}", because("reason")),
        "previous_released" => format!("old copy on {on} stopped"),
        "install_failed" => format!("install failed on {on}{}", because("reason")),
        "start_failed" => format!("start failed on {on}{}", because("reason")),
        "failover_failed" => format!("failed on {on} too{}", because("reason")),
        "failover_completed" => format!("running on {on} (failover done)"),
        "module_failed" => format!("failed{}", because("reason")),
        "drain_moved" => format!(
            "{} moved from {} to {on}",
            e.module.as_deref().unwrap_or("?"),
            d("from")
        ),
        "failover_waiting" => format!("waiting for a node{}", because("reason")),
        "rollout_started" => format!("rollout from revision {} to {}", d("from"), d("to")),
        "rollout_completed" => format!("rollout to revision {} completed", d("to")),
        "rollout_reverted" => format!(
            "reverted from revision {} to {}{}",
            d("from"),
            d("to"),
            because("reason")
        ),
        "package_quarantined" => format!("package {} quarantined", d("package")),
        _ => return None,
    })
}

/// The module's state as a step (what the view says when no event said
/// more).
fn state_step(m: &ModuleView) -> String {
    let on = m.node.as_deref().unwrap_or("no node");
    match m.state.as_str() {
        "pending" => "waiting for a node".to_string(),
        "installing" => format!("installing on {on}"),
        "running" => format!("running on {on}"),
        "restoring" => format!("restoring on {on}"),
        "failing_over" => format!("failing over to {on}"),
        other => format!("{other} on {on}"),
    }
}

/// Where a wait stands after reading the views.
enum Check {
    Waiting,
    Done(String),
    Failed(String),
}

/// Waits for `goal`; `Ok(line)`: the settled state, for stdout; an error
/// naming why it failed, or that it is still in progress at the timeout.
pub async fn wait(c: &AdminClient, goal: &Goal, after: u64, timeout: Duration) -> Result<String> {
    let mut progress = Progress::new(&goal.label());
    let result = wait_with(c, goal, after, timeout, &mut progress).await;
    progress.finish();
    result
}

async fn wait_with(
    c: &AdminClient,
    goal: &Goal,
    after: u64,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let modules = goal.modules();
    let mut events = if modules.is_empty() {
        None
    } else {
        Some(follow(c, after, &modules))
    };
    // The last failure an event named: the reason of a failure when the
    // view has none.
    let mut last_reason: Option<String> = None;
    let mut states: Vec<Option<String>> = vec![None; modules.len()];
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            e = async { events.as_mut()?.recv().await }, if events.is_some() => match e {
                Some(e) => {
                    if let Some(r) = e.detail.get("reason").filter(|r| !r.is_empty()) {
                        last_reason = Some(r.clone());
                    }
                    if let Some(step) = event_step(&e) {
                        progress.step(&step);
                    }
                }
                None => events = None,
            },
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                bail!(
                    "{} has not settled after {}: still in progress, it goes on (the cluster drives it); {}",
                    goal_text(goal),
                    human(timeout),
                    goal.watch_hint()
                );
            }
        }
        let mut views = Vec::new();
        for (i, name) in modules.iter().enumerate() {
            // A view that cannot be read now is read again at the next tick.
            let Ok(m) = c.module(name).await else {
                views.clear();
                break;
            };
            // A change of state the events did not show (no stream).
            let step = state_step(&m);
            if states[i].as_deref() != Some(m.state.as_str()) {
                if states[i].is_some() && events.is_none() {
                    progress.step(&step);
                }
                states[i] = Some(m.state.clone());
            }
            views.push(m);
        }
        if views.len() != modules.len() {
            continue;
        }
        match check(goal, &views, last_reason.as_deref()) {
            Check::Waiting => {}
            Check::Done(line) => return Ok(line),
            Check::Failed(why) => bail!(why),
        }
    }
}

fn goal_text(goal: &Goal) -> String {
    match goal {
        Goal::Deploy { name, .. } => format!("the deploy of {name}"),
        Goal::Rollout { name, revision } => format!("the rollout of {name} to revision {revision}"),
        Goal::Drain { node, .. } => format!("the drain of {node}"),
    }
}

/// `2m`, `90s`, `1h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{} ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Why it failed: the module's reason and, when it says something else,
/// the last error an event named (the cause, e.g. the command that could
/// not be started, behind "no node left").
fn reason(view: Option<&str>, last_event: Option<&str>) -> String {
    match (view.filter(|r| !r.is_empty()), last_event) {
        (Some(v), Some(e)) if !v.contains(e) => format!("{v}; last error: {e}"),
        (Some(v), _) => v.to_string(),
        (None, Some(e)) => e.to_string(),
        (None, None) => "no reason recorded".to_string(),
    }
}

fn check(goal: &Goal, views: &[ModuleView], last_reason: Option<&str>) -> Check {
    match goal {
        Goal::Deploy { name, epoch } => {
            let m = &views[0];
            match m.state.as_str() {
                "running" => Check::Done(format!(
                    "deployed {name} (epoch {epoch}): running on {} ({})",
                    m.node.as_deref().unwrap_or("-"),
                    m.package
                )),
                "failed" | "stopped" => Check::Failed(format!(
                    "{name} {}: {} (`supctl why {name}` shows how it got there; fix the cause, then `supctl reset {name}`)",
                    m.state,
                    reason(m.reason.as_deref(), last_reason)
                )),
                _ => Check::Waiting,
            }
        }
        Goal::Rollout { name, revision } => {
            let m = &views[0];
            let revision = *revision;
            match m.rollout.as_ref() {
                Some(r) if r.state == "completed" && r.to == revision => Check::Done(format!(
                    "{name}: revision {revision} running on {} ({})",
                    m.node.as_deref().unwrap_or("-"),
                    m.package
                )),
                Some(r) if r.state == "reverted" && r.from == revision => Check::Failed(format!(
                    "{name}: revision {revision} failed and was reverted to revision {}: {}",
                    m.revision,
                    r.reason
                        .as_deref()
                        .or(last_reason)
                        .unwrap_or("no reason recorded")
                )),
                // Another rollout took over (an operator, or a revert after
                // a quarantine).
                Some(r) if r.to != revision && r.from != revision => Check::Failed(format!(
                    "{name}: another rollout (revision {} to {}) replaced the one to revision {revision}",
                    r.from, r.to
                )),
                _ if m.state == "failed" => Check::Failed(format!(
                    "{name} failed: {} (`supctl why {name}` shows how it got there)",
                    reason(m.reason.as_deref(), last_reason)
                )),
                _ => Check::Waiting,
            }
        }
        Goal::Drain { node, staying, .. } => {
            let mut moved = Vec::new();
            let mut failed = Vec::new();
            for m in views {
                let elsewhere = m.node.as_deref().is_some_and(|n| n != node);
                match m.state.as_str() {
                    "running" if elsewhere => moved.push(format!(
                        "{} to {}",
                        m.name,
                        m.node.as_deref().unwrap_or("-")
                    )),
                    "failed" | "stopped" => failed.push(format!(
                        "{} {}: {}",
                        m.name,
                        m.state,
                        m.reason.as_deref().unwrap_or("no reason recorded")
                    )),
                    _ if m.node.is_none() && m.state != "installing" => failed.push(format!(
                        "{} has no node: {}",
                        m.name,
                        m.reason.as_deref().unwrap_or("waiting for one")
                    )),
                    _ => return Check::Waiting,
                }
            }
            let moved_text = if moved.is_empty() {
                "nothing moved".to_string()
            } else {
                format!("moved {}", moved.join(", "))
            };
            let mut left: Vec<String> = failed;
            left.extend(
                staying
                    .iter()
                    .map(|(m, why)| format!("{m} stays on {node}: {why}")),
            );
            if left.is_empty() {
                Check::Done(format!("drained {node}: {moved_text}"))
            } else {
                Check::Failed(format!(
                    "drain of {node} incomplete ({moved_text}); {} (add or undrain a node that may take them, or `supctl plan drain {node}` to see why)",
                    left.join("; ")
                ))
            }
        }
    }
}

/// What a drain of `node` will do, before it starts: the modules on it
/// that the cluster will move, and those it will not (with why), from
/// `POST /v1/plan`. Without an answer, every module on the node is
/// expected to move.
pub async fn drain_goal(c: &AdminClient, node: &str) -> Result<Goal> {
    let on_node: Vec<String> = c
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.id == node)
        .map(|n| n.modules)
        .unwrap_or_default();
    let plan = c
        .plan(&serde_json::json!({"action": "drain", "node": node}))
        .await
        .ok();
    let (movable, staying) = match plan {
        Some(p) => {
            let movable: Vec<String> = on_node
                .iter()
                .filter(|m| p.moves.iter().any(|mv| &mv.module == *m))
                .cloned()
                .collect();
            let staying = on_node
                .iter()
                .filter(|m| !movable.contains(m))
                .map(|m| {
                    let why = p
                        .waiting
                        .iter()
                        .chain(&p.failed)
                        .find(|w| &w.module == m)
                        .map_or_else(
                            || "no eligible node to move it to".to_string(),
                            |w| w.reason.clone(),
                        );
                    (m.clone(), why)
                })
                .collect();
            (movable, staying)
        }
        None => (on_node, Vec::new()),
    };
    Ok(Goal::Drain {
        node: node.to_string(),
        movable,
        staying,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }

    fn view(state: &str, node: Option<&str>, reason: Option<&str>) -> ModuleView {
        serde_json::from_value(serde_json::json!({
            "name": "web", "node": node, "epoch": 9, "state": state,
            "restore_attempts": 0, "failovers": 0,
            "package": {"name": "web", "version": "1.0.0"}, "fencing": "at-most-one",
            "reason": reason, "tried_nodes": [], "placed_by": "initial",
            "installed_version": null, "updated_ms": 0
        }))
        .expect("view")
    }

    #[test]
    fn a_deploy_settles_running_or_failed() {
        let goal = Goal::Deploy {
            name: "web".into(),
            epoch: 5,
        };
        assert!(matches!(
            check(&goal, &[view("installing", Some("b"), None)], None),
            Check::Waiting
        ));
        match check(&goal, &[view("running", Some("b"), None)], None) {
            Check::Done(line) => {
                assert_eq!(line, "deployed web (epoch 5): running on b (web@1.0.0)")
            }
            _ => panic!("running is done"),
        }
        match check(
            &goal,
            &[view("failed", None, None)],
            Some("cannot start /nope: No such file or directory"),
        ) {
            Check::Failed(why) => assert!(why.contains("web failed: cannot start /nope"), "{why}"),
            _ => panic!("failed is a failure"),
        }
    }

    #[test]
    fn a_drain_names_what_stays() {
        let goal = Goal::Drain {
            node: "a".into(),
            movable: vec!["web".into()],
            staying: vec![("api".into(), "no eligible node".into())],
        };
        assert!(matches!(
            check(&goal, &[view("running", Some("a"), None)], None),
            Check::Waiting
        ));
        match check(&goal, &[view("running", Some("b"), None)], None) {
            Check::Failed(why) => assert!(
                why.contains("moved web to b") && why.contains("api stays on a: no eligible node"),
                "{why}"
            ),
            _ => panic!("a module left behind is a failure"),
        }
        let all = Goal::Drain {
            node: "a".into(),
            movable: vec!["web".into()],
            staying: vec![],
        };
        match check(&all, &[view("running", Some("b"), None)], None) {
            Check::Done(line) => assert_eq!(line, "drained a: moved web to b"),
            _ => panic!("moved"),
        }
    }

    #[test]
    fn events_read_as_steps() {
        let e = EventView {
            index: 3,
            log_index: 9,
            at_ms: 0,
            kind: "placed".into(),
            module: Some("web".into()),
            node: Some("b".into()),
            detail: BTreeMap::from([("epoch".to_string(), "9".to_string())]),
            cause: None,
        };
        assert_eq!(event_step(&e).as_deref(), Some("placed on b (epoch 9)"));
        let e = EventView {
            kind: "node_ready".into(),
            ..e
        };
        assert_eq!(event_step(&e), None);
    }
}
