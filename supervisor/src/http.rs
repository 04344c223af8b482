//! Everything the replica serves on its `--listen` port: Raft RPC, the
//! agents' heartbeat endpoint, the admin API (JSON, see CONTRACT.md),
//! `/health` and `/metrics`.
//!
//! Admin requests are answered by any replica: a follower forwards writes
//! and linearizable reads to the leader ([`forward_to_leader`]); reads with
//! `?stale=true` are answered from the local replica. Errors are
//! `{"error": "..."}` with 400/401/404/409/503, made in one place
//! ([`ApiError`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use openraft::BasicNode;
use proto::heartbeat::{Heartbeat, HeartbeatReply, ReplyOutcome};
use proto::spec::ModuleSpec;
use serde::Deserialize;

use crate::app::{App, ProposeError};
use crate::observe::Ingest;
use crate::state::{Deploy, Drain, Outcome, Rejection, Remove, Transition};
use crate::views::{AddMember, ClusterView, Deployed, EventView, MemberView, ModuleView, NodeView};

/// Header marking a request forwarded by another replica (one hop only).
const FORWARDED: &str = "x-supervisor-forwarded";
/// Longest a forwarded admin request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest Raft RPC body (snapshots).
const MAX_RAFT_BODY: usize = 512 << 20;

/// An error answer: `{"error": message}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(proto::ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = match r {
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            Rejection::Conflict(_) => StatusCode::CONFLICT,
            Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, r.message())
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { .. } => ApiError::unavailable("leadership changed; retry"),
            ProposeError::Unavailable(m) => ApiError::unavailable(format!("no quorum: {m}")),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The whole HTTP surface of a replica.
pub fn router(app: Arc<App>) -> Router {
    let raft = Router::new()
        .route("/raft/append", post(raft_append))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY));
    let admin = Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/modules", get(modules).post(deploy))
        .route("/v1/modules/{name}", get(module).delete(remove))
        .route("/v1/events", get(events))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            forward_to_leader,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body));
    let agent = Router::new()
        .route("/v1/agent/heartbeat", post(heartbeat))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body));
    Router::new()
        .merge(raft)
        .merge(admin)
        .merge(agent)
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

// ---------------------------------------------------------------- Raft RPC

fn binary(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    proto::decode(body).map_err(|e| ApiError::bad(e.to_string()))
}

fn encode_answer<T: serde::Serialize>(value: &T) -> Response {
    match proto::encode(value) {
        Ok(bytes) => binary(bytes),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn raft_append(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.append_entries(req).await))
}

async fn raft_vote(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.vote(req).await))
}

async fn raft_snapshot(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req = decode_body(&body)?;
    Ok(encode_answer(&app.raft.install_snapshot(req).await))
}

// ---------------------------------------------------------------- agents

fn reply(outcome: ReplyOutcome) -> HeartbeatReply {
    HeartbeatReply {
        outcome,
        need_table: false,
        lease_ms: 0,
        directives: vec![],
    }
}

async fn heartbeat(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let hb: Heartbeat = match proto::decode(&body) {
        Ok(hb) => hb,
        Err(e) => {
            app.count(&app.metrics.heartbeats_rejected);
            return ApiError::bad(format!("heartbeat: {e}")).into_response();
        }
    };
    if let Err(e) = proto::names::check("node", &hb.node) {
        app.count(&app.metrics.heartbeats_rejected);
        return ApiError::bad(format!("heartbeat: {e}")).into_response();
    }
    app.count(&app.metrics.heartbeats);
    encode_answer(&answer_heartbeat(&app, &hb).await)
}

/// The leader's handling of one heartbeat (see `leader` for the batching).
pub async fn answer_heartbeat(app: &App, hb: &Heartbeat) -> HeartbeatReply {
    let not_leader = || {
        reply(ReplyOutcome::NotLeader {
            leader: app.leader_addr().map(|(_, a)| a),
        })
    };
    let Some(leader) = app.leader() else {
        return not_leader();
    };
    if !leader.wait_ready(Duration::from_secs(1)).await {
        return reply(ReplyOutcome::NotLeader {
            leader: Some(app.config.advertised().to_string()),
        });
    }
    let need_table = match leader.ingest(hb) {
        Ingest::Stale => return reply(ReplyOutcome::Stale),
        Ingest::Accepted {
            changed,
            need_table,
        } => {
            if changed {
                leader.await_pass().await;
            }
            need_table
        }
    };
    if !leader.confirm().await {
        return not_leader();
    }
    let (directives, acked) = {
        let mut observed = leader.observed.lock().expect("observed lock poisoned");
        match observed.nodes.get_mut(&hb.node) {
            Some(obs) if obs.table.is_some() => (
                app.state
                    .read(|s| obs.directives(s, &hb.node, &app.config.depmgr)),
                obs.table_version,
            ),
            _ => (vec![], 0),
        }
    };
    app.metrics
        .directives
        .fetch_add(directives.len() as u64, Ordering::Relaxed);
    HeartbeatReply {
        outcome: ReplyOutcome::Accepted {
            table_version: acked,
        },
        need_table,
        lease_ms: app.config.lease_ms,
        directives,
    }
}

