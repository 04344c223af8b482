//! A fake dependency manager on loopback, answering with depmgr's own
//! `depmgr::api` types so that it cannot drift from what depmgr's client
//! expects.
//!
//! It serves the three routes the supervisor and the agent use:
//! `GET /v1/packages/{name}/{version}` (the package's [`PackageInfo`]),
//! `GET /v1/packages/{name}/{version}/closure` (its artifacts) and
//! `GET /v1/archives/{digest}` (the archive bytes, counted). A test puts
//! [`BuiltPackage`]s in, or bytes under any digest (a tampered download).
//! [`FakeDepmgr::any_package`] makes it answer for every `name@version`
//! it does not hold with a package of that name (command `bin/run`, a
//! digest of `a`s), for supervisor tests whose agents are simulated and
//! never download. Unknown packages and archives are 404 with a JSON error.
//!
//! TLS: [`FakeDepmgr::start_tls`] serves `https://` only with the
//! certificate it is given (client certificates optional), and records
//! the client identity of every archive download
//! ([`FakeDepmgr::fetch_peers`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use depmgr::api::PackageInfo;
use proto::manifest::{ArtifactRef, Manifest};
use tls::{Identity, Peer, Tls};
use tokio_util::sync::CancellationToken;

use crate::package::BuiltPackage;

#[derive(Debug, Default)]
struct Store {
    /// (name, version) → metadata and closure.
    packages: BTreeMap<(String, String), (PackageInfo, Vec<ArtifactRef>)>,
    /// digest → archive bytes.
    archives: BTreeMap<String, Vec<u8>>,
    fetches: u32,
    /// The client identity of each download (`None`: anonymous).
    fetch_peers: Vec<Option<Identity>>,
    any_package: bool,
}

/// The fake depmgr; clones share it. Runs until [`FakeDepmgr::shutdown`].
#[derive(Clone)]
pub struct FakeDepmgr {
    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub url: String,
    store: Arc<Mutex<Store>>,
    stop: CancellationToken,
}

impl FakeDepmgr {
    /// Serves what is put in.
    pub async fn start() -> FakeDepmgr {
        Self::start_with(None).await
    }

    /// Serves what is put in over TLS only, holding `tls`'s certificate
    /// (a depmgr's, or an impostor's).
    pub async fn start_tls(tls: Arc<Tls>) -> FakeDepmgr {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<Arc<Tls>>) -> FakeDepmgr {
        let auth = tls.as_ref().map(|t| (t, tls::ClientAuth::Optional));
        let listener = tls::Bound::bind("127.0.0.1:0", auth, Default::default())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let me = FakeDepmgr {
            url: tls::client::base_url(tls.as_ref(), &addr.to_string()),
            store: Arc::new(Mutex::new(Store::default())),
            stop: CancellationToken::new(),
        };
        let app = Router::new()
            .route("/v1/packages/{name}/{version}", get(info))
            .route("/v1/packages/{name}/{version}/closure", get(closure))
            .route("/v1/archives/{digest}", get(archive))
            .with_state(me.clone());
        let shutdown = me.stop.clone();
        tokio::spawn(async move {
            let _ = listener.serve(app, shutdown.cancelled_owned()).await;
        });
        me
    }

    /// Serves, besides what is put in, every other `name@version` as a
    /// package of that name with command `bin/run` and a digest of `a`s.
    pub async fn any_package() -> FakeDepmgr {
        let me = Self::start().await;
        me.store.lock().expect("lock").any_package = true;
        me
    }

    /// As [`FakeDepmgr::any_package`], over TLS holding `tls`'s certificate.
    pub async fn any_package_tls(tls: Arc<Tls>) -> FakeDepmgr {
        let me = Self::start_tls(tls).await;
        me.store.lock().expect("lock").any_package = true;
        me
    }

    /// Serves `p`: its metadata, a closure of itself, its archive.
    pub fn put(&self, p: &BuiltPackage) {
        let info = PackageInfo {
            name: p.name.clone(),
            version: p.version.clone(),
            digest: p.digest.clone(),
            size: p.bytes.len() as u64,
            manifest: p.manifest.clone(),
            dependencies: p.manifest.dependencies.clone(),
            uploaded_at_ms: 0,
        };
        let mut store = self.store.lock().expect("lock");
        store.packages.insert(
            (p.name.clone(), p.version.clone()),
            (info, vec![p.artifact()]),
        );
        store.archives.insert(p.digest.clone(), p.bytes.clone());
    }

    /// Serves `bytes` as the archive with `digest`, whatever their real
    /// digest (a tampered download).
    pub fn put_bytes(&self, digest: &str, bytes: Vec<u8>) {
        self.store
            .lock()
            .expect("lock")
            .archives
            .insert(digest.into(), bytes);
    }

    /// How many archive downloads were asked for.
    pub fn fetches(&self) -> u32 {
        self.store.lock().expect("lock").fetches
    }

    /// The client identity of each archive download so far, in order.
    pub fn fetch_peers(&self) -> Vec<Option<Identity>> {
        self.store.lock().expect("lock").fetch_peers.clone()
    }

    /// Stops listening (open connections may linger until they close).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    fn lookup(&self, name: String, version: String) -> Option<(PackageInfo, Vec<ArtifactRef>)> {
        let store = self.store.lock().expect("lock");
        if let Some(found) = store.packages.get(&(name.clone(), version.clone())) {
            return Some(found.clone());
        }
        if !store.any_package {
            return None;
        }
        let manifest = Manifest::from_toml(&format!(
            "name = {name:?}\nversion = {version:?}\ncommand = \"bin/run\"\n"
        ))
        .expect("fake manifest");
        let digest = "a".repeat(64);
        let closure = vec![ArtifactRef {
            name: name.clone(),
            version: version.clone(),
            digest: digest.clone(),
        }];
        let info = PackageInfo {
            name,
            version,
            digest,
            size: 1,
            manifest,
            dependencies: Default::default(),
            uploaded_at_ms: 0,
        };
        Some((info, closure))
    }
}

/// A JSON answer, or 404 with depmgr's error body.
fn json_or_404<T: serde::Serialize>(found: Option<T>) -> Response {
    match found {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(proto::ErrorBody {
                error: "no such package".into(),
            }),
        )
            .into_response(),
    }
}

async fn info(State(s): State<FakeDepmgr>, Path(p): Path<(String, String)>) -> Response {
    json_or_404(s.lookup(p.0, p.1).map(|(info, _)| info))
}

async fn closure(State(s): State<FakeDepmgr>, Path(p): Path<(String, String)>) -> Response {
    json_or_404(s.lookup(p.0, p.1).map(|(_, closure)| closure))
}

async fn archive(
    State(s): State<FakeDepmgr>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(digest): Path<String>,
) -> Response {
    let mut store = s.store.lock().expect("lock");
    store.fetches += 1;
    store.fetch_peers.push(peer.identity);
    match store.archives.get(&digest) {
        Some(b) => b.clone().into_response(),
        None => json_or_404(None::<()>),
    }
}
