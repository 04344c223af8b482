//! `supctl plan drain|lose <node>` and `supctl plan deploy|update <spec>`:
//! what the cluster would do (`POST /v1/plan`), printed for an operator:
//! which modules move where and how long each is down, which would wait or
//! fail. Nothing is committed.

use admin_api::{AdminClient, PlanView};
use anyhow::Result;
use clap::Subcommand;

/// What to predict.
#[derive(Debug, Subcommand)]
pub enum What {
    /// Draining <node>.
    Drain { node: String },
    /// Losing <node> now (its agent killed, the host gone).
    Lose { node: String },
    /// Deploying the module of a spec file (.json or .toml).
    Deploy { spec: std::path::PathBuf },
    /// Updating a module to a spec file (.json or .toml).
    Update { spec: std::path::PathBuf },
}

/// The request body for `what` (`read_spec` reads a spec file as JSON).
pub fn request(
    what: &What,
    read_spec: impl Fn(&std::path::Path) -> Result<serde_json::Value>,
) -> Result<serde_json::Value> {
    Ok(match what {
        What::Drain { node } => serde_json::json!({"action": "drain", "node": node}),
        What::Lose { node } => serde_json::json!({"action": "lose", "node": node}),
        What::Deploy { spec } => serde_json::json!({"action": "deploy", "spec": read_spec(spec)?}),
        What::Update { spec } => serde_json::json!({"action": "update", "spec": read_spec(spec)?}),
    })
}

/// `supctl plan ...`.
pub async fn plan(
    c: &AdminClient,
    body: &serde_json::Value,
    out: crate::output::Output,
) -> Result<()> {
    let view = c.plan(body).await?;
    if out.structured() {
        out.print(&view)?;
    } else {
        print!("{}", render(&view));
    }
    Ok(())
}

/// The prediction in words: moves (with down time), waits, failures, the
/// decisions in order, and what it assumes.
pub fn render(v: &PlanView) -> String {
    let mut out = String::new();
    if v.moves.is_empty() && v.waiting.is_empty() && v.failed.is_empty() {
        out.push_str("nothing would move, wait or fail\n");
    }
    if !v.moves.is_empty() {
        out.push_str(&format!("{} module(s) would move:\n", v.moves.len()));
        let w = v.moves.iter().map(|m| m.module.len()).max().unwrap_or(0);
        for m in &v.moves {
            let from = m.from.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "  {:<w$}  {from} -> {}  ({}, {}): {}\n",
                m.module, m.to, m.cause, m.fencing, m.down
            ));
        }
    }
    if !v.waiting.is_empty() {
        out.push_str(&format!(
            "{} module(s) would wait for a node:\n",
            v.waiting.len()
        ));
        for m in &v.waiting {
            out.push_str(&format!("  {}: {}\n", m.module, m.reason));
        }
    }
    if !v.failed.is_empty() {
        out.push_str(&format!("{} module(s) would fail:\n", v.failed.len()));
        for m in &v.failed {
            out.push_str(&format!("  {}: {}\n", m.module, m.reason));
        }
    }
    if !v.transitions.is_empty() {
        out.push_str("decisions, in order:\n");
        for t in &v.transitions {
            out.push_str(&format!("  {}\n", t.text));
        }
    }
    out.push_str("assuming:\n");
    for a in &v.assumptions {
        out.push_str(&format!("  {a}\n"));
    }
    out.push_str("nothing was changed (a prediction)\n");
    out
}
