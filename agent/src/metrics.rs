//! `GET /metrics` of the agent: Prometheus text (0.0.4), encoded by
//! `prometheus-client`.
//!
//! - `agent_heartbeats_total{result="sent"|"failed"}`: heartbeat
//!   exchanges with a supervisor that got a reply, or did not;
//! - `agent_heartbeat_streams_opened_total`: heartbeat streams opened
//!   (one per supervisor the agent moved to, plus reopenings);
//! - `agent_package_downloads_total{result="ok"|"failed"}`,
//!   `agent_package_download_bytes_total` and the histogram
//!   `agent_package_download_seconds`: archives fetched from depmgr (cache
//!   hits are not downloads);
//! - gauges from the status view: `agent_modules{state}`,
//!   `agent_module_restarts{module}`, `agent_lease_ms_left`,
//!   `agent_pending_reports`;
//! - the counters `/v1/status` carries under `tls`:
//!   `agent_tls_handshakes_total`, `agent_tls_handshakes_failed_total`,
//!   `agent_auth_refused_total`.
//!
//! The counters and the histogram are process-wide ([`METRICS`]): one
//! agent per process.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::manager::StatusView;

type Labels = Vec<(String, String)>;

/// What the agent counts as it works.
#[derive(Debug)]
pub struct AgentMetrics {
    pub heartbeats: Family<Labels, Counter>,
    pub streams_opened: Counter,
    pub downloads: Family<Labels, Counter>,
    pub download_bytes: Counter,
    pub download_seconds: Histogram,
}

/// The agent's counters (one agent per process).
pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    heartbeats: Family::default(),
    streams_opened: Counter::default(),
    downloads: Family::default(),
    download_bytes: Counter::default(),
    // 10 ms .. 330 s
    download_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
});

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl AgentMetrics {
    /// A heartbeat exchange that got a reply (`ok`) or did not.
    pub fn heartbeat(&self, ok: bool) {
        let result = if ok { "sent" } else { "failed" };
        self.heartbeats
            .get_or_create(&label("result", result))
            .inc();
    }

    /// A heartbeat stream was opened.
    pub fn stream_opened(&self) {
        self.streams_opened.inc();
    }

    /// One archive download from depmgr, its time and (when it worked)
    /// its size.
    pub fn download(&self, seconds: f64, bytes: Option<u64>) {
        let result = if bytes.is_some() { "ok" } else { "failed" };
        self.downloads.get_or_create(&label("result", result)).inc();
        self.download_seconds.observe(seconds);
        if let Some(b) = bytes {
            self.download_bytes.inc_by(b);
        }
    }
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// The TLS counters of `/v1/status`, for [`registry`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsCounts {
    pub handshakes: u64,
    pub handshakes_failed: u64,
    pub auth_refused: u64,
}

/// Everything `/metrics` shows, as of `status`.
pub fn registry(status: &StatusView, tls: TlsCounts) -> Registry {
    let m = &*METRICS;
    let mut r = Registry::default();
    // Both results appear from the start (0 until counted).
    for result in ["sent", "failed"] {
        let _ = m.heartbeats.get_or_create(&label("result", result));
    }
    for result in ["ok", "failed"] {
        let _ = m.downloads.get_or_create(&label("result", result));
    }
    r.register(
        "agent_heartbeats",
        "heartbeat exchanges with a supervisor, by result (sent: a reply came)",
        m.heartbeats.clone(),
    );
    r.register(
        "agent_heartbeat_streams_opened",
        "heartbeat streams opened (GET /v1/agent/stream, upgraded)",
        m.streams_opened.clone(),
    );
    r.register(
        "agent_package_downloads",
        "archives downloaded from depmgr, by result",
        m.downloads.clone(),
    );
    r.register(
        "agent_package_download_bytes",
        "bytes of the archives downloaded",
        m.download_bytes.clone(),
    );
    r.register(
        "agent_package_download_seconds",
        "time to download and verify one archive from depmgr",
        m.download_seconds.clone(),
    );
    let states = Family::<Labels, Gauge>::default();
    let restarts = Family::<Labels, Gauge>::default();
    for module in &status.modules {
        states.get_or_create(&label("state", module.state)).inc();
        restarts
            .get_or_create(&label("module", &module.name))
            .set(i64::try_from(module.restarts).unwrap_or(i64::MAX));
    }
    r.register("agent_modules", "modules on this node by state", states);
    r.register(
        "agent_module_restarts",
        "restarts of each module by this agent",
        restarts,
    );
    r.register(
        "agent_lease_ms_left",
        "milliseconds left of the lease from the leader",
        gauge(status.lease_ms_left),
    );
    r.register(
        "agent_pending_reports",
        "reports waiting to be sent to the leader",
        gauge(status.pending_reports as u64),
    );
    r.register(
        "agent_tls_handshakes",
        "TLS handshakes completed on the status listener",
        counter(tls.handshakes),
    );
    r.register(
        "agent_tls_handshakes_failed",
        "TLS handshakes that failed on the status listener",
        counter(tls.handshakes_failed),
    );
    r.register(
        "agent_auth_refused",
        "requests refused for want of a client certificate",
        counter(tls.auth_refused),
    );
    r
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}