// ---------------------------------------------------------------- admin: routing

/// Refuses a body whose declared length is over the limit with a 413 and
/// a message, after reading (and dropping) what the client sends, up to a
/// bound: a client still writing would otherwise see a reset connection
/// instead of the answer.
async fn refuse_oversized(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.config.max_body as u64;
    match declared {
        Some(len) if len > limit => {
            const DRAIN_BOUND: u64 = 64 << 20;
            if len <= DRAIN_BOUND {
                let body = req.into_body();
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    axum::body::to_bytes(body, DRAIN_BOUND as usize),
                )
                .await;
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes is over the limit of {limit} bytes"),
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.config.admin_token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer <token>)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn is_stale_read(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "stale=true" || kv == "stale=1"))
}

/// Sends writes and linearizable reads to the leader when this replica is
/// not it; everything else is served here.
async fn forward_to_leader(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let local = req.uri().path() == "/v1/cluster" || is_stale_read(&req) || app.leader().is_some();
    if local {
        return next.run(req).await;
    }
    if req.headers().contains_key(FORWARDED) {
        return ApiError::unavailable(
            "no leader: the replica this was forwarded to is not the leader",
        )
        .into_response();
    }
    let Some((leader_id, addr)) = app.leader_addr() else {
        return ApiError::unavailable("no leader elected yet; retry shortly").into_response();
    };
    if leader_id == app.id {
        return ApiError::unavailable("leadership is changing; retry shortly").into_response();
    }
    app.count(&app.metrics.forwarded);
    match forward(&app, req, &addr).await {
        Ok(resp) => resp,
        Err(e) => ApiError::unavailable(format!("forwarding to leader {leader_id} at {addr}: {e}"))
            .into_response(),
    }
}

async fn forward(app: &App, req: Request, addr: &str) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, app.config.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is over the limit of {} bytes",
                    app.config.max_body
                ),
            )
            .into_response());
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = app
        .http
        .request(parts.method.clone(), format!("http://{addr}{path}"))
        .timeout(FORWARD_TIMEOUT)
        .header(FORWARDED, app.id.to_string())
        .body(bytes);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let resp = out.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    let mut answer = Response::new(Body::from(body));
    *answer.status_mut() = status;
    if let Some(ct) = content_type {
        answer.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(answer)
}

#[derive(Debug, Default, Deserialize)]
struct ReadOpts {
    #[serde(default)]
    stale: Option<String>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

impl ReadOpts {
    fn stale(&self) -> bool {
        matches!(self.stale.as_deref(), Some("true" | "1"))
    }
}

/// Makes a read linearizable (this replica is the leader here, or the
/// request was forwarded to it), unless a stale read was asked for.
async fn read_barrier(app: &App, opts: &ReadOpts) -> ApiResult<()> {
    if opts.stale() {
        return Ok(());
    }
    match tokio::time::timeout(Duration::from_secs(5), app.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::unavailable(format!(
            "not a confirmed leader: {e}"
        ))),
        Err(_) => Err(ApiError::unavailable("no quorum confirmed the read in 5 s")),
    }
}

async fn commit_one(app: &App, t: Transition) -> ApiResult<u64> {
    let resp = app.propose(vec![t]).await?;
    match resp.outcomes.into_iter().next() {
        Some(Outcome::Applied { epoch }) => Ok(epoch),
        Some(Outcome::Rejected(r)) => Err(r.into()),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "empty response from the state machine",
        )),
    }
}

// ---------------------------------------------------------------- admin: handlers

async fn cluster(State(app): State<Arc<App>>) -> Json<ClusterView> {
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node): (&u64, &BasicNode)| MemberView {
            id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    Json(ClusterView {
        leader: m.current_leader,
        term: m.current_term,
        last_applied: m.last_applied.map_or(0, |l| l.index),
        members,
        id: app.id,
        leader_addr: app.leader_addr().map(|(_, a)| a),
    })
}

async fn add_member(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Response> {
    let req: AddMember =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("member: {e}")))?;
    match req.addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => {
            return Err(ApiError::bad(format!(
                "addr {:?} is not host:port",
                req.addr
            )));
        }
    }
    if app.voters().contains(&req.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("supervisor {} is already a voter", req.id),
        ));
    }
    let timeout = Duration::from_secs(50);
    let added = tokio::time::timeout(
        timeout,
        app.raft
            .add_learner(req.id, BasicNode::new(&req.addr), true),
    )
    .await;
    match added {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(ApiError::unavailable(format!(
                "adding learner {}: {e}",
                req.id
            )));
        }
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "learner {} did not catch up in {timeout:?}",
                req.id
            )));
        }
    }
    let mut voters = app.voters();
    voters.insert(req.id);
    app.raft
        .change_membership(voters, false)
        .await
        .map_err(|e| ApiError::unavailable(format!("promoting {}: {e}", req.id)))?;
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({"id": req.id, "addr": req.addr, "voter": true})),
    )
        .into_response())
}

