//! `supctl module <name>` and `supctl node <id>`: one module or node
//! described for an operator: what the admin API's views say, what the
//! node's agent says of the module's process (pid, restarts, last error),
//! and the recent events about it (read with `GET /v1/events` and
//! filtered here). `--json` prints the view alone.

use std::collections::VecDeque;
use std::time::Duration;

use admin_api::{AdminClient, EventView, ModuleView, NodeView};
use anyhow::Result;
use serde_json::Value;

/// Events fetched per request while looking for the recent ones.
const EVENTS_PAGE: usize = 10_000;
/// Width of the labels of a description (the longest and a space).
const LABEL_WIDTH: usize = 20;
/// Longest wait for a node's agent to answer its status.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// `supctl module <name>`.
pub async fn module(
    c: &AdminClient,
    name: &str,
    recent: usize,
    out: crate::output::Output,
    tls: Option<&std::sync::Arc<tls::Tls>>,
) -> Result<()> {
    let m = c.module(name).await?;
    if out.structured() {
        return out.print(&m);
    }
    let events = recent_events(c, recent, |e| about_module(e, name)).await?;
    let node = match &m.node {
        Some(n) => c.nodes().await?.into_iter().find(|v| &v.id == n),
        None => None,
    };
    let agent = match &node {
        Some(n) => Some(agent_module(&n.addr, name, tls).await),
        None => None,
    };
    print!(
        "{}",
        render_module(&m, node.as_ref(), agent.as_ref(), &events)
    );
    Ok(())
}

/// `supctl node <id>`.
pub async fn node(
    c: &AdminClient,
    id: &str,
    recent: usize,
    out: crate::output::Output,
    tls: Option<&std::sync::Arc<tls::Tls>>,
) -> Result<()> {
    let nodes = c.nodes().await?;
    let Some(n) = nodes.into_iter().find(|n| n.id == id) else {
        anyhow::bail!("unknown node {id:?} (`supctl nodes` lists them)");
    };
    if out.structured() {
        return out.print(&n);
    }
    let modules: Vec<ModuleView> = c
        .modules()
        .await?
        .into_iter()
        .filter(|m| n.modules.contains(&m.name))
        .collect();
    let events = recent_events(c, recent, |e| e.node.as_deref() == Some(id)).await?;
    let agent = agent_status(&n.addr, tls).await;
    print!("{}", render_node(&n, &modules, agent.as_ref(), &events));
    Ok(())
}

/// Whether `e` is about module `name`: it names it, or a removed node's
/// event lists it among the modules placed again.
fn about_module(e: &EventView, name: &str) -> bool {
    e.module.as_deref() == Some(name)
        || (e.kind == "node_removed"
            && e.detail
                .get("modules")
                .is_some_and(|m| m.split(',').any(|m| m == name)))
}

/// The newest `n` kept events that `keep`, oldest first.
async fn recent_events(
    c: &AdminClient,
    n: usize,
    keep: impl Fn(&EventView) -> bool,
) -> Result<Vec<EventView>> {
    let mut out: VecDeque<EventView> = VecDeque::new();
    let mut after = 0;
    loop {
        let page: Vec<EventView> = c
            .get(&format!("/v1/events?after={after}&limit={EVENTS_PAGE}"))
            .await?;
        let full = page.len() >= EVENTS_PAGE;
        for e in page {
            after = after.max(e.index);
            if keep(&e) {
                out.push_back(e);
                if out.len() > n {
                    out.pop_front();
                }
            }
        }
        if !full {
            return Ok(out.into());
        }
    }
}

/// What the node's agent says of itself (`GET /v1/status`), or why it
/// could not be asked.
async fn agent_status(addr: &str, tls: Option<&std::sync::Arc<tls::Tls>>) -> Result<Value, String> {
    let http = tls::client::http_builder(tls, &[tls::Role::Agent])
        .timeout(AGENT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}://{addr}/v1/status", tls::client::scheme(tls));
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", admin_api::client::error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url}: {status}"));
    }
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// The agent's entry for `module` (pid, restarts, last error), or why
/// there is none.
async fn agent_module(
    addr: &str,
    module: &str,
    tls: Option<&std::sync::Arc<tls::Tls>>,
) -> Result<Value, String> {
    let status = agent_status(addr, tls).await?;
    status["modules"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == module))
        .cloned()
        .ok_or_else(|| format!("the agent at {addr} does not hold {module}"))
}

