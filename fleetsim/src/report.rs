//! What fleetsim reads of the cluster (metrics, terms, each replica's CPU
//! and memory from `/proc`, the snapshot lines of its log) and how it
//! prints them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use admin_api::AdminClient;
use testkit::procstat::{cpu_ticks, rss_mb};
use testkit::prom::Metrics;
use testkit::supervisors::Supervisors;
use tokio::time::Instant;

use crate::node::Stats;

/// Clock ticks a second of `/proc/<pid>/stat` (Linux: 100).
const HZ: f64 = 100.0;

/// The replicas as fleetsim watches them.
pub struct Cluster {
    addrs: Vec<String>,
    pids: Vec<Option<u32>>,
    ids: Vec<u64>,
    scheme: &'static str,
    http: reqwest::Client,
    admin: AdminClient,
}

impl Cluster {
    pub async fn new(sups: &Supervisors) -> Cluster {
        let operator = sups.operator();
        let http = tls::client::http_builder(operator.as_ref(), &[tls::Role::Supervisor])
            .timeout(Duration::from_secs(10))
            .build()
            .expect("metrics client");
        Cluster {
            addrs: sups.addrs.clone(),
            pids: (0..sups.ids.len()).map(|i| sups.pid(i)).collect(),
            ids: sups.ids.clone(),
            scheme: sups.scheme(),
            http,
            admin: sups.client().with_timeout(Duration::from_secs(10)),
        }
    }

    /// Replica `i`'s `/metrics`, parsed.
    pub async fn metrics(&self, i: usize) -> Option<Metrics> {
        self.metrics_at(&self.addrs[i]).await
    }

    /// The `/metrics` of the replica at `addr`, parsed.
    pub async fn metrics_at(&self, addr: &str) -> Option<Metrics> {
        let url = format!("{}://{addr}/metrics", self.scheme);
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        Metrics::parse(&text).ok()
    }

    /// The last log index the replica at `addr` applied.
    pub async fn last_applied_at(&self, addr: &str) -> Option<u64> {
        let m = self.metrics_at(addr).await?;
        m.value("supervisor_last_applied", &[]).map(|v| v as u64)
    }

    /// The leader's address now.
    pub async fn leader_addr(&self) -> Option<&str> {
        Some(self.addrs[self.leader().await?].as_str())
    }

