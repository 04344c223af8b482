//! The admin API (JSON; names in docs/reference.md): cluster and
//! membership, nodes, modules, events. Writes become one transition each,
//! committed through Raft, and a rejection by `apply` becomes 404/409/400
//! through [`ApiError`]. Reads are linearizable (a read barrier on the
//! leader) unless `?stale=true` asks for this replica's applied state.
//!
//! Who may call it ([`super::auth::admin`], in front of forwarding): with
//! TLS an operator certificate, a member's supervisor certificate (a
//! follower forwarding), or the admin token (the read token: GETs only);
//! without TLS the tokens when `--admin-token` is set.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use openraft::BasicNode;
use proto::manifest::PackageRef;
use proto::spec::ModuleSpec;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth;
use super::forward::forward_to_leader;
use super::guard::refuse_oversized;
use super::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::state::{
    self, Deploy, Drain, FleetAction, LiftQuarantine, ModuleRecord, Outcome, RemoveNode, Reset,
    Rollback, SetFleetRollout, StartFleetRollout, StopModule, Transition, Undrain, Update,
};
use crate::views::{
    self, AddMember, ClusterView, Deployed, Drained, EventView, FleetRolloutView, MemberAdded,
    MemberRemoved, MemberView, ModuleView, NodeRemoved, NodeView, PlanRequest, PlanView,
    QuarantineLifted, QuarantineView, Removed, ReplicaView, RevisionView, RollbackRequest,
    StartRollout, Undrained, Updated, WhyStep,
};

/// Longest a deploy waits for depmgr to say whether its package exists.
const PACKAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The admin API's routes and their OpenAPI description, from the same
/// annotations (`#[utoipa::path]` on each handler): a route cannot be
/// served without being described, nor described without being served.
pub fn api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(cluster))
        .routes(routes!(replicas))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(nodes))
        .routes(routes!(remove_node))
        .routes(routes!(drain))
        .routes(routes!(undrain))
        .routes(routes!(modules, deploy))
        .routes(routes!(module, update, remove))
        .routes(routes!(why))
        .routes(routes!(super::logs::logs))
        .routes(routes!(what_if))
        .routes(routes!(snapshot))
        .routes(routes!(rollback))
        .routes(routes!(reset))
        .routes(routes!(history))
        .routes(routes!(quarantined))
        .routes(routes!(lift_quarantine))
        .routes(routes!(rollouts, start_rollout))
        .routes(routes!(rollout))
        .routes(routes!(rollout_action))
        .routes(routes!(events))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Supervisor cluster admin API",
        description = "The admin API of the supervisor cluster (docs/reference.md). Any replica answers: writes and linearizable reads are forwarded to the leader. Authentication: an operator certificate (TLS) or `Authorization: Bearer <admin token>`."
    ),
    // Served beside the admin routes (not forwarded: every replica
    // streams its own applied state), described here.
    paths(super::events::stream),
    components(schemas(ErrorBody)),
    tags(
        (name = "cluster", description = "the Raft cluster and its membership"),
        (name = "nodes", description = "nodes and their agents"),
        (name = "modules", description = "modules: deploy, view, remove"),
        (name = "versions", description = "updates, rollbacks, fleet rollouts, quarantined packages"),
        (name = "events", description = "the record of every decision"),
    )
)]
struct ApiDoc;

/// An error answer (every 4xx and 5xx).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// What went wrong, naming the field or the reason.
    error: String,
}

/// The OpenAPI document of the admin API (`GET /v1/openapi.json`),
/// encoded once.
pub fn openapi_json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let (_, doc) = api().split_for_parts();
        doc.to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// The admin routes, behind forwarding, authorization and the body limit.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    let (router, _) = api().split_for_parts();
    router
        .layer(middleware::from_fn_with_state(
            app.clone(),
            forward_to_leader,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), auth::admin))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body))
}

/// Query parameters of the reads.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", responses((status = 200, description = "the Raft cluster as this replica sees it", body = ClusterView)))]
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