/// Aligned `label: value` lines.
struct Fields(String);

impl Fields {
    fn new() -> Fields {
        Fields(String::new())
    }

    fn add(&mut self, label: &str, value: impl AsRef<str>) {
        let value = value.as_ref();
        let value = if value.is_empty() { "-" } else { value };
        self.0
            .push_str(&format!("{:<LABEL_WIDTH$}{value}\n", format!("{label}:")));
    }
}

/// `yyyy-mm-dd hh:mm:ss.mmmZ` of a time in ms since the Unix epoch.
pub fn timestamp(at_ms: u64) -> String {
    let (y, m, d) = crate::output::civil_date((at_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02} {}", crate::time_of_day(at_ms))
}

fn render_events(out: &mut String, events: &[EventView]) {
    if events.is_empty() {
        out.push_str("\nRecent events: none kept\n");
        return;
    }
    out.push_str("\nRecent events:\n");
    let kind_w = events.iter().map(|e| e.kind.len()).max().unwrap_or(4);
    for e in events {
        let detail: Vec<String> = e.detail.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let about = match (&e.module, &e.node) {
            (Some(m), Some(n)) => format!("{m}@{n}"),
            (Some(m), None) => m.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => "-".into(),
        };
        out.push_str(&format!(
            "  {:>6}  {}  {:<kind_w$}  {:<16} {}\n",
            e.index,
            timestamp(e.at_ms),
            e.kind,
            about,
            detail.join(" ")
        ));
    }
}

/// The description of a module (what `supctl module` prints).
fn render_module(
    m: &ModuleView,
    node: Option<&NodeView>,
    agent: Option<&Result<Value, String>>,
    events: &[EventView],
) -> String {
    let mut f = Fields::new();
    f.add("Name", &m.name);
    f.add("State", &m.state);
    f.add("Reason", m.reason.as_deref().unwrap_or(""));
    let placement = match (&m.node, m.epoch) {
        (Some(n), Some(e)) => {
            let status = node.map_or("unknown".to_string(), |v| v.status.clone());
            format!("{n} (node {status}), epoch {e}")
        }
        _ => "not placed".to_string(),
    };
    f.add("Node", placement);
    f.add("Placed by", m.placed_by.as_deref().unwrap_or(""));
    let rollout = m.rollout.as_ref().map_or(String::new(), |r| {
        format!(" (last rollout {} -> {}: {})", r.from, r.to, r.state)
    });
    f.add("Revision", format!("{}{rollout}", m.revision));
    f.add("Package", m.package.to_string());
    f.add(
        "Installed version",
        m.installed_version.as_deref().unwrap_or(""),
    );
    f.add(
        "Fencing",
        serde_json::to_value(m.fencing)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    );
    f.add("Restore attempts", m.restore_attempts.to_string());
    f.add("Failovers", m.failovers.to_string());
    f.add("Tried nodes", m.tried_nodes.join(", "));
    f.add("Updated", timestamp(m.updated_ms));
    match agent {
        Some(Ok(a)) => {
            let pid = a["pid"].as_u64().map_or("-".to_string(), |p| p.to_string());
            f.add(
                "Agent",
                format!(
                    "{}, epoch {}",
                    a["state"].as_str().unwrap_or("?"),
                    a["epoch"].as_u64().unwrap_or(0)
                ),
            );
            f.add("Pid", pid);
            f.add("Restarts", a["restarts"].as_u64().unwrap_or(0).to_string());
            f.add("Last error", a["last_error"].as_str().unwrap_or(""));
        }
        Some(Err(why)) => f.add("Agent", format!("not asked: {why}")),
        None => f.add("Agent", "none (not placed)"),
    }
    let mut out = f.0;
    render_events(&mut out, events);
    out
}

/// The description of a node (what `supctl node` prints).
fn render_node(
    n: &NodeView,
    modules: &[ModuleView],
    agent: Result<&Value, &String>,
    events: &[EventView],
) -> String {
    let mut f = Fields::new();
    f.add("Node", &n.id);
    f.add("Address", &n.addr);
    f.add("Status", &n.status);
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    f.add("Labels", labels.join(", "));
    match agent {
        Ok(a) => {
            f.add(
                "Agent",
                format!(
                    "incarnation {}, leader {}, lease {} ms left",
                    a["incarnation"].as_u64().unwrap_or(0),
                    a["leader"].as_str().unwrap_or("none"),
                    a["lease_ms_left"].as_u64().unwrap_or(0)
                ),
            );
        }
        Err(why) => f.add("Agent", format!("not reachable: {why}")),
    }
    let mut out = f.0;
    if modules.is_empty() {
        out.push_str("\nModules: none\n");
    } else {
        out.push_str("\nModules:\n");
        let name_w = modules.iter().map(|m| m.name.len()).max().unwrap_or(6);
        let pids: Vec<(String, String)> = match agent {
            Ok(a) => a["modules"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .map(|m| {
                            (
                                m["name"].as_str().unwrap_or("").to_string(),
                                m["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => vec![],
        };
        for m in modules {
            let pid = pids
                .iter()
                .find(|(name, _)| *name == m.name)
                .map_or("-", |(_, p)| p.as_str());
            out.push_str(&format!(
                "  {:<name_w$}  {:<12} epoch {:<8} pid {:<8} {}\n",
                m.name,
                m.state,
                m.epoch.map_or("-".to_string(), |e| e.to_string()),
                pid,
                m.reason.as_deref().unwrap_or("")
            ));
        }
    }
    render_events(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn event(index: u64, kind: &str, module: Option<&str>, node: Option<&str>) -> EventView {
        EventView {
            index,
            log_index: index,
            at_ms: 1_764_689_400_123 + index,
            kind: kind.into(),
            module: module.map(str::to_string),
            node: node.map(str::to_string),
            detail: BTreeMap::from([("epoch".to_string(), "17".to_string())]),
            cause: None,
        }
    }

    #[test]
    fn timestamps_carry_the_date() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000Z");
        // 2026-12-02 15:30:00.123 UTC
        assert_eq!(timestamp(1_796_225_400_123), "2026-12-02 15:30:00.123Z");
        // A leap day.
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000Z");
    }

    #[test]
    fn module_events_include_a_removed_node_that_unplaced_it() {
        let mut removed = event(3, "node_removed", None, Some("b"));
        removed.detail = BTreeMap::from([("modules".to_string(), "api,web".to_string())]);
        assert!(about_module(&removed, "web"));
        assert!(!about_module(&removed, "we"));
        assert!(about_module(
            &event(1, "placed", Some("web"), Some("a")),
            "web"
        ));
        assert!(!about_module(
            &event(2, "placed", Some("api"), Some("a")),
            "web"
        ));
    }

    #[test]
    fn a_module_description_names_what_an_operator_asks() {
        let m: ModuleView = serde_json::from_value(serde_json::json!({
            "name": "web", "node": "a", "epoch": 17, "state": "failed",
            "restore_attempts": 3, "failovers": 2,
            "package": {"name": "web", "version": "1.0.0"},
            "fencing": "at-most-one", "reason": "install on b failed: sha256 mismatch",
            "tried_nodes": ["a", "b"], "placed_by": "failover",
            "installed_version": "1.0.0", "updated_ms": 1_796_225_400_123u64,
            "revision": 2, "rollout": null
        }))
        .expect("view");
        let agent: Result<Value, String> = Ok(serde_json::json!({
            "name": "web", "epoch": 17, "state": "failed", "pid": 4242,
            "restarts": 1, "last_error": "exit status 3"
        }));
        let events = [event(9, "module_failed", Some("web"), Some("b"))];
        let text = render_module(&m, None, Some(&agent), &events);
        let line = |label: &str, value: &str| format!("{:<20}{value}\n", format!("{label}:"));
        for want in [
            line("State", "failed"),
            line("Reason", "install on b failed: sha256 mismatch"),
            line("Node", "a (node unknown), epoch 17"),
            line("Placed by", "failover"),
            line("Revision", "2"),
            line("Installed version", "1.0.0"),
            line("Tried nodes", "a, b"),
            line("Pid", "4242"),
            line("Restarts", "1"),
            line("Last error", "exit status 3"),
            line("Updated", "2026-12-02 15:30:00.123Z"),
            "module_failed  web@b".to_string(),
        ] {
            assert!(text.contains(&want), "{want:?} not in\n{text}");
        }
        let unreachable: Result<Value, String> = Err("connection refused".to_string());
        let text = render_module(&m, None, Some(&unreachable), &[]);
        assert!(
            text.contains(&line("Agent", "not asked: connection refused")),
            "{text}"
        );
        assert!(text.contains("Recent events: none kept"), "{text}");
    }
}
