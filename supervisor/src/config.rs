//! The supervisor's configuration: one typed struct, every field from a flag
//! or its environment variable (`SUPERVISOR_<FLAG>`), validated at start-up.
//!
//! Trust: `--tls-ca/--tls-cert/--tls-key` (all three or none) make every
//! listener TLS-only and every client verify its peer against the CA;
//! without them the replica serves plaintext on a loopback address only,
//! unless `--insecure`. `--admin-token` and `--read-token` are the bearer
//! tokens of anonymous admin clients (the read token for GETs only).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use tls::TlsFiles;

use crate::error::Error;
use crate::plan::{QuarantinePolicy, Timing};
use crate::raft::SupervisorId;

/// `--log-format`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`,
    /// `span`s), for log collectors.
    Json,
}

/// A replica of the supervisor cluster.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "supervisor",
    version,
    about = "Raft-replicated supervisor of software modules"
)]
pub struct Config {
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, env = "SUPERVISOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// This replica's id; must appear in --peers.
    #[arg(long, env = "SUPERVISOR_ID")]
    pub id: SupervisorId,

    /// Address to serve HTTP on (Raft RPC, agent heartbeats, admin API).
    #[arg(long, env = "SUPERVISOR_LISTEN")]
    pub listen: SocketAddr,

    /// Directory of the Raft log and state (created if missing).
    #[arg(long, env = "SUPERVISOR_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The initial voters, this replica included: `id=host:port,...`. The
    /// lowest id initialises an empty cluster; the others wait to be reached.
    #[arg(long, env = "SUPERVISOR_PEERS", value_parser = parse_peers)]
    pub peers: Peers,

    /// Base URL of the dependency manager (depmgr).
    #[arg(
        long,
        env = "SUPERVISOR_DEPMGR",
        default_value = "http://127.0.0.1:7000"
    )]
    pub depmgr: String,

    /// Pre-stage each module's configuration package on the node it would
    /// fail over to next (`Prefetch` directives, see docs/design.md). Set
    /// `false` while agents of a build without pre-staging are still
    /// heartbeating (a rolling upgrade): they cannot decode a reply that
    /// carries a `Prefetch`.
    #[arg(
        long,
        env = "SUPERVISOR_PRESTAGE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub prestage: bool,

    /// A node silent this long becomes suspect.
    #[arg(long, env = "SUPERVISOR_HEARTBEAT_TTL_MS", default_value_t = 2000)]
    pub heartbeat_ttl_ms: u64,

    /// Lease granted to agents with each heartbeat reply; an agent that
    /// cannot renew it stops its at-most-one modules before it ends. Keep it
    /// well above a leader election plus the agent's stop grace (default
    /// 1 s), or a leader change fences modules needlessly.
    #[arg(long, env = "SUPERVISOR_LEASE_MS", default_value_t = 5000)]
    pub lease_ms: u64,

    /// Clock-drift margin: a node is declared down only after the lease plus
    /// this margin has passed since its last heartbeat.
    #[arg(long, env = "SUPERVISOR_LEASE_DRIFT_MS", default_value_t = 500)]
    pub lease_drift_ms: u64,

    /// A package version that failed to install or start on this many
    /// distinct nodes (across any modules) within --quarantine-window-ms is
    /// quarantined: no deploy, update or failover uses it until an operator
    /// lifts it. 0 turns quarantine off.
    #[arg(long, env = "SUPERVISOR_QUARANTINE_NODES", default_value_t = 2)]
    pub quarantine_nodes: u32,

    /// The window of --quarantine-nodes, in ms.
    #[arg(
        long,
        env = "SUPERVISOR_QUARANTINE_WINDOW_MS",
        default_value_t = 600_000
    )]
    pub quarantine_window_ms: u64,

    /// Raft election timeout (lower bound; the upper bound is twice this).
    /// A follower that heard from a leader waits the upper bound (the
    /// leader's lease: it refuses votes meanwhile) plus its own timeout, so
    /// a dead leader is replaced after 3-4 times this value; Raft
    /// heartbeats go every 1.5 x min(timeout / 2, max(timeout / 4, 100 ms)).
    #[arg(long, env = "SUPERVISOR_ELECTION_TIMEOUT_MS", default_value_t = 200)]
    pub election_timeout_ms: u64,

    /// How long a deploy's package check trusts depmgr's answer that the
    /// package exists (packages are immutable) before asking again; 0 asks
    /// every time. An unknown package is asked every time.
    #[arg(
        long,
        env = "SUPERVISOR_PACKAGE_CACHE_TTL_MS",
        default_value_t = 60_000
    )]
    pub package_cache_ttl_ms: u64,

    /// Build a snapshot after this many log entries. A snapshot encodes
    /// the whole state (beside apply, but on a CPU core): 20,000 entries
    /// hold 100,000 to 250,000 deploys under load. Fewer entries replay
    /// faster at start; more spend less CPU on snapshots.
    #[arg(long, env = "SUPERVISOR_SNAPSHOT_LOGS", default_value_t = 20000)]
    pub snapshot_logs: u64,

    /// Re-create the cluster from a backup (`supctl snapshot save`): an
    /// empty data dir starts with its state, under the membership of
    /// --peers. Give it to every replica (at least the lowest id).
    #[arg(long, env = "SUPERVISOR_RESTORE_FROM")]
    pub restore_from: Option<std::path::PathBuf>,

    /// When set, admin requests need `Authorization: Bearer <token>`.
    #[arg(long, env = "SUPERVISOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A bearer token for read-only admin clients (dashboards): GET
    /// requests only; any other method is refused with 403.
    #[arg(long, env = "SUPERVISOR_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,

    /// Largest admin request body accepted, in bytes (heartbeats have
    /// their own limit, `proto::heartbeat::MAX_HEARTBEAT_BYTES`).
    #[arg(long, env = "SUPERVISOR_MAX_BODY", default_value_t = 4 << 20)]
    pub max_body: usize,

    /// Most HTTP connections served at once (1 to 1048576): every agent
    /// keeps one open to the leader, so this bounds the fleet one leader
    /// can serve. Further connections wait in the listen backlog until one
    /// closes. At start the replica raises its open-file limit to fit
    /// (warning when the hard limit does not allow it).
    #[arg(long, env = "SUPERVISOR_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest encoded replicated state a deploy may grow it to, in bytes;
    /// a deploy beyond it is refused before it is proposed. At most the
    /// default, 256 MiB (half the largest snapshot a replica installs).
    #[arg(long, env = "SUPERVISOR_MAX_STATE_BYTES", default_value_t = MAX_STATE_BYTES)]
    pub max_state_bytes: u64,

    /// The cluster CA (PEM). With --tls-cert and --tls-key: every listener
    /// serves TLS only and every peer is verified against this CA.
    #[arg(long, env = "SUPERVISOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// This replica's certificate (PEM), naming `supervisor/<--id>`;
    /// re-read on SIGHUP.
    #[arg(long, env = "SUPERVISOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The key of --tls-cert (PEM); re-read on SIGHUP.
    #[arg(long, env = "SUPERVISOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Without the TLS flags, serve plaintext on a non-loopback --listen
    /// address too (anyone who can reach it is trusted).
    #[arg(long, env = "SUPERVISOR_INSECURE")]
    pub insecure: bool,
}

