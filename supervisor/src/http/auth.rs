//! Who may use which surface of a replica.
//!
//! With TLS (the listener verifies every client certificate it is offered
//! against the cluster CA and hands the handlers the peer's identity,
//! [`Peer`]):
//!
//! - Raft RPC (`/raft/append|vote|snapshot`): a `supervisor/<id>`
//!   certificate whose id is a member of the membership this replica knows
//!   (voter or learner), or, while it knows none, one of `--peers`, or a
//!   member by the word of a member or peer it knows ([`crate::vouch`])
//!   ([`raft_peer`], before the body is read); and the leader or candidate
//!   named in the request is that id ([`raft_claim`]): a member cannot
//!   speak for another.
//! - Heartbeats (`/v1/agent/heartbeat`): an `agent/<node>` certificate for
//!   the node the heartbeat is about ([`heartbeat_agent`],
//!   [`heartbeat_node`]).
//! - The admin API (`/v1/...`, [`admin`]): an operator certificate; a
//!   member's supervisor certificate (a follower forwarding a request it
//!   has already admitted); or, without a certificate, the bearer token:
//!   `--admin-token` for everything, `--read-token` for GETs. Agent and
//!   depmgr certificates are refused (403), an anonymous client without a
//!   valid token too (401).
//!
//! Without TLS only the admin tokens are checked, as before (and only when
//! `--admin-token` is set). Tokens are compared in constant time.
//! `/health`, `/ready` and `/metrics` are open.
//!
//! Every refusal is an `{"error"}` naming who was refused and why, a count
//! in `supervisor_auth_refused_total{surface}`, and a warning in the log
//! (at most one a second per surface, with the running count).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tls::{Peer, Role};

use super::ApiError;
use crate::app::App;
use crate::raft::SupervisorId;

/// Which surface refused a request (the label of the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Raft,
    Heartbeat,
    Admin,
}

impl Surface {
    pub const ALL: [Surface; 3] = [Surface::Raft, Surface::Heartbeat, Surface::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Raft => "raft",
            Surface::Heartbeat => "heartbeat",
            Surface::Admin => "admin",
        }
    }

    /// Refusals so far on this surface.
    pub fn counter(self, app: &App) -> &AtomicU64 {
        match self {
            Surface::Raft => &app.metrics.refused_raft,
            Surface::Heartbeat => &app.metrics.refused_heartbeat,
            Surface::Admin => &app.metrics.refused_admin,
        }
    }

    fn last_log(self) -> &'static AtomicU64 {
        static LAST: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        &LAST[self as usize]
    }
}

/// Counts, logs (rate-limited) and answers a refusal.
pub fn refuse(app: &App, surface: Surface, status: StatusCode, peer: &Peer, why: &str) -> ApiError {
    let n = surface.counter(app).fetch_add(1, Ordering::Relaxed) + 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = surface.last_log();
    let prev = last.load(Ordering::Relaxed);
    if now.saturating_sub(prev) >= 1000
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            surface = surface.as_str(),
            peer = %peer.describe(),
            refused_total = n,
            "request refused: {why}"
        );
    }
    ApiError::new(status, format!("{} refused: {why}", peer.describe()))
}

/// Middleware of the Raft routes: with TLS, only a member's supervisor
/// certificate gets as far as the body.
pub async fn raft_peer(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if app.tls.is_none() {
        return next.run(req).await;
    }
    let checked = match &peer.identity {
        None => Err("Raft RPC needs a supervisor certificate; none was presented".to_string()),
        Some(id) => match id.supervisor_id() {
            None => Err(format!("{id} is not a supervisor: Raft RPC is for members")),
            Some(sid) => app.is_raft_peer(sid),
        },
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(why) => refuse(&app, Surface::Raft, StatusCode::FORBIDDEN, &peer, &why).into_response(),
    }
}

/// With TLS, the leader or candidate a Raft request names (`claimed`) must
/// be the supervisor whose certificate sent it.
pub fn raft_claim(app: &App, peer: &Peer, claimed: Option<SupervisorId>) -> Result<(), ApiError> {
    if app.tls.is_none() {
        return Ok(());
    }
    let holder = peer.identity.as_ref().and_then(|i| i.supervisor_id());
    match (holder, claimed) {
        (Some(h), Some(c)) if h == c => Ok(()),
        (_, None) => Err(refuse(
            app,
            Surface::Raft,
            StatusCode::FORBIDDEN,
            peer,
            "the request names no leader or candidate",
        )),
        (_, Some(c)) => Err(refuse(
            app,
            Surface::Raft,
            StatusCode::FORBIDDEN,
            peer,
            &format!("the request speaks for supervisor {c}, not for the certificate's holder"),
        )),
    }
}