/// How long `GET /v1/cluster/replicas` waits for each member's `/ready`.
const REPLICA_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /v1/cluster/replicas`: every member of the membership this replica
/// knows, as its own `/ready` answers (asked in parallel, with this
/// replica's identity, at most [`REPLICA_PROBE_TIMEOUT`] each).
#[utoipa::path(get, path = "/v1/cluster/replicas", tag = "cluster", responses((status = 200, description = "every member as its own /ready answered", body = [ReplicaView])))]
async fn replicas(State(app): State<Arc<App>>) -> Json<Vec<ReplicaView>> {
    let voters = app.voters();
    let probes = app.member_addrs().into_iter().map(|(id, addr)| {
        let app = app.clone();
        let voter = voters.contains(&id);
        async move {
            let url = format!("{}://{addr}/ready", app.scheme());
            let answer =
                tokio::time::timeout(REPLICA_PROBE_TIMEOUT, app.http.get(&url).send()).await;
            let mut view = ReplicaView {
                id,
                addr,
                voter,
                ready: false,
                state: None,
                term: None,
                applied: None,
                reason: None,
            };
            let resp = match answer {
                Err(_) => {
                    view.reason = Some(format!("no answer within {REPLICA_PROBE_TIMEOUT:?}"));
                    return view;
                }
                Ok(Err(e)) => {
                    view.reason = Some(admin_api::client::error_chain(&e));
                    return view;
                }
                Ok(Ok(r)) => r,
            };
            view.ready = resp.status().is_success();
            let body =
                tokio::time::timeout(REPLICA_PROBE_TIMEOUT, resp.json::<serde_json::Value>())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
            view.state = body["state"].as_str().map(str::to_string);
            view.term = body["term"].as_u64();
            view.applied = body["applied"].as_u64();
            view.reason = body["reason"].as_str().map(str::to_string);
            view
        }
    });
    Json(futures::future::join_all(probes).await)
}

#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster", request_body = AddMember, responses((status = 200, description = "added as a voter", body = MemberAdded), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn add_member(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Json<MemberAdded>> {
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
    Ok(Json(MemberAdded {
        id: req.id,
        addr: req.addr,
        voter: true,
    }))
}

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster", params(("id" = u64, Path, description = "the supervisor id")), responses((status = 200, description = "removed", body = MemberRemoved), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn remove_member(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberRemoved>> {
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
    Ok(Json(MemberRemoved { removed: id }))
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(ReadOpts), responses((status = 200, description = "every node", body = [NodeView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn nodes(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<NodeView>>> {
    read_barrier(&app, &opts).await?;
    // The leases as this replica sees them, when it leads.
    let leases: std::collections::BTreeMap<String, u64> = match app.leader() {
        Some(leader) => {
            let lease_ms = app
                .state
                .read(|s| crate::plan::grantable_lease_ms(app.config.timing(), s.lease));
            let now = leader.now_ms();
            let observed = leader.observed.lock().expect("observed lock poisoned");
            observed
                .nodes
                .iter()
                .filter(|(_, o)| o.heard)
                .map(|(n, o)| {
                    let silent = now.saturating_sub(o.last_seen_ms);
                    (n.clone(), lease_ms.saturating_sub(silent))
                })
                .collect()
        }
        None => Default::default(),
    };
    Ok(Json(app.state.read(|s| {
        s.nodes
            .iter()
            .map(|(id, n)| {
                let mut v = views::node(s, id, n);
                v.lease_left_ms = leases.get(id).copied();
                v
            })
            .collect()
    })))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "nodes", params(("id" = String, Path, description = "the node")), responses((status = 200, description = "draining", body = Drained), (status = 404, description = "unknown node", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn drain(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Drained>> {
    let index = commit_one(&app, Transition::Drain(Drain { node: id.clone() })).await?;
    Ok(Json(Drained {
        node: id,
        status: "draining".into(),
        index,
    }))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "nodes", params(("id" = String, Path, description = "the node")), responses((status = 200, description = "the node takes modules again", body = Undrained), (status = 404, description = "unknown node", body = ErrorBody), (status = 409, description = "not draining", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
/// `POST /v1/nodes/{id}/undrain`: the node takes modules again (409 when
/// it is not draining).
async fn undrain(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Undrained>> {
    let index = commit_one(&app, Transition::Undrain(Undrain { node: id.clone() })).await?;
    let status = app.state.read(|s| {
        s.nodes
            .get(&id)
            .map_or_else(String::new, |n| views::node(s, &id, n).status)
    });
    Ok(Json(Undrained {
        node: id,
        status,
        index,
    }))
}

#[utoipa::path(delete, path = "/v1/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "the node")), responses((status = 200, description = "forgotten; its modules wait to be placed again", body = NodeRemoved), (status = 404, description = "unknown node", body = ErrorBody), (status = 409, description = "the node is not down", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
/// `DELETE /v1/nodes/{id}`: forgets a down node (409 naming its status
/// otherwise). Modules placed there wait to be placed again.
async fn remove_node(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeRemoved>> {
    let index = commit_one(
        &app,
        Transition::RemoveNode(RemoveNode { node: id.clone() }),
    )
    .await?;
    // What the removal unplaced, as its event recorded it.
    let unplaced = app.state.read(|s| {
        s.events
            .iter()
            .rev()
            .find(|e| e.log_index == index && e.node.as_deref() == Some(id.as_str()))
            .and_then(|e| e.detail.get("modules"))
            .map_or_else(Vec::new, |m| m.split(',').map(str::to_string).collect())
    });
    Ok(Json(NodeRemoved {
        node: id,
        removed: true,
        index,
        unplaced,
    }))
}

#[utoipa::path(post, path = "/v1/modules/{name}/reset", tag = "modules", params(("name" = String, Path, description = "the module")), responses((status = 200, description = "cleared; placed again", body = views::Reset), (status = 404, description = "unknown module", body = ErrorBody), (status = 409, description = "not failed, or its version is quarantined", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
/// `POST /v1/modules/{name}/reset`: clears a failed module (409 naming its
/// state otherwise); the planner places it again.
async fn reset(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<views::Reset>> {
    let index = commit_one(
        &app,
        Transition::Reset(Reset {
            module: name.clone(),
        }),
    )
    .await?;
    let state = app.state.read(|s| {
        s.modules
            .get(&name)
            .map_or_else(String::new, |m| m.state.as_str().to_string())
    });
    Ok(Json(views::Reset { name, state, index }))
}

#[utoipa::path(get, path = "/v1/modules", tag = "modules", params(ReadOpts), responses((status = 200, description = "every module, by name", body = [ModuleView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn modules(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<ModuleView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(|s| {
        s.modules
            .iter()
            .map(|(n, m)| views::module(s, n, m))
            .collect()
    })))
}

#[utoipa::path(get, path = "/v1/modules/{name}", tag = "modules", params(("name" = String, Path, description = "the module"), ReadOpts), responses((status = 200, description = "the module", body = ModuleView), (status = 404, description = "unknown module", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn module(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<ModuleView>> {
    read_barrier(&app, &opts).await?;
    app.state
        .read(|s| s.modules.get(&name).map(|m| views::module(s, &name, m)))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown module {name:?}")))
}

/// `GET /v1/modules/{name}/why`: the module's causal chain, newest first
/// (see `crate::state::Why`), each event with its cause and in words.
#[utoipa::path(get, path = "/v1/modules/{name}/why", tag = "modules", params(("name" = String, Path, description = "the module"), ReadOpts), responses((status = 200, description = "the events that put the module where it is, newest first", body = [WhyStep]), (status = 404, description = "unknown module", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn why(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<WhyStep>>> {
    read_barrier(&app, &opts).await?;
    app.state
        .read(|s| {
            s.modules.contains_key(&name).then(|| {
                s.why
                    .chain(&name)
                    .iter()
                    .map(|e| WhyStep {
                        event: views::event(e),
                        text: e.explain(),
                    })
                    .collect()
            })
        })
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown module {name:?}")))
}

/// `POST /v1/plan`: what the planner would do after an action (drain or
/// lose a node, deploy or update a module), run on a copy of the state at
/// the leader (whose heartbeat observations it uses); nothing is
/// committed. See `crate::plan::what_if`.
#[utoipa::path(post, path = "/v1/plan", tag = "modules", request_body = PlanRequest, responses((status = 200, description = "the prediction", body = PlanView), (status = 404, description = "unknown node, module or package", body = ErrorBody), (status = 409, description = "the action would be refused (already draining, already down, ...)", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn what_if(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Json<PlanView>> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let request: PlanRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad(format!(
            "plan request: {e} (expected {{\"action\": \"drain\"|\"lose\", \"node\": ...}} or {{\"action\": \"deploy\"|\"update\", \"spec\": {{...}}}})"
        ))
    })?;
    if let PlanRequest::Deploy { spec } | PlanRequest::Update { spec } = &request {
        spec.validate()
            .map_err(|e| ApiError::bad(format!("module spec: {e}")))?;
        check_package_exists(&app, spec).await?;
    }
    let leader = app
        .leader()
        .ok_or_else(|| ApiError::unavailable("leadership is changing; retry shortly"))?;
    // The leader has applied everything before its term once it plans.
    read_barrier(&app, &ReadOpts::default()).await?;
    let now = leader.now_ms();
    let timing = app.config.timing();
    let observed = leader
        .observed
        .lock()
        .expect("observed lock poisoned")
        .clone();
    let view = app
        .state
        .read(|s| crate::plan::what_if(s, &observed, now, timing, &request))?;
    Ok(Json(view))
}

/// `GET /v1/snapshot`: a backup of the replicated state (see
/// `crate::backup`), taken at the leader after a read barrier, so every
/// write acknowledged before the request is in it.
#[utoipa::path(get, path = "/v1/snapshot", tag = "cluster", responses((status = 200, description = "the backup file (binary: the state with its log index, term and SHA-256; see docs/operations.md)", content_type = "application/octet-stream", body = Vec<u8>), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn snapshot(State(app): State<Arc<App>>) -> ApiResult<Response> {
    read_barrier(&app, &ReadOpts::default()).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let backup = crate::backup::take(&app.state, now)?;
    let bytes = backup
        .to_bytes()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let name = format!(
        "attachment; filename=\"supcluster-{}-{}.snap\"",
        backup.cluster_id, backup.index
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (
                header::HeaderName::from_static("x-snapshot-index"),
                backup.index.to_string(),
            ),
            (
                header::HeaderName::from_static("x-snapshot-sha256"),
                backup.sha256.clone(),
            ),
        ],
        bytes,
    )
        .into_response())
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

#[utoipa::path(post, path = "/v1/modules", tag = "modules", request_body(content = Object, description = "a module spec (JSON, or TOML with Content-Type application/toml)"), responses((status = 201, description = "deployed", body = Deployed), (status = 404, description = "the package is not in depmgr", body = ErrorBody), (status = 409, description = "the name is taken, or the state would grow past its limit", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn deploy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let spec = parse_spec(&headers, &body)?;
    let adds = app.state.read(|s| {
        let spec = Arc::new(spec.clone());
        let record = ModuleRecord::pending(&spec, s.last_index + 1, 0);
        let revisions = state::Versions::first(&spec, 0);
        state::module_bytes(&spec.name, &record, Some(&revisions))
    });
    check_state_room(&app, &spec.name, adds)?;
    check_package_exists(&app, &spec).await?;
    let name = spec.name.clone();
    let epoch = commit_one(&app, Transition::Deploy(Deploy { spec })).await?;
    Ok((StatusCode::CREATED, Json(Deployed { name, epoch })).into_response())
}

/// Refuses (409) a deploy whose module record would grow the encoded
/// replicated state past `--max-state-bytes`, before it is proposed. The
/// state's size is kept by `apply` ([`crate::state::StateSize`]), so this
/// costs one encoding of the new record. Checked against the applied
/// state: deploys proposed at the same moment may each pass and together
/// overshoot by their own sizes (a few KiB each); the cap leaves room.
fn check_state_room(app: &App, module: &str, adds: u64) -> ApiResult<()> {
    let limit = app.config.max_state_bytes;
    let size = app.state.read(|s| s.size().total());
    if size.saturating_add(adds) > limit {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "module {module:?} ({adds} more bytes encoded) would grow the replicated state from {size} bytes past the limit of {limit} bytes (--max-state-bytes); remove modules first"
            ),
        ));
    }
    Ok(())
}

/// Refuses a deploy whose package depmgr does not know; when depmgr cannot
/// be reached (or answers anything else), the deploy is accepted and the
/// package retrieval is retried later by the leader. A package depmgr
/// confirmed recently is not asked again ([`App::packages`], see
/// [`super::package_cache`]); an unknown one is asked every time.
async fn check_package_exists(app: &App, spec: &ModuleSpec) -> ApiResult<()> {
    check_package_known(app, &spec.package, &format!("deploying {}", spec.name)).await
}

/// Refuses (404) a package version depmgr does not know; accepts it when
/// depmgr cannot answer (`doing` says what for, in the warning).
async fn check_package_known(app: &App, package: &PackageRef, doing: &str) -> ApiResult<()> {
    use super::package_cache::Lookup;
    let (name, version) = (&package.name, &package.version);
    let ask = || async {
        match tokio::time::timeout(PACKAGE_CHECK_TIMEOUT, app.depmgr.show(name, version)).await {
            Ok(Ok(_)) => Lookup::Exists,
            Ok(Err(depmgr::Error::Http { status: 404, .. })) => Lookup::Missing,
            Ok(Err(e)) => Lookup::NoAnswer(e.to_string()),
            Err(_) => Lookup::NoAnswer(format!("no answer within {PACKAGE_CHECK_TIMEOUT:?}")),
        }
    };
    match app.packages.check(package, ask).await {
        Lookup::Missing => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "package: {package} is not in depmgr ({}): push it first with `supctl package push <dir>`",
                app.depmgr.base_url()
            ),
        )),
        Lookup::Exists => Ok(()),
        Lookup::NoAnswer(why) => {
            tracing::warn!(
                "depmgr could not check the package while {doing} ({why}): accepted anyway"
            );
            Ok(())
        }
    }
}

/// `PUT /v1/modules/{name}`: a rollout to the new spec (a new revision).
#[utoipa::path(put, path = "/v1/modules/{name}", tag = "versions", params(("name" = String, Path, description = "the module")), request_body(content = Object, description = "the full new module spec"), responses((status = 200, description = "a rollout to the new revision started", body = Updated), (status = 404, description = "unknown module or package", body = ErrorBody), (status = 409, description = "a rollout runs, the module is stopped, or the version is quarantined", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn update(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Updated>> {
    let spec = parse_spec(&headers, &body)?;
    if spec.name != name {
        return Err(ApiError::bad(format!(
            "module spec: name {:?} is not the module {name:?} of the path (a module cannot be renamed)",
            spec.name
        )));
    }
    // A new revision adds the spec to the module's history.
    let adds = (proto::encoded_len(&spec) + 32) as u64;
    check_state_room(&app, &name, adds)?;
    check_package_exists(&app, &spec).await?;
    let epoch = commit_one(&app, Transition::Update(Update { spec })).await?;
    Ok(Json(Updated {
        revision: current_revision(&app, &name),
        name,
        epoch,
    }))
}

/// `POST /v1/modules/{name}/rollback`: a rollout to an earlier revision.
#[utoipa::path(post, path = "/v1/modules/{name}/rollback", tag = "versions", params(("name" = String, Path, description = "the module")), request_body(content = RollbackRequest, description = "empty, or the revision to go back to"), responses((status = 200, description = "a rollout to the earlier revision started", body = Updated), (status = 404, description = "unknown module", body = ErrorBody), (status = 409, description = "nothing to roll back to, or a rollout runs", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Updated>> {
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("rollback: {e}")))?
    };
    let epoch = commit_one(
        &app,
        Transition::Rollback(Rollback {
            module: name.clone(),
            revision: req.revision,
        }),
    )
    .await?;
    Ok(Json(Updated {
        revision: current_revision(&app, &name),
        name,
        epoch,
    }))
}

/// The current revision of `name` in this replica's applied state (the
/// leader's, just after a commit).
fn current_revision(app: &App, name: &str) -> u32 {
    app.state
        .read(|s| s.versions_of(name).map_or(1, |v| v.revision))
}

#[utoipa::path(get, path = "/v1/modules/{name}/history", tag = "versions", params(("name" = String, Path, description = "the module"), ReadOpts), responses((status = 200, description = "the kept revisions, oldest first", body = [RevisionView]), (status = 404, description = "unknown module", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn history(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<RevisionView>>> {
    read_barrier(&app, &opts).await?;
    app.state
        .read(|s| views::history(s, &name))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown module {name:?}")))
}

#[utoipa::path(get, path = "/v1/packages/quarantined", tag = "versions", params(ReadOpts), responses((status = 200, description = "the quarantined package versions", body = [QuarantineView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn quarantined(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<QuarantineView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(views::quarantined)))
}

#[utoipa::path(delete, path = "/v1/packages/quarantined/{name}/{version}", tag = "versions", params(("name" = String, Path, description = "the package"), ("version" = String, Path, description = "its version")), responses((status = 200, description = "lifted", body = QuarantineLifted), (status = 404, description = "not quarantined", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn lift_quarantine(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<QuarantineLifted>> {
    let package = proto::manifest::PackageRef::new(name, version);
    let index = commit_one(
        &app,
        Transition::LiftQuarantine(LiftQuarantine {
            package: package.clone(),
        }),
    )
    .await?;
    Ok(Json(QuarantineLifted {
        package,
        lifted: true,
        index,
    }))
}

#[utoipa::path(delete, path = "/v1/modules/{name}", tag = "modules", params(("name" = String, Path, description = "the module")), responses((status = 200, description = "removed", body = Removed), (status = 404, description = "unknown module", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
/// `DELETE /v1/modules/{name}`: the module is removed at once when no copy
/// of it can run, and otherwise shows `stopped` until its copy is known
/// stopped (see `crate::state::StopModule`).
async fn remove(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult<Json<Removed>> {
    let index = commit_one(
        &app,
        Transition::StopModule(StopModule {
            module: name.clone(),
        }),
    )
    .await?;
    // Read on the replica that committed it (the leader): at `index` or
    // later. A later `Remove` may already have taken it away.
    let waiting = app.state.read(|s| {
        s.modules
            .get(&name)
            .map(|_| state::copies_maybe_running(s, &name))
    });
    let (state, waiting_for) = match waiting {
        Some(nodes) => ("stopped", nodes),
        None => ("removed", vec![]),
    };
    Ok(Json(Removed {
        name,
        removed: true,
        index,
        state: state.to_string(),
        waiting_for,
    }))
}

/// `POST /v1/rollouts`: a fleet rollout of one package version to every
/// module using the package (see `crate::state::FleetRollout`).
#[utoipa::path(post, path = "/v1/rollouts", tag = "versions", request_body = StartRollout, responses((status = 200, description = "the fleet rollout, started", body = FleetRolloutView), (status = 404, description = "the version is not in depmgr", body = ErrorBody), (status = 409, description = "quarantined, or another rollout of the package is open", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn start_rollout(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> ApiResult<Json<FleetRolloutView>> {
    let req: StartRollout =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("rollout: {e}")))?;
    let package = PackageRef::new(req.package, req.version);
    package
        .validate()
        .map_err(|e| ApiError::bad(format!("rollout: {e}")))?;
    if req.max_parallel == 0 {
        return Err(ApiError::bad(
            "rollout: max_parallel must be at least 1 (the modules updated at a time)",
        ));
    }
    // Each module updated gets a revision with its spec.
    let adds = app.state.read(|s| {
        s.fleet_targets(&package)
            .iter()
            .filter_map(|m| s.modules.get(m))
            .map(|m| (proto::encoded_len(&m.spec) + 64) as u64)
            .sum::<u64>()
    });
    check_state_room(&app, &format!("rollout of {package}"), adds)?;
    check_package_known(&app, &package, &format!("starting a rollout of {package}")).await?;
    commit_one(
        &app,
        Transition::StartFleetRollout(StartFleetRollout {
            package: package.clone(),
            max_parallel: req.max_parallel,
            max_failures: req.max_failures,
        }),
    )
    .await?;
    app.state
        .read(|s| {
            s.fleet
                .rollouts
                .values()
                .rev()
                .find(|f| f.package == package)
                .map(views::fleet_rollout)
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the rollout was committed but is not in the applied state",
            )
        })
}

/// `GET /v1/rollouts`: the fleet rollouts kept, newest first.
#[utoipa::path(get, path = "/v1/rollouts", tag = "versions", params(ReadOpts), responses((status = 200, description = "the fleet rollouts kept, newest first", body = [FleetRolloutView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn rollouts(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<FleetRolloutView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(|s| {
        s.fleet
            .rollouts
            .values()
            .rev()
            .map(views::fleet_rollout)
            .collect()
    })))
}

fn fleet_view(app: &App, id: u64) -> ApiResult<FleetRolloutView> {
    app.state
        .read(|s| s.fleet.rollouts.get(&id).map(views::fleet_rollout))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown fleet rollout {id}")))
}

#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "versions", params(("id" = u64, Path, description = "the rollout"), ReadOpts), responses((status = 200, description = "the fleet rollout", body = FleetRolloutView), (status = 404, description = "unknown rollout", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn rollout(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<FleetRolloutView>> {
    read_barrier(&app, &opts).await?;
    fleet_view(&app, id).map(Json)
}

/// `POST /v1/rollouts/{id}/pause|resume|cancel`.
#[utoipa::path(post, path = "/v1/rollouts/{id}/{action}", tag = "versions", params(("id" = u64, Path, description = "the rollout"), ("action" = String, Path, description = "pause, resume or cancel")), responses((status = 200, description = "the fleet rollout after the action", body = FleetRolloutView), (status = 404, description = "unknown rollout or action", body = ErrorBody), (status = 409, description = "its state does not allow the action", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn rollout_action(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(u64, String)>,
) -> ApiResult<Json<FleetRolloutView>> {
    let action = match action.as_str() {
        "pause" => FleetAction::Pause,
        "resume" => FleetAction::Resume,
        "cancel" => FleetAction::Cancel,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no action {other:?} on a rollout (pause, resume or cancel)"),
            ));
        }
    };
    commit_one(
        &app,
        Transition::SetFleetRollout(SetFleetRollout { id, action }),
    )
    .await?;
    fleet_view(&app, id).map(Json)
}

/// `GET /v1/events`: see [`super::events::list`] (filters `module`,
/// `node`, `kind`; the newest `limit` without `after`).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ReadOpts, super::events::FilterQuery), responses((status = 200, description = "recorded events", body = [EventView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no credentials", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 503, description = "no leader or no quorum", body = ErrorBody)))]
async fn events(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
    Params(filter): Params<super::events::FilterQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
    let filter = filter.parse()?;
    read_barrier(&app, &opts).await?;
    let limit = opts.limit.unwrap_or(1000).min(10_000);
    Ok(Json(app.state.read(|s| {
        super::events::list(s, opts.after, limit, &filter)
    })))
}
