//! The timing flags the tests run the real binaries with, in one place.
//!
//! Failure detection is tuned down from the production defaults so that a
//! test sees a node go down, a lease run out or a leader change within
//! seconds. Two sets: [`SUPERVISOR_FLAGS`] with [`AGENT_FLAGS`] for real
//! node managers (the whole-cluster tests and the partition tests), and
//! [`SUPERVISOR_FLAGS_FAKE_AGENTS`] for the supervisor's own tests, whose
//! simulated node managers heartbeat every 100 ms.

/// Fast failure detection with real agents: suspect after 1 s, lease 3 s,
/// down after 3.3 s without heartbeats; elections after 0.5-1 s.
pub const SUPERVISOR_FLAGS: [&str; 8] = [
    "--heartbeat-ttl-ms",
    "1000",
    "--lease-ms",
    "3000",
    "--lease-drift-ms",
    "300",
    "--election-timeout-ms",
    "500",
];

/// Agent flags to match [`SUPERVISOR_FLAGS`]: heartbeats every 200 ms, stop
/// grace 0.5 s.
pub const AGENT_FLAGS: [&str; 4] = ["--heartbeat-ms", "200", "--stop-grace-ms", "500"];

/// Faster still, for simulated agents heartbeating every 100 ms: suspect
/// after 0.8 s, lease 1 s; elections after 0.5-1 s.
pub const SUPERVISOR_FLAGS_FAKE_AGENTS: [&str; 8] = [
    "--heartbeat-ttl-ms",
    "800",
    "--lease-ms",
    "1000",
    "--lease-drift-ms",
    "200",
    "--election-timeout-ms",
    "500",
];

/// `defaults` (flag/value pairs) except the flags `extra` names, then
/// `extra`.
pub fn with_defaults(defaults: &[&str], extra: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for pair in defaults.chunks(2) {
        if !extra.iter().any(|a| a == pair[0]) {
            flags.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    flags.extend(extra.iter().cloned());
    flags
}
