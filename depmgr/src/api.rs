//! The JSON answers of the dependency manager's HTTP API, shared by the
//! server and [`crate::client`]. Field names are part of the outside contract
//! (`CONTRACT.md`): fields may be added, never renamed or dropped.
//!
//! Errors are [`proto::ErrorBody`] (`{"error": "..."}`); a closure is a list
//! of [`proto::manifest::ArtifactRef`].

use std::collections::BTreeMap;

use proto::manifest::Manifest;
use serde::{Deserialize, Serialize};

/// Answer to `PUT /v1/packages/{name}/{version}`: 201 when stored now, 200
/// when the same bytes were already stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAnswer {
    pub name: String,
    pub version: String,
    /// sha256 of the archive, lower-case hex.
    pub digest: String,
    /// Archive size in bytes.
    pub size: u64,
}

/// One element of `GET /v1/packages`: a package and its stored versions,
/// sorted by semver precedence (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersions {
    pub name: String,
    pub versions: Vec<String>,
}

/// Answer to `GET /v1/packages/{name}/{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    /// sha256 of the archive, lower-case hex.
    pub digest: String,
    /// Archive size in bytes.
    pub size: u64,
    pub manifest: Manifest,
    /// The manifest's `[dependencies]` as declared: package name → exact
    /// version or semver requirement. The closure endpoint resolves them.
    pub dependencies: BTreeMap<String, String>,
    /// When the version was stored, milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
}