/// `--peers`: id → address, the initial voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<SupervisorId, String>);

fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer {part:?} is not id=host:port"))?;
        let id: SupervisorId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id {id:?} is not a number"))?;
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("peer address {addr:?} is not host:port")),
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(Peers(peers))
}

/// The shortest lease a replica grants (`--lease-ms`): agents fence
/// halfway through a lease they could not renew, and renew every 300 ms by
/// default; a shorter lease would fence modules of healthy nodes.
pub const MIN_LEASE_MS: u64 = 1000;
/// Default and upper bound of `--max-state-bytes`: 256 MiB, half of
/// [`crate::http::raft::MAX_SNAPSHOT`] (512 MiB), so that a state at the
/// cap, grown further by what deploys do not count (the packages the
/// leader retrieves, failure reasons, nodes), still fits a snapshot.
pub const MAX_STATE_BYTES: u64 = 256 << 20;
/// Default of `--max-connections`: a leader serves a fleet of this many
/// agents (each keeps one connection), with room for clients and peers.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Open files a replica needs besides its connections (RocksDB, logs,
/// peers' connections, the listen socket).
pub const OTHER_FILES: u64 = 1024;
const _: () = assert!(2 * MAX_STATE_BYTES <= crate::http::raft::MAX_SNAPSHOT);

