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
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use openraft::BasicNode;
use proto::spec::ModuleSpec;
use serde::Deserialize;

use super::auth;
use super::forward::forward_to_leader;
use super::guard::refuse_oversized;
use super::{ApiError, ApiResult, Params};
use crate::app::App;
use crate::state::{
    self, Deploy, Drain, LiftQuarantine, ModuleRecord, Outcome, Remove, Rollback, Transition,
    Update,
};
use crate::views::{
    self, AddMember, ClusterView, Deployed, Drained, EventView, MemberAdded, MemberRemoved,
    MemberView, ModuleView, NodeView, QuarantineLifted, QuarantineView, Removed, RevisionView,
    RollbackRequest, Updated,
};

/// Longest a deploy waits for depmgr to say whether its package exists.
const PACKAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The admin routes, behind forwarding, authorization and the body limit.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/modules", get(modules).post(deploy))
        .route("/v1/modules/{name}", get(module).put(update).delete(remove))
        .route("/v1/modules/{name}/rollback", post(rollback))
        .route("/v1/modules/{name}/history", get(history))
        .route("/v1/packages/quarantined", get(quarantined))
        .route(
            "/v1/packages/quarantined/{name}/{version}",
            delete(lift_quarantine),
        )
        .route("/v1/events", get(events))
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

async fn nodes(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<NodeView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(|s| {
        s.nodes
            .iter()
            .map(|(id, n)| views::node(s, id, n))
            .collect()
    })))
}

async fn drain(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Drained>> {
    let index = commit_one(&app, Transition::Drain(Drain { node: id.clone() })).await?;
    Ok(Json(Drained {
        node: id,
        status: "draining".into(),
        index,
    }))
}

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
    let adds = app.state.read(|s| {
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
    use super::package_cache::Lookup;
    let (name, version) = (&spec.package.name, &spec.package.version);
    let ask = || async {
        match tokio::time::timeout(PACKAGE_CHECK_TIMEOUT, app.depmgr.show(name, version)).await {
            Ok(Ok(_)) => Lookup::Exists,
            Ok(Err(depmgr::Error::Http { status: 404, .. })) => Lookup::Missing,
            Ok(Err(e)) => Lookup::NoAnswer(e.to_string()),
            Err(_) => Lookup::NoAnswer(format!("no answer within {PACKAGE_CHECK_TIMEOUT:?}")),
        }
    };
    match app.packages.check(&spec.package, ask).await {
        Lookup::Missing => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "package: {} is not in depmgr ({}): push it first with `supctl package push <dir>`",
                spec.package,
                app.depmgr.base_url()
            ),
        )),
        Lookup::Exists => Ok(()),
        Lookup::NoAnswer(why) => {
            tracing::warn!(
                "depmgr could not check the package while deploying {} ({why}): accepted anyway",
                spec.name
            );
            Ok(())
        }
    }
}

/// `PUT /v1/modules/{name}`: a rollout to the new spec (a new revision).
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

async fn quarantined(
    State(app): State<Arc<App>>,
    Params(opts): Params<ReadOpts>,
) -> ApiResult<Json<Vec<QuarantineView>>> {
    read_barrier(&app, &opts).await?;
    Ok(Json(app.state.read(views::quarantined)))
}

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

async fn remove(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult<Json<Removed>> {
    let index = commit_one(
        &app,
        Transition::Remove(Remove {
            module: name.clone(),
        }),
    )
    .await?;
    Ok(Json(Removed {
        name,
        removed: true,
        index,
    }))
}

/// `GET /v1/events`: see [`super::events::list`] (filters `module`,
/// `node`, `kind`; the newest `limit` without `after`).
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
