//! `supctl why <module>`: the causal chain that put a module where it is
//! (`GET /v1/modules/{name}/why`), newest first, each decision in words
//! with the event it answers. `--json` prints the chain as the API does.

use admin_api::{AdminClient, ModuleView, WhyStep};
use anyhow::Result;

use crate::describe::timestamp;

/// `supctl why <module>`.
pub async fn why(c: &AdminClient, name: &str, out: crate::output::Output) -> Result<()> {
    let chain = c.why(name).await?;
    if out.structured() {
        return out.print(&chain);
    }
    let m = c.module(name).await?;
    print!("{}", render(&m, &chain));
    Ok(())
}

/// Where the module is now, then its chain: one line per event (index,
/// time, words, and `<- #N` naming the event that led to it).
pub fn render(m: &ModuleView, chain: &[WhyStep]) -> String {
    let mut out = String::new();
    let on = m
        .node
        .as_deref()
        .map_or_else(|| "on no node".to_string(), |n| format!("on {n}"));
    let epoch = m
        .epoch
        .map_or_else(|| "none".to_string(), |e| e.to_string());
    out.push_str(&format!(
        "{} is {} {on} (epoch {epoch}, revision {})",
        m.name, m.state, m.revision
    ));
    if let Some(reason) = &m.reason {
        out.push_str(&format!(": {reason}"));
    }
    out.push('\n');
    if chain.is_empty() {
        out.push_str("no recorded decisions about it yet\n");
        return out;
    }
    out.push_str("because, newest first:\n");
    let width = chain
        .iter()
        .map(|s| s.event.index.to_string().len())
        .max()
        .unwrap_or(1);
    for (i, step) in chain.iter().enumerate() {
        let e = &step.event;
        let cause = match e.cause {
            Some(c) if chain.get(i + 1).map(|n| n.event.index) != Some(c) => {
                // The cause is not the next line: say which it is.
                if chain.iter().any(|s| s.event.index == c) {
                    format!("  <- #{c}")
                } else {
                    format!("  <- #{c} (no longer kept)")
                }
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "  #{:<width$}  {}  {}{cause}\n",
            e.index,
            timestamp(e.at_ms),
            step.text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use admin_api::EventView;
    use std::collections::BTreeMap;

    fn step(index: u64, kind: &str, node: Option<&str>, cause: Option<u64>, text: &str) -> WhyStep {
        WhyStep {
            event: EventView {
                index,
                log_index: index,
                at_ms: 1_796_225_400_000 + index,
                kind: kind.into(),
                module: Some("web".into()),
                node: node.map(str::to_string),
                detail: BTreeMap::new(),
                cause,
            },
            text: text.into(),
        }
    }

    #[test]
    fn a_cause_that_is_not_the_next_line_is_named() {
        let m: ModuleView = serde_json::from_value(serde_json::json!({
            "name": "web", "node": "c", "epoch": 120, "state": "installing",
            "restore_attempts": 0, "failovers": 1,
            "package": {"name": "web", "version": "1.0.0"}, "fencing": "at-most-one",
            "reason": null, "tried_nodes": [], "placed_by": "node_lost",
            "installed_version": null, "updated_ms": 0
        }))
        .expect("view");
        let chain = [
            step(
                41,
                "failover_started",
                Some("c"),
                Some(39),
                "web failing over from b to c",
            ),
            step(39, "node_down", Some("b"), Some(30), "node b down"),
            step(12, "installed", Some("b"), Some(11), "web installed"),
            step(3, "module_deployed", None, None, "an operator deployed web"),
        ];
        let text = render(&m, &chain);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("web is installing on c (epoch 120"),
            "{text}"
        );
        assert!(lines[2].contains("web failing over from b to c") && !lines[2].contains("<-"));
        assert!(lines[3].ends_with("<- #30 (no longer kept)"), "{text}");
        assert!(lines[4].contains("2026-12-02") && lines[4].ends_with("<- #11 (no longer kept)"));
        assert!(lines[5].ends_with("an operator deployed web"), "{text}");
    }
}
