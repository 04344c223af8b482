//! Retrieving configuration packages (claim 1: "retrieving a configuration
//! package associated with the failed software module from a dependency
//! manager node").
//!
//! The planner asks for a placement's package ([`Fetch`]); the leader
//! retrieves the manifest and the resolved dependency closure through
//! depmgr's own client ([`depmgr::client::Client::config_package`]) and
//! commits them as `PackageRetrieved`, so that the install directive is
//! derived from committed state only. One retrieval per placement is in
//! flight at a time; a failed one is retried with exponential backoff (up
//! to 5 s). This retry state is leader memory: a new leader starts afresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::manifest::ConfigPackage;

use super::Leader;
use crate::error::{Error, Result};
use crate::plan::Fetch;
use crate::state::{PackageRetrieved, Transition};

/// Longest backoff between two retrievals of one placement's package.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Retrieval state of one placement's package.
#[derive(Debug, Default)]
pub(super) struct FetchState {
    in_flight: bool,
    failures: u32,
    next_try: Option<Instant>,
}

/// Retrieves a module's configuration package from depmgr: the manifest
/// and the dependency closure in install order, the package itself last.
pub async fn retrieve_package(
    depmgr: &depmgr::client::Client,
    fetch: &Fetch,
) -> Result<ConfigPackage> {
    let (name, version) = (&fetch.package.name, &fetch.package.version);
    let package = depmgr.config_package(name, version).await?;
    match package.artifacts.last() {
        Some(own) if &own.name == name && &own.version == version => Ok(package),
        _ => Err(Error::BadClosure(fetch.package.to_string())),
    }
}

impl Leader {
    /// Starts retrieving a placement's configuration package, unless one is
    /// under way or failed recently.
    pub(super) fn maybe_fetch(self: &Arc<Self>, fetch: Fetch) {
        let key = (fetch.module.clone(), fetch.epoch);
        {
            let mut fetches = self.fetches.lock().expect("fetches lock poisoned");
            // Older placements of this module only: a range, not a walk
            // over every module's entry (a walk per placement made a
            // deploy cost grow with the number of modules).
            let older: Vec<(String, u64)> = fetches
                .range((fetch.module.clone(), 0)..(fetch.module.clone(), fetch.epoch))
                .map(|(k, _)| k.clone())
                .collect();
            for k in older {
                fetches.remove(&k);
            }
            let st = fetches.entry(key.clone()).or_default();
            if st.in_flight || st.next_try.is_some_and(|t| Instant::now() < t) {
                return;
            }
            st.in_flight = true;
        }
        let leader = self.clone();
        self.app.tasks.spawn(async move {
            let result = tokio::select! {
                _ = leader.cancel.cancelled() => return,
                r = retrieve_package(&leader.app.depmgr, &fetch) => r,
            };
            let committed = match result {
                Ok(package) => {
                    tracing::info!(module = %fetch.module, epoch = fetch.epoch, artifacts = package.artifacts.len(), "configuration package retrieved from depmgr");
                    let t = Transition::PackageRetrieved(PackageRetrieved {
                        module: fetch.module.clone(),
                        epoch: fetch.epoch,
                        package,
                    });
                    leader.app.propose(vec![t]).await.is_ok()
                }
                Err(e) => {
                    tracing::warn!(module = %fetch.module, epoch = fetch.epoch, error = %e, "retrieving the configuration package failed");
                    false
                }
            };
            let mut fetches = leader.fetches.lock().expect("fetches lock poisoned");
            if committed {
                // Applied: the placement holds its package and is not
                // asked for again; the map keeps only what is under way
                // or backing off.
                fetches.remove(&key);
            } else if let Some(st) = fetches.get_mut(&key) {
                st.in_flight = false;
                st.failures += 1;
                let backoff = Duration::from_millis(100 << st.failures.min(6)).min(MAX_BACKOFF);
                st.next_try = Some(Instant::now() + backoff);
            }
            drop(fetches);
            leader.passes.wake.notify_one();
        });
    }
}
