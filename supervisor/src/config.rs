//! The supervisor's configuration: one typed struct, every field from a flag
//! or its environment variable (`SUPERVISOR_<FLAG>`), validated at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::error::Error;
use crate::plan::Timing;
use crate::raft::SupervisorId;

/// A replica of the supervisor cluster.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "supervisor",
    version,
    about = "Raft-replicated supervisor of software modules"
)]
pub struct Config {
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

    /// Raft election timeout (lower bound; the upper bound is twice this).
    #[arg(long, env = "SUPERVISOR_ELECTION_TIMEOUT_MS", default_value_t = 600)]
    pub election_timeout_ms: u64,

    /// Build a snapshot after this many log entries.
    #[arg(long, env = "SUPERVISOR_SNAPSHOT_LOGS", default_value_t = 5000)]
    pub snapshot_logs: u64,

    /// When set, admin requests need `Authorization: Bearer <token>`.
    #[arg(long, env = "SUPERVISOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest request body accepted (admin and heartbeats), in bytes.
    #[arg(long, env = "SUPERVISOR_MAX_BODY", default_value_t = 4 << 20)]
    pub max_body: usize,
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

impl Config {
    /// Checks what clap cannot: cross-field rules.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.peers.0.contains_key(&self.id) {
            return Err(Error::Config(format!(
                "--id {} is not one of --peers",
                self.id
            )));
        }
        if self.lease_ms == 0 || self.heartbeat_ttl_ms == 0 {
            return Err(Error::Config(
                "--lease-ms and --heartbeat-ttl-ms must be above 0".into(),
            ));
        }
        if self.election_timeout_ms < 50 {
            return Err(Error::Config(
                "--election-timeout-ms must be at least 50".into(),
            ));
        }
        if !self.depmgr.starts_with("http://") {
            return Err(Error::Config(format!(
                "--depmgr {:?} must be an http:// URL",
                self.depmgr
            )));
        }
        if let Some(t) = &self.admin_token
            && t.is_empty()
        {
            return Err(Error::Config("--admin-token is empty".into()));
        }
        Ok(())
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
        }
    }

    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "supervisor".into(),
            heartbeat_interval: (self.election_timeout_ms / 4).max(20),
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
}
