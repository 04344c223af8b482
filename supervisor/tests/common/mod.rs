//! What only the supervisor's tests share: the module spec they deploy,
//! with restart timing fast enough for simulated node managers. Everything
//! else (replicas, fake agents, fake depmgr, polling) is in `testkit`.

use testkit::spec::ModuleSpec;

/// Module `name` (package `name@1.0.0`), pinned to `node` when given,
/// `attempts` restores per node (50 ms apart, healthy after 300 ms), at
/// most 2 nodes.
pub fn spec(name: &str, node: Option<&str>, attempts: u32) -> serde_json::Value {
    ModuleSpec::new(name)
        .restart(attempts, 50, 300)
        .max_nodes(2)
        .node(node)
        .json()
}
