//! A small client of the admin API (what `supctl` and the tests use).
//!
//! It knows several replica addresses and moves on to the next when one
//! cannot be reached; any replica answers (followers forward to the leader).
//! Every request has a timeout.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stream::{EventFilter, EventStream, query_string};
use crate::views::{
    ClusterView, Deployed, Drained, EventView, ModuleView, NodeRemoved, NodeView, QuarantineLifted,
    QuarantineView, Removed, Reset, RevisionView, RollbackRequest, Undrained, Updated,
};

/// An admin API failure, with the server's message when it gave one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("no supervisor reachable ({0})")]
    Unreachable(String),
    #[error("bad answer from {url}: {message}")]
    BadAnswer { url: String, message: String },
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminClient {
    pub(crate) http: reqwest::Client,
    pub(crate) scheme: &'static str,
    pub(crate) addrs: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
}

impl AdminClient {
    /// `addrs`: `host:port` of one or more replicas.
    pub fn new(addrs: Vec<String>, token: Option<String>) -> Self {
        Self::with_tls(addrs, token, None)
    }

    /// With `tls`: `https://`, presenting this certificate (an operator's,
    /// or a supervisor's when a replica forwards) and accepting only
    /// supervisor certificates of the cluster CA.
    pub fn with_tls(
        addrs: Vec<String>,
        token: Option<String>,
        tls: Option<&std::sync::Arc<tls::Tls>>,
    ) -> Self {
        let http = tls::client::http_builder(tls, &[tls::Role::Supervisor])
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("building an HTTP client with static settings");
        AdminClient {
            http,
            scheme: tls::client::scheme(tls),
            addrs,
            token,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (url, bytes) = self.request_bytes(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url,
            message: e.to_string(),
        })
    }