    /// The index of the replica that is leader now, by its own metrics.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.addrs.len() {
            if let Some(m) = self.metrics(i).await
                && m.value("supervisor_is_leader", &[]) == Some(1.0)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until the leader's gauge `name{label}` reaches `value` (or
    /// `timeout`); its last value.
    pub async fn wait_gauge(
        &self,
        name: &str,
        label: (&str, &str),
        value: f64,
        timeout: Duration,
    ) -> f64 {
        let mut last = 0.0;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = self.leader().await
                && let Some(m) = self.metrics(i).await
            {
                last = m.value(name, &[label]).unwrap_or(0.0);
                if last >= value {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        last
    }

    /// The current term, as the leader's `GET /v1/cluster` says.
    pub async fn term(&self) -> Option<u64> {
        let view = self.admin.cluster().await.ok()?;
        view.leader.map(|_| view.term)
    }

    /// `POST /v1/cluster/members`: the replica joins as a learner, is
    /// promoted once caught up; returns when the leader answered.
    pub async fn add_member(&self, id: u64, addr: &str) -> Result<(), String> {
        let body = serde_json::json!({"id": id, "addr": addr});
        self.admin
            .clone()
            .with_timeout(Duration::from_secs(300))
            .request::<_, serde_json::Value>(
                reqwest::Method::POST,
                "/v1/cluster/members",
                Some(&body),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// What each replica's log says of the snapshots it built and
    /// installed: how many, the largest and the slowest.
    pub fn snapshots(&self, sups: &Supervisors) -> String {
        let mut out = String::from("snapshots (from each replica's log):");
        for (i, id) in sups.ids.iter().enumerate() {
            let log = sups.log(i);
            let built: Vec<(u64, u64)> = log
                .lines()
                .filter(|l| l.contains("snapshot built"))
                .map(|l| (field(l, "bytes="), field(l, "total_ms=")))
                .collect();
            let installed: Vec<u64> = log
                .lines()
                .filter(|l| l.contains("snapshot installed"))
                .map(|l| field(l, "decode_and_store_ms="))
                .collect();
            out.push_str(&format!(
                "\n  replica {id}: {} built, largest {:.1} MB, slowest {} ms; {} installed{}",
                built.len(),
                built.iter().map(|b| b.0).max().unwrap_or(0) as f64 / 1e6,
                built.iter().map(|b| b.1).max().unwrap_or(0),
                installed.len(),
                match installed.iter().max() {
                    Some(ms) => format!(", slowest {ms} ms to decode and store"),
                    None => String::new(),
                }
            ));
        }
        out
    }
}

/// The number after `key` in a log line (0 when absent).
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0)
}

/// Figures between two samples.
#[derive(Clone)]
struct Mark {
    at: Instant,
    offered: u64,
    handled: u64,
    ticks: Vec<u64>,
}

impl Mark {
    fn now(cluster: &Cluster, stats: &Stats) -> Mark {
        Mark {
            at: Instant::now(),
            offered: stats.offered.load(Ordering::Relaxed),
            handled: stats.handled.load(Ordering::Relaxed),
            ticks: cluster
                .pids
                .iter()
                .map(|p| p.map_or(0, cpu_ticks))
                .collect(),
        }
    }
}

/// Samples of the hold phase.
pub struct Sampler {
    start: Mark,
    last: std::sync::Mutex<Mark>,
    term: u64,
    leader: Option<usize>,
    max_rss: std::sync::Mutex<Vec<f64>>,
}

impl Sampler {
    pub async fn start(cluster: &Cluster, stats: &Arc<Stats>) -> Sampler {
        let mark = Mark::now(cluster, stats);
        Sampler {
            start: mark.clone(),
            last: std::sync::Mutex::new(mark),
            term: cluster.term().await.unwrap_or(0),
            leader: cluster.leader().await,
            max_rss: std::sync::Mutex::new(vec![0.0; cluster.pids.len()]),
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    fn replicas(&self, cluster: &Cluster, from: &Mark, to: &Mark) -> String {
        let secs = to.at.duration_since(from.at).as_secs_f64().max(1e-3);
        let mut max = self.max_rss.lock().expect("rss");
        (0..cluster.pids.len())
            .map(|i| {
                let cpu = (to.ticks[i].saturating_sub(from.ticks[i])) as f64 / HZ / secs * 100.0;
                let rss = cluster.pids[i].map_or(0.0, rss_mb);
                max[i] = max[i].max(rss);
                format!(
                    "{}{} {cpu:.0}% {rss:.0} MB",
                    cluster.ids[i],
                    if Some(i) == self.leader { "(L)" } else { "" },
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line: rates since the last sample, CPU and RSS per replica.
    pub async fn sample(&self, cluster: &Cluster, stats: &Stats) -> String {
        let now = Mark::now(cluster, stats);
        let last = std::mem::replace(&mut *self.last.lock().expect("mark"), now.clone());
        let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
        let running = match self.leader {
            Some(i) => cluster
                .metrics(i)
                .await
                .and_then(|m| m.value("supervisor_modules", &[("state", "running")])),
            None => None,
        };
        format!(
            "t={:>4.0}s offered {:.0}/s handled {:.0}/s | running {} | lapses {} | replica cpu, rss: {}",
            now.at.duration_since(self.start.at).as_secs_f64(),
            (now.offered - last.offered) as f64 / secs,
            (now.handled - last.handled) as f64 / secs,
            running.map_or("?".into(), |r| format!("{r:.0}")),
            stats.lease_lapses.load(Ordering::Relaxed),
            self.replicas(cluster, &last, &now),
        )
    }

    /// The whole hold: rates, mean CPU and largest RSS per replica.
    pub async fn summary(&self, cluster: &Cluster, stats: &Stats) -> String {
        let now = Mark::now(cluster, stats);
        let secs = now.at.duration_since(self.start.at).as_secs_f64().max(1e-3);
        let mean = self.replicas(cluster, &self.start, &now);
        let max = self.max_rss.lock().expect("rss").clone();
        format!(
            "heartbeats offered {:.0}/s, handled {:.0}/s over {secs:.0}s\nreplica mean cpu, rss now: {mean}\nlargest rss: {}",
            (now.offered - self.start.offered) as f64 / secs,
            (now.handled - self.start.handled) as f64 / secs,
            max.iter()
                .enumerate()
                .map(|(i, r)| format!("{} {r:.0} MB", cluster.ids[i]))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `p50 / p99 / p99.9 / max` of latencies in µs, as ms.
pub fn pct_line(us: &[u32], expected: usize) -> String {
    if us.is_empty() {
        return format!("no samples (of {expected})");
    }
    let mut v = us.to_vec();
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0),
        v.len()
    )
}

/// Same-run reference: `GET /health` on the leader in a closed loop over
/// `conns` connections of one client for `secs`, requests a second (this
/// machine's HTTP ceiling for the product's server stack, with TLS when
/// the cluster has it).
pub async fn health_ceiling(
    sups: &Supervisors,
    tls: Option<Arc<tls::Tls>>,
    conns: usize,
    secs: u64,
) -> Result<f64, reqwest::Error> {
    let leader = sups.wait_leader(Duration::from_secs(30)).await;
    let url = format!("{}://{}/health", sups.scheme(), sups.addrs[leader]);
    let http = tls::client::http_builder(tls.as_ref(), &[tls::Role::Supervisor])
        .pool_max_idle_per_host(conns)
        .build()?;
    Ok(testkit::reference::get_rate(&http, &url, conns, Duration::from_secs(secs)).await)
}
