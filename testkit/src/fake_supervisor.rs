//! A fake supervisor leader for the node manager's tests: it records every
//! heartbeat and answers with scripted replies.
//!
//! It speaks the real heartbeat protocol (`POST /v1/agent/heartbeat`, bincode
//! bodies through `proto::encode`/`decode`) and, like the leader, keeps the
//! last module table it was sent and asks for it again when the version it
//! knows differs. A test chooses how it answers ([`Mode`]: accept, not the
//! leader, unavailable, or never) and which directives it sends: repeated in
//! every reply (level-triggered, as the leader does) or once. What it saw is
//! read back per module ([`Seen`]), as reports, or as timed heartbeats.
//!
//! TLS: [`FakeSupervisor::start_tls`] serves over a [`tls::Bound`]
//! listener with the certificate it is given (client certificates
//! optional), so a test can stand up a real-looking leader (a supervisor
//! certificate) or an impostor (an agent's or depmgr's certificate, another
//! CA's). Each recorded heartbeat carries the identity of the client
//! certificate it came with ([`Beat::peer`]); [`FakeSupervisor::handshakes`]
//! counts the listener's handshakes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use proto::heartbeat::{
    Directive, Heartbeat, HeartbeatReply, ModuleStatus, ModuleTable, ReplyOutcome, Report,
    ReportKind,
};
use tls::{HandshakeStats, Identity, Peer, Tls};
use tokio_util::sync::CancellationToken;

use crate::poll::eventually;

/// How the fake supervisor answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `Accepted`, with `lease_ms` and the directives.
    Accept,
    /// `NotLeader` with this hint.
    NotLeader(Option<String>),
    /// 503 with a JSON error body.
    Unavailable,
    /// Never answers (the agent's request times out).
    Hang,
}

/// One recorded heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    pub at: Instant,
    pub hb: Heartbeat,
    /// The client certificate's identity (TLS), `None` in plaintext.
    pub peer: Option<Identity>,
}

#[derive(Debug)]
struct FakeState {
    beats: Vec<Beat>,
    mode: Mode,
    lease_ms: u64,
    /// Repeated in every accepted reply (level-triggered, like the leader).
    directives: Vec<Directive>,
    /// Sent in the next accepted reply only.
    once: Vec<Directive>,
    /// The last table seen, by version.
    table: Option<(u64, ModuleTable)>,
}

/// A fake supervisor leader on loopback.
#[derive(Clone)]
pub struct FakeSupervisor {
    /// `127.0.0.1:<port>` (bare, as in `--supervisors` and leader hints).
    pub addr: String,
    state: Arc<Mutex<FakeState>>,
    stop: CancellationToken,
    handshakes: Arc<HandshakeStats>,
}

/// What the fake supervisor knows of one module from the heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub status: ModuleStatus,
    pub epoch: u64,
    pub restore_seq: u32,
}

impl FakeSupervisor {
    pub async fn start() -> FakeSupervisor {
        Self::start_at_tls("127.0.0.1:0", None).await
    }

    /// Starts on a given address (to come back where an agent expects it).
    pub async fn start_at(addr: &str) -> FakeSupervisor {
        Self::start_at_tls(addr, None).await
    }

    /// Serves TLS only with `tls`'s certificate (whatever its role: a
    /// supervisor's, or an impostor's).
    pub async fn start_tls(tls: Arc<Tls>) -> FakeSupervisor {
        Self::start_at_tls("127.0.0.1:0", Some(tls)).await
    }

