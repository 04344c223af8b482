//! `GET /metrics`: Prometheus text, hand-written from the replica's
//! counters ([`crate::app::Metrics`]), Raft's metrics and the applied state,
//! the listener's TLS handshakes and the refusals of [`super::auth`].
//! Open to anyone (no certificate or token needed).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::auth::Surface;
use crate::app::App;
use crate::views;

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    use std::fmt::Write;
    let m = app.raft.metrics().borrow().clone();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "supervisor_is_leader",
        "1 when this replica is the Raft leader",
        u64::from(app.leader().is_some()),
    );
    gauge("supervisor_term", "current Raft term", m.current_term);
    gauge(
        "supervisor_last_applied",
        "last applied log index",
        m.last_applied.map_or(0, |l| l.index),
    );
    let (modules, nodes) = app.state.read(|s| {
        let mut by_state = std::collections::BTreeMap::<&'static str, u64>::new();
        for mm in s.modules.values() {
            *by_state.entry(mm.state.as_str()).or_default() += 1;
        }
        let mut by_health = std::collections::BTreeMap::<String, u64>::new();
        for (id, n) in &s.nodes {
            *by_health.entry(views::node(s, id, n).status).or_default() += 1;
        }
        (by_state, by_health)
    });
    let _ = writeln!(
        out,
        "# HELP supervisor_modules modules by state\n# TYPE supervisor_modules gauge"
    );
    for (state, n) in modules {
        let _ = writeln!(out, "supervisor_modules{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP supervisor_nodes nodes by status\n# TYPE supervisor_nodes gauge"
    );
    for (status, n) in nodes {
        let _ = writeln!(out, "supervisor_nodes{{status=\"{status}\"}} {n}");
    }
    let counters = [
        (
            "supervisor_heartbeats_total",
            "heartbeats received",
            &app.metrics.heartbeats,
        ),
        (
            "supervisor_heartbeats_rejected_total",
            "heartbeats refused as malformed",
            &app.metrics.heartbeats_rejected,
        ),
        (
            "supervisor_directives_total",
            "directives sent to agents",
            &app.metrics.directives,
        ),
        (
            "supervisor_transitions_total",
            "transitions committed by the control loop",
            &app.metrics.transitions,
        ),
        (
            "supervisor_batches_total",
            "log entries committed by the control loop",
            &app.metrics.batches,
        ),
        (
            "supervisor_forwarded_total",
            "admin requests forwarded to the leader",
            &app.metrics.forwarded,
        ),
        (
            "supervisor_control_passes_total",
            "control-loop passes run",
            &app.metrics.passes,
        ),
        (
            "supervisor_control_pass_micros_total",
            "time spent in control-loop passes, planning and committing (microseconds)",
            &app.metrics.pass_micros,
        ),
        (
            "supervisor_plan_micros_total",
            "time spent planning (microseconds)",
            &app.metrics.plan_micros,
        ),
        (
            "supervisor_proposals_total",
            "proposals answered (admin writes, control-loop passes, package retrievals)",
            &app.proposals.stats.proposals,
        ),
        (
            "supervisor_proposal_entries_total",
            "log entries those proposals went in (concurrent proposals share one)",
            &app.proposals.stats.entries,
        ),
        (
            "supervisor_package_checks_cached_total",
            "deploy package checks answered from the package cache",
            &app.packages.hits,
        ),
        (
            "supervisor_package_checks_asked_total",
            "deploy package checks that asked depmgr",
            &app.packages.lookups,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.load(Ordering::Relaxed)
        );
    }
    let hs = &app.handshakes;
    for (name, help, value) in [
        (
            "supervisor_tls_handshakes_total",
            "TLS handshakes on the listen port, completed or failed",
            hs.accepted() + hs.failed(),
        ),
        (
            "supervisor_tls_handshakes_failed_total",
            "TLS handshakes that failed (plaintext, a certificate of another CA or expired, timeout)",
            hs.failed(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP supervisor_auth_refused_total requests refused for their identity or token, by surface\n# TYPE supervisor_auth_refused_total counter"
    );
    for surface in Surface::ALL {
        let _ = writeln!(
            out,
            "supervisor_auth_refused_total{{surface=\"{}\"}} {}",
            surface.as_str(),
            surface.counter(&app).load(Ordering::Relaxed)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
