//! Module specs as the admin API takes them (JSON), built in one place.
//!
//! [`ModuleSpec::new`] names the module and its package (`<name>@1.0.0`);
//! the rest is set only when asked, so each suite states its own restart
//! timing, failover bound, placement and fencing.

use serde_json::{Value, json};

/// A module spec under construction.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    json: Value,
}

impl ModuleSpec {
    /// Module `name` running package `name@1.0.0`.
    pub fn new(name: &str) -> ModuleSpec {
        ModuleSpec {
            json: json!({
                "name": name,
                "package": {"name": name, "version": "1.0.0"},
            }),
        }
    }

    pub fn package(mut self, name: &str, version: &str) -> ModuleSpec {
        self.json["package"] = json!({"name": name, "version": version});
        self
    }

    /// Restores per node before a failover, the pause before each, and how
    /// long a start must stay healthy to reset the count.
    pub fn restart(mut self, attempts: u32, backoff_ms: u64, min_healthy_ms: u64) -> ModuleSpec {
        self.json["restart"] = json!({
            "attempts": attempts,
            "backoff_ms": backoff_ms,
            "min_healthy_ms": min_healthy_ms,
        });
        self
    }

    pub fn max_nodes(mut self, max_nodes: u32) -> ModuleSpec {
        self.json["failover"] = json!({"max_nodes": max_nodes});
        self
    }

    /// Pinned to `node`, when given.
    pub fn node(mut self, node: Option<&str>) -> ModuleSpec {
        if let Some(n) = node {
            self.json["placement"] = json!({"node": n});
        }
        self
    }

    /// `at-most-one` or `at-least-one`.
    pub fn fencing(mut self, fencing: &str) -> ModuleSpec {
        self.json["fencing"] = json!(fencing);
        self
    }

    pub fn json(self) -> Value {
        self.json
    }
}
