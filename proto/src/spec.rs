//! The module spec: what an operator deploys (`POST /v1/modules`).
//!
//! Only `name` and `package` are required; every policy has a default that
//! suits a typical long-running service. A spec is validated once, at the
//! edge ([`ModuleSpec::validate`]), before it enters the Raft log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::PackageRef;
use crate::{Error, names};

/// A module to keep alive somewhere in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Unique module name.
    pub name: String,
    /// The configuration package the module runs from.
    pub package: PackageRef,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub failover: FailoverPolicy,
    #[serde(default)]
    pub placement: PlacementPolicy,
    #[serde(default)]
    pub fencing: Fencing,
}

/// How often and how patiently to restore a module in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Failed restores on one node before the module fails over.
    pub attempts: u32,
    /// Pause before a restore (the agent waits this long before restarting).
    pub backoff_ms: u64,
    /// A restored module must run (and pass its probe) this long to count as
    /// restored.
    pub min_healthy_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            attempts: 3,
            backoff_ms: 200,
            min_healthy_ms: 1000,
        }
    }
}

/// How far a module may wander.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverPolicy {
    /// Failover nodes to try (claim 2: the next one when one fails) before
    /// the module is marked failed.
    pub max_nodes: u32,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy { max_nodes: 2 }
    }
}

/// Where a module may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementPolicy {
    /// Preferred first node; failover may still move the module elsewhere.
    pub node: Option<String>,
    /// Every label here must be present, with this value, on a node that
    /// runs the module.
    pub labels: BTreeMap<String, String>,
}

/// What the cluster guarantees when it cannot tell whether a copy still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fencing {
    /// Never two running copies: a node that loses its lease stops the
    /// module, and the cluster waits for the lease to run out before moving it.
    #[default]
    AtMostOne,
    /// Never zero running copies for long: the module keeps running through a
    /// partition, and a short overlap with its replacement is accepted.
    AtLeastOne,
}

/// Upper bounds that keep a spec sane.
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_FAILOVER_NODES: u32 = 100;
pub const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;
pub const MAX_MIN_HEALTHY_MS: u64 = 60 * 60 * 1000;
/// Most labels: of a node (the agent's `--label`s) and in a placement.
pub const MAX_LABELS: usize = 64;

impl ModuleSpec {
    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Error::InvalidSpec(m);
        names::check("module name", &self.name).map_err(bad)?;
        self.package.validate().map_err(|e| match e {
            Error::InvalidManifest(m) => bad(m),
            other => other,
        })?;
        if self.restart.attempts == 0 {
            return Err(bad(
                "restart.attempts must be at least 1 (the restores tried before a failover)".into(),
            ));
        }
        if self.restart.attempts > MAX_ATTEMPTS {
            return Err(bad(format!(
                "restart.attempts {} is over the limit of {MAX_ATTEMPTS}",
                self.restart.attempts
            )));
        }
        if self.restart.backoff_ms > MAX_BACKOFF_MS {
            return Err(bad(format!(
                "restart.backoff_ms {} is over the limit of {MAX_BACKOFF_MS}",
                self.restart.backoff_ms
            )));
        }
        if self.restart.min_healthy_ms > MAX_MIN_HEALTHY_MS {
            return Err(bad(format!(
                "restart.min_healthy_ms {} is over the limit of {MAX_MIN_HEALTHY_MS}",
                self.restart.min_healthy_ms
            )));
        }
        if self.failover.max_nodes > MAX_FAILOVER_NODES {
            return Err(bad(format!(
                "failover.max_nodes {} is over the limit of {MAX_FAILOVER_NODES}",
                self.failover.max_nodes
            )));
        }
        if let Some(node) = &self.placement.node {
            names::check("placement.node", node).map_err(bad)?;
        }
        if self.placement.labels.len() > MAX_LABELS {
            return Err(bad(format!(
                "placement.labels has {} labels, over the limit of {MAX_LABELS}",
                self.placement.labels.len()
            )));
        }
        for (k, v) in &self.placement.labels {
            check_label(k, v).map_err(bad)?;
        }
        Ok(())
    }
}

/// Checks a `key=value` label.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    names::check("label key", key)?;
    if value.len() > names::MAX_NAME_LEN || value.chars().any(|c| c.is_control()) {
        return Err(format!(
            "label {key:?} has a value that is too long or holds control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_spec_gets_defaults() {
        let spec: ModuleSpec =
            serde_json::from_str(r#"{"name":"web","package":{"name":"web","version":"1.0.0"}}"#)
                .expect("parse");
        assert_eq!(spec.fencing, Fencing::AtMostOne);
        assert_eq!(spec.restart.attempts, 3);
        assert_eq!(spec.failover.max_nodes, 2);
        spec.validate().expect("valid");
    }

    #[test]
    fn contract_example_parses() {
        let spec: ModuleSpec = serde_json::from_str(
            r#"{"name": "web",
 "package": {"name": "web", "version": "1.0.0"},
 "restart": {"attempts": 3, "backoff_ms": 200, "min_healthy_ms": 1000},
 "failover": {"max_nodes": 2},
 "placement": {"node": "a", "labels": {"zone": "east"}},
 "fencing": "at-most-one"}"#,
        )
        .expect("parse");
        spec.validate().expect("valid");
        assert_eq!(spec.placement.node.as_deref(), Some("a"));
        assert_eq!(
            serde_json::to_value(spec.fencing).expect("json"),
            "at-most-one"
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut spec: ModuleSpec =
            serde_json::from_str(r#"{"name":"web","package":{"name":"web","version":"1.0.0"}}"#)
                .expect("parse");
        spec.package.version = "one".into();
        assert!(spec.validate().unwrap_err().to_string().contains("version"));
        spec.package.version = "1.0.0".into();
        spec.restart.attempts = 1000;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("restart.attempts")
        );
        spec.restart.attempts = 0;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("restart.attempts must be at least 1")
        );
        spec.restart.attempts = 1;
        spec.name = "a b".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("module name")
        );
        let unknown = serde_json::from_str::<ModuleSpec>(
            r#"{"name":"web","package":{"name":"web","version":"1.0.0"},"fencin":"x"}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("fencin"));
    }
}
