//! The catalog: what is stored (`GET /v1/packages`, `.../{name}`,
//! `.../{name}/{version}`) and what must be installed, in which order
//! (`.../closure`, resolved by [`crate::resolve`]).

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};

use crate::api::{PackageInfo, PackageVersions};
use crate::store::PackageRecord;
use crate::{Error, Result, parse_name_version, resolve};

use super::{AppState, Shared};

pub(super) async fn list_packages(
    State(state): State<Shared>,
) -> Result<axum::Json<Vec<PackageVersions>>> {
    Ok(axum::Json(state.blocking(|s| s.list()).await?))
}

pub(super) async fn show_package(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<axum::Json<PackageVersions>> {
    proto::names::check("package name", &name).map_err(Error::BadRequest)?;
    let lookup = name.clone();
    let versions = state.blocking(move |s| s.versions(&lookup)).await?;
    if versions.is_empty() {
        return Err(Error::NotFound(format!("package {name} is not stored")));
    }
    Ok(axum::Json(PackageVersions {
        name,
        versions: versions.iter().map(ToString::to_string).collect(),
    }))
}

/// The record of `name@version`, or a 404 that says what is stored.
pub(super) async fn find(state: &AppState, name: &str, version: &str) -> Result<PackageRecord> {
    let v = parse_name_version(name, version)?;
    let name = name.to_string();
    state
        .blocking(move |s| {
            if let Some(r) = s.get(&name, &v)? {
                return Ok(r);
            }
            let stored = s.versions(&name)?;
            Err(Error::NotFound(if stored.is_empty() {
                format!("package {name} is not stored")
            } else {
                let list: Vec<String> = stored.iter().map(ToString::to_string).collect();
                format!(
                    "package {name} has no version {v} (stored: {})",
                    list.join(", ")
                )
            }))
        })
        .await
}

pub(super) async fn show_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<PackageInfo>> {
    let record = find(&state, &name, &version).await?;
    let manifest = record.manifest()?;
    Ok(axum::Json(PackageInfo {
        dependencies: manifest.dependencies.clone(),
        manifest,
        name: record.name,
        version: record.version,
        digest: record.digest,
        size: record.size,
        uploaded_at_ms: record.uploaded_at_ms,
    }))
}

pub(super) async fn get_closure(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Vec<proto::manifest::ArtifactRef>>> {
    state.metrics.closures.fetch_add(1, Ordering::Relaxed);
    let v = parse_name_version(&name, &version)?;
    let answer = state
        .blocking(move |s| resolve::closure(s, &name, &v))
        .await;
    if answer.is_err() {
        state.metrics.closure_errors.fetch_add(1, Ordering::Relaxed);
    }
    Ok(axum::Json(answer?))
}