    /// On `addr`, with TLS when `tls` is given.
    pub async fn start_at_tls(addr: &str, tls: Option<Arc<Tls>>) -> FakeSupervisor {
        let handshakes = Arc::new(HandshakeStats::default());
        let auth = tls.as_ref().map(|t| (t, tls::ClientAuth::Optional));
        let listener = tls::Bound::bind(addr, auth, handshakes.clone())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(FakeState {
            beats: Vec::new(),
            mode: Mode::Accept,
            lease_ms: 10_000,
            directives: Vec::new(),
            once: Vec::new(),
            table: None,
        }));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/v1/agent/heartbeat", post(heartbeat))
            .with_state(state.clone());
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = listener.serve(app, shutdown.cancelled_owned()).await;
        });
        FakeSupervisor {
            addr,
            state,
            stop,
            handshakes,
        }
    }

    /// Handshakes of its listener (TLS only): completed and failed.
    pub fn handshakes(&self) -> &HandshakeStats {
        &self.handshakes
    }

    /// Stops listening (open connections may linger until they close).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }
    pub fn set_lease_ms(&self, ms: u64) {
        self.state.lock().expect("lock").lease_ms = ms;
    }
    /// Replaces the directives repeated in every accepted reply.
    pub fn set_directives(&self, d: Vec<Directive>) {
        self.state.lock().expect("lock").directives = d;
    }
    /// Sends `d` in the next accepted reply only.
    pub fn send_once(&self, d: Directive) {
        self.state.lock().expect("lock").once.push(d);
    }
    pub fn beats(&self) -> Vec<Beat> {
        self.state.lock().expect("lock").beats.clone()
    }
    pub fn beat_count(&self) -> usize {
        self.state.lock().expect("lock").beats.len()
    }
    /// Every report seen so far.
    pub fn reports(&self) -> Vec<Report> {
        let st = self.state.lock().expect("lock");
        st.beats.iter().flat_map(|b| b.hb.reports.clone()).collect()
    }

    /// The module as the latest heartbeat shows it.
    pub fn module(&self, name: &str) -> Option<Seen> {
        let st = self.state.lock().expect("lock");
        let beat = st.beats.last()?;
        let (_, table) = st.table.as_ref()?;
        let statuses = beat.hb.statuses.to_statuses()?;
        let i = table.modules.iter().position(|m| m.module == name)?;
        let e = &table.modules[i];
        Some(Seen {
            status: *statuses.get(i)?,
            epoch: e.epoch,
            restore_seq: e.restore_seq,
        })
    }

    /// Index of the first heartbeat at or after `from` that shows `name`
    /// with `status` (decoded against the table in force).
    pub fn first_beat_with(&self, from: usize, name: &str, status: ModuleStatus) -> Option<Beat> {
        let st = self.state.lock().expect("lock");
        let mut table: Option<&ModuleTable> = None;
        for (i, b) in st.beats.iter().enumerate() {
            if let Some(t) = &b.hb.table {
                table = Some(t);
            }
            if i < from {
                continue;
            }
            let (Some(t), Some(statuses)) = (table, b.hb.statuses.to_statuses()) else {
                continue;
            };
            if let Some(pos) = t.modules.iter().position(|m| m.module == name)
                && statuses.get(pos) == Some(&status)
            {
                return Some(b.clone());
            }
        }
        None
    }

    /// Waits until the latest heartbeat shows `name` with `status`.
    pub async fn wait_status(&self, name: &str, status: ModuleStatus, timeout: Duration) -> Seen {
        eventually(&format!("{name} {status:?}"), timeout, || async {
            self.module(name).filter(|s| s.status == status)
        })
        .await
    }

    /// Waits until `name` is no longer in the table.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        eventually(&format!("{name} gone from the table"), timeout, || async {
            let st = self.state.lock().expect("lock");
            let (_, t) = st.table.as_ref()?;
            (!t.modules.iter().any(|m| m.module == name)).then_some(())
        })
        .await
    }

    /// Waits for a report of `kind` about `name` and returns it.
    pub async fn wait_report(&self, name: &str, kind: ReportKind, timeout: Duration) -> Report {
        eventually(&format!("{kind:?} report for {name}"), timeout, || async {
            self.reports()
                .into_iter()
                .find(|r| r.module == name && r.kind == kind)
        })
        .await
    }
}

async fn heartbeat(
    State(state): State<Arc<Mutex<FakeState>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    let peer = peer.identity;
    let hb: Heartbeat = match proto::decode(&body) {
        Ok(h) => h,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(proto::ErrorBody {
                    error: e.to_string(),
                }),
            )
                .into_response();
        }
    };
    let at = Instant::now();
    let reply = {
        let mut st = state.lock().expect("lock");
        match st.mode.clone() {
            Mode::Hang => None,
            Mode::Unavailable => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(proto::ErrorBody {
                        error: "no leader".into(),
                    }),
                )
                    .into_response();
            }
            Mode::NotLeader(hint) => {
                st.beats.push(Beat {
                    at,
                    hb,
                    peer: peer.clone(),
                });
                Some(HeartbeatReply {
                    outcome: ReplyOutcome::NotLeader { leader: hint },
                    need_table: false,
                    lease_ms: 0,
                    directives: vec![],
                })
            }
            Mode::Accept => {
                if let Some(t) = &hb.table {
                    st.table = Some((hb.table_version, t.clone()));
                }
                let known = st.table.as_ref().map(|(v, _)| *v);
                let need_table = known != Some(hb.table_version);
                let mut directives = st.directives.clone();
                directives.append(&mut st.once);
                let lease_ms = st.lease_ms;
                let table_version = hb.table_version;
                st.beats.push(Beat {
                    at,
                    hb,
                    peer: peer.clone(),
                });
                Some(HeartbeatReply {
                    outcome: ReplyOutcome::Accepted {
                        table_version,
                        cluster: 0,
                    },
                    need_table,
                    lease_ms,
                    directives,
                })
            }
        }
    };
    match reply {
        Some(r) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            proto::encode(&r).expect("encode"),
        )
            .into_response(),
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