    /// [`AdminClient::request`], answering the body's bytes (and the URL
    /// that answered) as they are.
    pub async fn request_bytes<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(String, bytes::Bytes), ClientError> {
        let mut unreachable = Vec::new();
        for addr in &self.addrs {
            let url = format!("{}://{addr}{path}", self.scheme);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let msg = error_chain(&e);
                    let hint = scheme_hint(self.scheme, &msg);
                    unreachable.push(format!("{addr}: {msg}{hint}"));
                    continue;
                }
            };
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| ClientError::BadAnswer {
                url: url.clone(),
                message: e.to_string(),
            })?;
            if !status.is_success() {
                let message = serde_json::from_slice::<proto::ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                if status == StatusCode::SERVICE_UNAVAILABLE && self.addrs.len() > 1 {
                    unreachable.push(format!("{addr}: {message}"));
                    continue;
                }
                return Err(ClientError::Api { status, message });
            }
            return Ok((url, bytes));
        }
        Err(ClientError::Unreachable(unreachable.join("; ")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<(), T>(Method::GET, path, None).await
    }

    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.get("/v1/cluster").await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get("/v1/nodes").await
    }

    pub async fn modules(&self) -> Result<Vec<ModuleView>, ClientError> {
        self.get("/v1/modules").await
    }

    pub async fn module(&self, name: &str) -> Result<ModuleView, ClientError> {
        self.get(&format!("/v1/modules/{name}")).await
    }

    pub async fn events(&self, after: u64) -> Result<Vec<EventView>, ClientError> {
        self.get(&format!("/v1/events?after={after}")).await
    }

    /// `GET /v1/events` with its filters: after `after`, the first
    /// `limit` matching events; without it, the newest `limit`.
    pub async fn events_where(
        &self,
        after: Option<u64>,
        limit: Option<usize>,
        filter: &EventFilter,
    ) -> Result<Vec<EventView>, ClientError> {
        let mut query = filter.pairs();
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.get(&format!("/v1/events{}", query_string(&query)))
            .await
    }

    /// Follows `GET /v1/events/stream` from after event `after`, on any
    /// replica, reconnecting to the next one with `Last-Event-ID` when a
    /// connection ends ([`EventStream`]).
    pub fn follow_events(&self, after: u64, filter: EventFilter) -> EventStream {
        EventStream::new(self.clone(), after, filter)
    }

    pub async fn deploy(&self, spec: &serde_json::Value) -> Result<Deployed, ClientError> {
        self.request(Method::POST, "/v1/modules", Some(spec)).await
    }

    pub async fn remove(&self, name: &str) -> Result<Removed, ClientError> {
        self.request::<(), _>(Method::DELETE, &format!("/v1/modules/{name}"), None)
            .await
    }

    pub async fn drain(&self, node: &str) -> Result<Drained, ClientError> {
        self.request::<(), _>(Method::POST, &format!("/v1/nodes/{node}/drain"), None)
            .await
    }

    /// `POST /v1/nodes/{node}/undrain`: the node takes modules again.
    pub async fn undrain(&self, node: &str) -> Result<Undrained, ClientError> {
        self.request::<(), _>(Method::POST, &format!("/v1/nodes/{node}/undrain"), None)
            .await
    }

    /// `DELETE /v1/nodes/{node}`: forget a down node.
    pub async fn remove_node(&self, node: &str) -> Result<NodeRemoved, ClientError> {
        self.request::<(), _>(Method::DELETE, &format!("/v1/nodes/{node}"), None)
            .await
    }

    /// `POST /v1/modules/{name}/reset`: clear a failed module.
    pub async fn reset(&self, name: &str) -> Result<Reset, ClientError> {
        self.request::<(), _>(Method::POST, &format!("/v1/modules/{name}/reset"), None)
            .await
    }

    /// `PUT /v1/modules/{name}`: a rollout to `spec`.
    pub async fn update(
        &self,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<Updated, ClientError> {
        self.request(Method::PUT, &format!("/v1/modules/{name}"), Some(spec))
            .await
    }

    /// `POST /v1/modules/{name}/rollback`: to `revision`, or the previous
    /// good one.
    pub async fn rollback(
        &self,
        name: &str,
        revision: Option<u32>,
    ) -> Result<Updated, ClientError> {
        self.request(
            Method::POST,
            &format!("/v1/modules/{name}/rollback"),
            Some(&RollbackRequest { revision }),
        )
        .await
    }

    pub async fn history(&self, name: &str) -> Result<Vec<RevisionView>, ClientError> {
        self.get(&format!("/v1/modules/{name}/history")).await
    }

    /// `GET /v1/modules/{name}/why`: the module's causal chain, newest
    /// first.
    pub async fn why(&self, name: &str) -> Result<Vec<crate::views::WhyStep>, ClientError> {
        self.get(&format!("/v1/modules/{name}/why")).await
    }

    /// `POST /v1/plan`: what the planner would do after `request` (a
    /// [`crate::views::PlanRequest`] as JSON); nothing is committed.
    pub async fn plan(
        &self,
        request: &serde_json::Value,
    ) -> Result<crate::views::PlanView, ClientError> {
        self.request(Method::POST, "/v1/plan", Some(request)).await
    }

    /// `GET /v1/snapshot`: a backup of the replicated state (the file's
    /// bytes; [`proto::backup::Backup::from_bytes`] reads them).
    pub async fn snapshot(&self) -> Result<bytes::Bytes, ClientError> {
        Ok(self
            .request_bytes::<()>(Method::GET, "/v1/snapshot", None)
            .await?
            .1)
    }

    pub async fn quarantined(&self) -> Result<Vec<QuarantineView>, ClientError> {
        self.get("/v1/packages/quarantined").await
    }

    /// `POST /v1/rollouts`: a fleet rollout of `package`@`version`.
    pub async fn start_rollout(
        &self,
        req: &crate::views::StartRollout,
    ) -> Result<crate::views::FleetRolloutView, ClientError> {
        self.request(Method::POST, "/v1/rollouts", Some(req)).await
    }

    pub async fn rollouts(&self) -> Result<Vec<crate::views::FleetRolloutView>, ClientError> {
        self.get("/v1/rollouts").await
    }

    pub async fn rollout(&self, id: u64) -> Result<crate::views::FleetRolloutView, ClientError> {
        self.get(&format!("/v1/rollouts/{id}")).await
    }

    /// `POST /v1/rollouts/{id}/{action}`: `pause`, `resume` or `cancel`.
    pub async fn rollout_action(
        &self,
        id: u64,
        action: &str,
    ) -> Result<crate::views::FleetRolloutView, ClientError> {
        self.request::<(), _>(Method::POST, &format!("/v1/rollouts/{id}/{action}"), None)
            .await
    }

    pub async fn lift_quarantine(
        &self,
        name: &str,
        version: &str,
    ) -> Result<QuarantineLifted, ClientError> {
        self.request::<(), _>(
            Method::DELETE,
            &format!("/v1/packages/quarantined/{name}/{version}"),
            None,
        )
        .await
    }
}

/// An error with its causes (reqwest's own message rarely says what
/// happened: a refused certificate is three levels down).
/// What to do when the server speaks another protocol than the client:
/// plaintext against a TLS port reads the TLS alert as a malformed HTTP
/// answer; TLS against a plaintext port gets no TLS record back.
fn scheme_hint(scheme: &str, msg: &str) -> &'static str {
    if scheme == "http" && msg.contains("invalid HTTP version") {
        " (the replica answered in TLS: give --tls-ca, --tls-cert and --tls-key, or set SUPCTL_TLS_CA, SUPCTL_TLS_CERT and SUPCTL_TLS_KEY)"
    } else if scheme == "https"
        && (msg.contains("InvalidContentType") || msg.contains("corrupt message"))
    {
        " (the replica does not speak TLS: leave out the --tls-* flags for a plaintext cluster)"
    } else {
        ""
    }
}

/// An error and its sources, `outer: inner: ...`, each once (reqwest
/// hides the cause, e.g. a refused connection, in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}