/// With TLS, a heartbeat comes from an agent certificate (checked before
/// the body is decoded).
pub fn heartbeat_agent(app: &App, peer: &Peer) -> Result<(), ApiError> {
    if app.tls.is_none() {
        return Ok(());
    }
    match &peer.identity {
        Some(id) if id.is(Role::Agent) => Ok(()),
        Some(id) => Err(refuse(
            app,
            Surface::Heartbeat,
            StatusCode::FORBIDDEN,
            peer,
            &format!("{id} is not an agent: heartbeats need an agent/<node> certificate"),
        )),
        None => Err(refuse(
            app,
            Surface::Heartbeat,
            StatusCode::FORBIDDEN,
            peer,
            "heartbeats need an agent/<node> certificate; none was presented",
        )),
    }
}

/// With TLS, a heartbeat of `node` comes from `agent/<node>`.
pub fn heartbeat_node(app: &App, peer: &Peer, node: &str) -> Result<(), ApiError> {
    if app.tls.is_none() {
        return Ok(());
    }
    match &peer.identity {
        Some(id) if id.is(Role::Agent) && id.name == node => Ok(()),
        Some(id) => Err(refuse(
            app,
            Surface::Heartbeat,
            StatusCode::FORBIDDEN,
            peer,
            &format!("a heartbeat of node {node:?} needs the certificate agent/{node}, not {id}"),
        )),
        None => heartbeat_agent(app, peer),
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Constant-time equality of a presented token and a configured one (the
/// length is not hidden).
fn same_token(presented: &str, configured: &str) -> bool {
    presented.as_bytes().ct_eq(configured.as_bytes()).into()
}

/// What a bearer token allows.
enum TokenGrant {
    All,
    ReadOnly,
    Nothing,
}

fn token_grant(app: &App, headers: &HeaderMap) -> TokenGrant {
    let Some(presented) = bearer(headers) else {
        return TokenGrant::Nothing;
    };
    // Both comparisons run whatever the first one says.
    let all = app
        .config
        .admin_token
        .as_deref()
        .is_some_and(|t| same_token(presented, t));
    let read = app
        .config
        .read_token
        .as_deref()
        .is_some_and(|t| same_token(presented, t));
    if all {
        TokenGrant::All
    } else if read {
        TokenGrant::ReadOnly
    } else {
        TokenGrant::Nothing
    }
}

/// Middleware of the admin routes: see the module documentation.
pub async fn admin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let tls = app.tls.is_some();
    if tls {
        match &peer.identity {
            Some(id) if id.is(Role::Operator) => return next.run(req).await,
            Some(id) if id.is(Role::Supervisor) => {
                let member = id
                    .supervisor_id()
                    .ok_or_else(|| format!("{id} names no supervisor id"))
                    .and_then(|sid| app.is_raft_peer(sid));
                return match member {
                    Ok(()) => next.run(req).await,
                    Err(why) => refuse(&app, Surface::Admin, StatusCode::FORBIDDEN, &peer, &why)
                        .into_response(),
                };
            }
            Some(id) => {
                let why = format!(
                    "{id} may not use the admin API: it needs an operator certificate or the admin token"
                );
                return refuse(&app, Surface::Admin, StatusCode::FORBIDDEN, &peer, &why)
                    .into_response();
            }
            None => {}
        }
    } else if app.config.admin_token.is_none() {
        // Plaintext without a token: the admin API is open, as before.
        return next.run(req).await;
    }
    match token_grant(&app, req.headers()) {
        TokenGrant::All => next.run(req).await,
        TokenGrant::ReadOnly if read => next.run(req).await,
        TokenGrant::ReadOnly => refuse(
            &app,
            Surface::Admin,
            StatusCode::FORBIDDEN,
            &peer,
            &format!(
                "the read token allows GET requests only, not {}",
                req.method()
            ),
        )
        .into_response(),
        TokenGrant::Nothing => {
            let why = if tls {
                "the admin API needs an operator certificate or the admin token (Authorization: Bearer <token>)"
            } else {
                "missing or wrong admin token (Authorization: Bearer <token>)"
            };
            refuse(&app, Surface::Admin, StatusCode::UNAUTHORIZED, &peer, why).into_response()
        }
    }
}