async fn remove_member(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Response> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("member id {id:?} is not a number")))?;
    let mut voters = app.voters();
    if !voters.remove(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("supervisor {id} is not a member"),
        ));
    }
    if voters.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot remove the last voter",
        ));
    }
    app.raft
        .change_membership(voters, false)
        .await
        .map_err(|e| ApiError::unavailable(format!("removing {id}: {e}")))?;
    Ok(Json(serde_json::json!({"removed": id})).into_response())
}

async fn nodes(
    State(app): State<Arc<App>>,
    Query(opts): Query<ReadOpts>,
) -> ApiResult<Json<Vec<NodeView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(|s| {
        s.nodes
            .iter()
            .map(|(id, n)| NodeView::of(s, id, n))
            .collect()
    })))
}

async fn drain(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let epoch = commit_one(&app, Transition::Drain(Drain { node: id.clone() })).await?;
    Ok(Json(
        serde_json::json!({"node": id, "status": "draining", "index": epoch}),
    ))
}

async fn modules(
    State(app): State<Arc<App>>,
    Query(opts): Query<ReadOpts>,
) -> ApiResult<Json<Vec<ModuleView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(|s| {
        s.modules
            .iter()
            .map(|(n, m)| ModuleView::of(n, m))
            .collect()
    })))
}

async fn module(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(opts): Query<ReadOpts>,
) -> ApiResult<Json<ModuleView>> {
    read_barrier(&app, &opts).await?;
    app.state
        .read(|s| s.modules.get(&name).map(|m| ModuleView::of(&name, m)))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown module {name:?}")))
}

/// Parses a module spec body, naming the field that is wrong.
pub fn parse_spec(headers: &HeaderMap, body: &[u8]) -> ApiResult<ModuleSpec> {
    let toml = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == HeaderValue::from_static("application/toml"));
    let spec: ModuleSpec = if toml {
        let text =
            std::str::from_utf8(body).map_err(|_| ApiError::bad("module spec is not UTF-8"))?;
        toml::from_str(text).map_err(|e| ApiError::bad(format!("module spec: {e}")))?
    } else {
        // The path names the field that is wrong (`fencing: unknown variant`).
        let de = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || inner.is_syntax() || inner.is_eof() {
                ApiError::bad(format!("module spec: {inner}"))
            } else {
                ApiError::bad(format!("module spec: {path}: {inner}"))
            }
        })?
    };
    spec.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(spec)
}

async fn deploy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let spec = parse_spec(&headers, &body)?;
    check_package_exists(&app, &spec).await?;
    let name = spec.name.clone();
    let epoch = commit_one(&app, Transition::Deploy(Deploy { spec })).await?;
    Ok((StatusCode::CREATED, Json(Deployed { name, epoch })).into_response())
}

/// Refuses a deploy whose package depmgr does not know; when depmgr cannot
/// be reached, the deploy is accepted and retrieval retried later.
async fn check_package_exists(app: &App, spec: &ModuleSpec) -> ApiResult<()> {
    let url = format!(
        "{}/v1/packages/{}/{}",
        app.config.depmgr.trim_end_matches('/'),
        spec.package.name,
        spec.package.version
    );
    match app
        .http
        .get(&url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
    {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "package: {} is not in depmgr ({})",
                spec.package, app.config.depmgr
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "depmgr unreachable while deploying {}: accepted anyway", spec.name);
            Ok(())
        }
    }
}

async fn remove(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let index = commit_one(
        &app,
        Transition::Remove(Remove {
            module: name.clone(),
        }),
    )
    .await?;
    Ok(Json(
        serde_json::json!({"name": name, "removed": true, "index": index}),
    ))
}

async fn events(
    State(app): State<Arc<App>>,
    Query(opts): Query<ReadOpts>,
) -> ApiResult<Json<Vec<EventView>>> {
    read_barrier(&app, &opts).await?;
    let after = opts.after.unwrap_or(0);
    let limit = opts.limit.unwrap_or(1000).min(10_000);
    Ok(Json(app.state.read(|s| {
        s.events
            .iter()
            .filter(|e| e.index > after)
            .take(limit)
            .map(EventView::from)
            .collect()
    })))
}

// ---------------------------------------------------------------- metrics

async fn metrics(State(app): State<Arc<App>>) -> Response {
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
            *by_health.entry(NodeView::of(s, id, n).status).or_default() += 1;
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
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.load(Ordering::Relaxed)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
