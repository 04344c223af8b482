//! `GET /metrics`: Prometheus text (0.0.4), encoded by `prometheus-client`
//! from the replica's counters ([`crate::app::Metrics`], the proposal
//! queue's, the package cache's), Raft's metrics, the applied state, the
//! listener's TLS handshakes, the refusals of [`super::auth`], and the
//! histograms of heartbeat handling, crash-to-restore-order, failover and
//! Raft commit latency. Open to anyone (no certificate or token needed).
//!
//! The counters stay plain atomics where they are counted; each scrape
//! copies them, and the gauges read from the state, into a fresh
//! [`Registry`] beside the (shared) histograms, so a state that no module
//! is in any more simply disappears from `supervisor_modules`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::auth::Surface;
use crate::app::App;
use crate::views;

/// A counter holding `value` (registered as `<name>_total`).
pub fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

/// A gauge holding `value`.
pub fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// One label, for a [`Family`].
type Labels = Vec<(String, String)>;

/// The answer of a scrape: `registry` in the Prometheus text format.
pub fn answer(registry: &Registry) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}"),
        )
            .into_response(),
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    answer(&registry(&app))
}

/// Everything `/metrics` shows, as of now.
pub fn registry(app: &App) -> Registry {
    let m = app.raft.metrics().borrow().clone();
    let mut r = Registry::default();
    r.register(
        "supervisor_is_leader",
        "1 when this replica is the Raft leader",
        gauge(u64::from(app.leader().is_some())),
    );
    r.register(
        "supervisor_term",
        "current Raft term",
        gauge(m.current_term),
    );
    r.register(
        "supervisor_last_applied",
        "last applied log index",
        gauge(m.last_applied.map_or(0, |l| l.index)),
    );
    r.register(
        "supervisor_snapshot_index",
        "log index of this replica's last snapshot (0: none yet)",
        gauge(m.snapshot.map_or(0, |l| l.index)),
    );
    r.register(
        "supervisor_log_purged_index",
        "log index up to which this replica has purged its log (0: none); a follower behind it catches up from a snapshot",
        gauge(m.purged.map_or(0, |l| l.index)),
    );
    let modules = Family::<Labels, Gauge>::default();
    let nodes = Family::<Labels, Gauge>::default();
    app.state.read(|s| {
        for mm in s.modules.values() {
            modules
                .get_or_create(&vec![("state".into(), mm.state.as_str().into())])
                .inc();
        }
        for (id, n) in &s.nodes {
            nodes
                .get_or_create(&vec![("status".into(), views::node(s, id, n).status)])
                .inc();
        }
    });
    r.register(
        "supervisor_event_streams",
        "event streams (GET /v1/events/stream) this replica serves now",
        gauge(super::events::open_streams() as u64),
    );
    r.register(
        "supervisor_heartbeat_streams",
        "agents' heartbeat streams (GET /v1/agent/stream) this replica serves now",
        gauge(app.metrics.heartbeat_streams.load(Ordering::Relaxed)),
    );
    r.register("supervisor_modules", "modules by state", modules);
    r.register("supervisor_nodes", "nodes by status", nodes);
    let counters: [(&str, &str, &AtomicU64); 13] = [
        (
            "supervisor_heartbeats",
            "heartbeats received",
            &app.metrics.heartbeats,
        ),
        (
            "supervisor_heartbeats_rejected",
            "heartbeats refused as malformed",
            &app.metrics.heartbeats_rejected,
        ),
        (
            "supervisor_directives",
            "directives sent to agents",
            &app.metrics.directives,
        ),
        (
            "supervisor_transitions",
            "transitions committed by the control loop",
            &app.metrics.transitions,
        ),
        (
            "supervisor_batches",
            "log entries committed by the control loop",
            &app.metrics.batches,
        ),
        (
            "supervisor_forwarded",
            "admin requests forwarded to the leader",
            &app.metrics.forwarded,
        ),
        (
            "supervisor_control_passes",
            "control-loop passes run",
            &app.metrics.passes,
        ),
        (
            "supervisor_control_pass_micros",
            "time spent in control-loop passes, planning and committing (microseconds)",
            &app.metrics.pass_micros,
        ),
        (
            "supervisor_plan_micros",
            "time spent planning (microseconds)",
            &app.metrics.plan_micros,
        ),
        (
            "supervisor_proposals",
            "proposals answered (admin writes, control-loop passes, package retrievals)",
            &app.proposals.stats.proposals,
        ),
        (
            "supervisor_proposal_entries",
            "log entries those proposals went in (concurrent proposals share one)",
            &app.proposals.stats.entries,
        ),
        (
            "supervisor_package_checks_cached",
            "deploy package checks answered from the package cache",
            &app.packages.hits,
        ),
        (
            "supervisor_package_checks_asked",
            "deploy package checks that asked depmgr",
            &app.packages.lookups,
        ),
    ];
    for (name, help, c) in counters {
        r.register(name, help, counter(c.load(Ordering::Relaxed)));
    }
    let hs = &app.handshakes;
    r.register(
        "supervisor_tls_handshakes",
        "TLS handshakes on the listen port, completed or failed",
        counter(hs.accepted() + hs.failed()),
    );
    r.register(
        "supervisor_tls_handshakes_failed",
        "TLS handshakes that failed (plaintext, a certificate of another CA or expired, timeout)",
        counter(hs.failed()),
    );
    let refused = Family::<Labels, Counter>::default();
    for surface in Surface::ALL {
        refused
            .get_or_create(&vec![("surface".into(), surface.as_str().into())])
            .inc_by(surface.counter(app).load(Ordering::Relaxed));
    }
    r.register(
        "supervisor_auth_refused",
        "requests refused for their identity or token, by surface",
        refused,
    );
    r.register(
        "supervisor_heartbeat_seconds",
        "time from a heartbeat's arrival to its reply, waits for a control-loop pass and a leadership confirmation included",
        app.metrics.heartbeat_seconds.clone(),
    );
    r.register(
        "supervisor_restore_order_seconds",
        "leader's view: from the heartbeat that showed a module failed to the commit of its restore order",
        app.metrics.restore_order_seconds.clone(),
    );
    r.register(
        "supervisor_failover_seconds",
        "from a failover's decision (failover_started) to the module running on its new node (failover_completed), observed by the leader",
        app.metrics.failover_seconds.clone(),
    );
    r.register(
        "supervisor_raft_commit_seconds",
        "one log entry from proposal to applied on the leader (replicated to a quorum and committed)",
        app.proposals.stats.commit_seconds.clone(),
    );
    r.register(
        "supervisor_raft_rpc_seconds",
        "Raft RPCs this replica sent, from sending to the decoded answer (the peer's work, its WAL sync for an append, included), by rpc",
        app.raft_io.rpc_seconds.clone(),
    );
    r.register(
        "supervisor_wal_sync_seconds",
        "each WAL sync of this replica's Raft log (one per group of appends; an entry is acknowledged only after its sync)",
        app.raft_io.wal_sync_seconds.clone(),
    );
    r
}