impl Config {
    /// What is allowed but unwise, one line each (logged at start): a lease
    /// that a leader election can outlast fences every `at-most-one` module
    /// during leader changes.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let election_max = self.election_max_ms();
        if self.lease_ms <= election_max {
            out.push(format!(
                "--lease-ms {} is not longer than a leader election can take (up to {election_max} ms with --election-timeout-ms {}): at-most-one modules will be fenced during leader changes",
                self.lease_ms, self.election_timeout_ms
            ));
        }
        out
    }

    /// The Raft heartbeat interval (ms): a quarter of the election timeout
    /// but at least 100 ms, and never more than half of it. It is also
    /// openraft's timeout of every AppendEntries (and of each leadership
    /// confirmation, which gates every lease): 100 ms leaves room for a
    /// follower's disk sync on a loaded machine.
    pub fn raft_heartbeat_ms(&self) -> u64 {
        (self.election_timeout_ms / 4)
            .max(100)
            .min(self.election_timeout_ms / 2)
            .max(1)
    }

    /// How long after a leader's last heartbeat a new one is elected, at
    /// most, when the first round of voting succeeds: openraft 0.9 lets a
    /// follower that heard a leader wait its lease (the timeout's upper
    /// bound, twice `--election-timeout-ms`) plus its own randomised
    /// timeout (up to the upper bound again), checked on ticks of 1.5
    /// heartbeat intervals.
    pub fn election_max_ms(&self) -> u64 {
        4 * self.election_timeout_ms + self.raft_heartbeat_ms() * 3 / 2
    }

    /// Checks what clap cannot: cross-field rules.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.peers.0.contains_key(&self.id) {
            return Err(Error::Config(format!(
                "--id {} is not one of --peers",
                self.id
            )));
        }
        if self.heartbeat_ttl_ms == 0 {
            return Err(Error::Config("--heartbeat-ttl-ms must be above 0".into()));
        }
        if self.lease_ms < MIN_LEASE_MS {
            return Err(Error::Config(format!(
                "--lease-ms {} is too short: the minimum is {MIN_LEASE_MS} ms (an agent heartbeats every 300 ms by default and fences its at-most-one modules halfway through a lease it could not renew)",
                self.lease_ms
            )));
        }
        if self.max_state_bytes > MAX_STATE_BYTES {
            return Err(Error::Config(format!(
                "--max-state-bytes {} is over the limit of {MAX_STATE_BYTES} (half the largest snapshot a replica installs)",
                self.max_state_bytes
            )));
        }
        if !(1..=1 << 20).contains(&self.max_connections) {
            return Err(Error::Config(format!(
                "--max-connections {} is out of range: 1 to 1048576",
                self.max_connections
            )));
        }
        if self.election_timeout_ms < 50 {
            return Err(Error::Config(
                "--election-timeout-ms must be at least 50".into(),
            ));
        }
        let tls = self.tls_files()?.is_some();
        tls::policy::check_listen(&self.listen.to_string(), tls, self.insecure)
            .map_err(Error::Config)?;
        match (tls, self.depmgr.starts_with("https://")) {
            (true, false) => {
                return Err(Error::Config(format!(
                    "--depmgr {:?} must be an https:// URL: with the TLS flags depmgr is reached over TLS only",
                    self.depmgr
                )));
            }
            (false, _) if !self.depmgr.starts_with("http://") => {
                return Err(Error::Config(format!(
                    "--depmgr {:?} must be an http:// URL (https:// needs --tls-ca, --tls-cert and --tls-key)",
                    self.depmgr
                )));
            }
            _ => {}
        }
        for (flag, token) in [
            ("--admin-token", &self.admin_token),
            ("--read-token", &self.read_token),
        ] {
            if token.as_ref().is_some_and(|t| t.is_empty()) {
                return Err(Error::Config(format!("{flag} is empty")));
            }
        }
        if let Some(read) = &self.read_token {
            if self.admin_token.as_ref() == Some(read) {
                return Err(Error::Config(
                    "--read-token must differ from --admin-token".into(),
                ));
            }
            if self.admin_token.is_none() && !tls {
                return Err(Error::Config(
                    "--read-token needs --admin-token or the TLS flags: without either the admin API is open to everyone".into(),
                ));
            }
        }
        Ok(())
    }

    /// The TLS flags: all three, or none (`Ok(None)`).
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, Error> {
        TlsFiles::from_flags(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
        .map_err(Error::Config)
    }

    /// This replica's advertised address (its entry in --peers).
    pub fn advertised(&self) -> &str {
        &self.peers.0[&self.id]
    }

    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat_ttl_ms: self.heartbeat_ttl_ms,
            lease_ms: self.lease_ms,
            drift_ms: self.lease_drift_ms,
            quarantine: QuarantinePolicy {
                nodes: self.quarantine_nodes,
                window_ms: self.quarantine_window_ms,
            },
        }
    }

    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "supervisor".into(),
            heartbeat_interval: self.raft_heartbeat_ms(),
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_name_the_problem() {
        let p = parse_peers("1=127.0.0.1:7001, 2=h:7002,3=h:7003").expect("valid");
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0[&2], "h:7002");
        assert!(parse_peers("1=h").unwrap_err().contains("host:port"));
        assert!(parse_peers("x=h:1").unwrap_err().contains("not a number"));
        assert!(parse_peers("1=h:1,1=h:2").unwrap_err().contains("twice"));
    }

    #[test]
    fn id_must_be_a_peer() {
        let c = Config::try_parse_from([
            "supervisor",
            "--id",
            "4",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/tmp/x",
            "--peers",
            "1=h:1,2=h:2",
        ])
        .expect("parses");
        assert!(c.validate().unwrap_err().to_string().contains("--id 4"));
    }

    /// A config with `extra` flags; `--listen` is 127.0.0.1:1 unless given.
    fn parse(extra: &[&str]) -> Config {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:1"]
        };
        let base = [
            "supervisor",
            "--id",
            "1",
            "--data-dir",
            "/tmp/x",
            "--peers",
            "1=h:1",
        ];
        Config::try_parse_from(base.iter().chain(listen).chain(extra)).expect("parses")
    }

    fn problem(extra: &[&str]) -> String {
        parse(extra).validate().unwrap_err().to_string()
    }

    #[test]
    fn a_lease_below_the_minimum_is_refused_and_a_short_one_warned_about() {
        let e = problem(&["--lease-ms", "999"]);
        assert!(
            e.contains("--lease-ms 999") && e.contains("minimum is 1000 ms"),
            "{e}"
        );
        assert!(problem(&["--lease-ms", "0"]).contains("minimum is 1000 ms"));
        assert!(problem(&["--heartbeat-ttl-ms", "0"]).contains("--heartbeat-ttl-ms"));
        // The documented pairing starts; with a long election timeout, with
        // a warning about elections (openraft's lease of twice the timeout,
        // plus up to twice the timeout, plus a tick of 1.5 x 150 ms).
        let c = parse(&[
            "--heartbeat-ttl-ms",
            "1500",
            "--lease-ms",
            "1000",
            "--election-timeout-ms",
            "600",
        ]);
        c.validate().expect("lease 1000 ms is accepted");
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("up to 2625 ms"), "{w:?}");
        // With the default election timeout, elections end within 950 ms.
        let c = parse(&["--heartbeat-ttl-ms", "1500", "--lease-ms", "1000"]);
        assert_eq!(c.election_max_ms(), 950);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // The defaults warn about nothing.
        assert!(parse(&[]).warnings().is_empty());
    }

    /// The Raft heartbeat: a quarter of the election timeout, at least
    /// 100 ms, at most half of it; unchanged from the old rule (a quarter,
    /// at least 20 ms) for timeouts of 400 ms and more.
    #[test]
    fn max_connections_is_bounded_and_defaults_to_a_fleet() {
        assert_eq!(parse(&[]).max_connections, 16_384);
        assert_eq!(
            parse(&["--max-connections", "20000"]).max_connections,
            20_000
        );
        for bad in ["0", "1048577"] {
            let e = problem(&["--max-connections", bad]);
            assert!(
                e.contains(&format!("--max-connections {bad}")) && e.contains("1 to 1048576"),
                "{e}"
            );
        }
    }

    #[test]
    fn raft_heartbeat_follows_the_election_timeout() {
        for (timeout, heartbeat) in [
            (50, 25),
            (100, 50),
            (200, 100),
            (300, 100),
            (400, 100),
            (500, 125),
            (600, 150),
            (2000, 500),
        ] {
            let c = parse(&["--election-timeout-ms", &timeout.to_string()]);
            assert_eq!(c.raft_heartbeat_ms(), heartbeat, "timeout {timeout}");
            let r = c.raft_config();
            assert_eq!(
                (
                    r.heartbeat_interval,
                    r.election_timeout_min,
                    r.election_timeout_max
                ),
                (heartbeat, timeout, 2 * timeout)
            );
            r.validate().expect("openraft accepts it");
        }
    }

    #[test]
    fn tls_flags_come_together_and_decide_the_schemes() {
        assert!(problem(&["--tls-ca", "ca.pem"]).contains("--tls-cert, --tls-key"));
        let tls = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "1.pem",
            "--tls-key",
            "1.key",
        ];
        let e = problem(&tls);
        assert!(e.contains("https://"), "{e}");
        let with_https: Vec<&str> = tls
            .iter()
            .copied()
            .chain(["--depmgr", "https://d:7000", "--listen", "0.0.0.0:1"])
            .collect();
        assert!(parse(&with_https).validate().is_ok());
        assert!(problem(&["--depmgr", "https://d:7000"]).contains("needs --tls-ca"));
    }

    #[test]
    fn plaintext_only_on_loopback_unless_insecure() {
        let e = problem(&["--listen", "0.0.0.0:1"]);
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
        assert!(
            parse(&["--listen", "0.0.0.0:1", "--insecure"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn read_token_needs_a_way_to_write() {
        assert!(problem(&["--read-token", "r"]).contains("--admin-token"));
        assert!(problem(&["--read-token", "t", "--admin-token", "t"]).contains("differ"));
        assert!(problem(&["--read-token", ""]).contains("empty"));
        assert!(
            parse(&["--read-token", "r", "--admin-token", "w"])
                .validate()
                .is_ok()
        );
    }
}
