//! Configuration packages: the `manifest.toml` at the root of every package
//! archive, the references that name a package, and the resolved package
//! (manifest + dependency closure) that the supervisor sends to a failover
//! node's agent.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::{Error, names};

/// `name@version` of a configuration package, as a module spec names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRef {
    pub name: String,
    /// An exact semver version.
    pub version: String,
}

impl PackageRef {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        PackageRef {
            name: name.into(),
            version: version.into(),
        }
    }

    /// Checks the name and that the version is an exact semver version.
    pub fn validate(&self) -> Result<(), Error> {
        names::check("package name", &self.name).map_err(Error::InvalidManifest)?;
        semver::Version::parse(&self.version).map_err(|e| {
            Error::InvalidManifest(format!(
                "package version {:?} is not a semver version: {e}",
                self.version
            ))
        })?;
        Ok(())
    }
}

impl std::fmt::Display for PackageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// The `manifest.toml` of a configuration package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Program to run: relative to `MODULE_DIR`, or absolute. Empty for a
    /// package that is only a dependency (files, no process).
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Package name → exact version (`1.0.0`) or semver requirement (`^1.2`).
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub health: Option<HealthCheck>,
}

/// An optional health probe: exactly one of `tcp`, `http`, `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `host:port` that must accept a TCP connection.
    #[serde(default)]
    pub tcp: Option<String>,
    /// URL that must answer 2xx.
    #[serde(default)]
    pub http: Option<String>,
    /// Command (run in `MODULE_DIR`) that must exit 0.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    #[serde(default = "HealthCheck::default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "HealthCheck::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed probes before the module counts as failed.
    #[serde(default = "HealthCheck::default_failure_threshold")]
    pub failure_threshold: u32,
}

impl HealthCheck {
    fn default_interval_ms() -> u64 {
        1000
    }
    fn default_timeout_ms() -> u64 {
        1000
    }
    fn default_failure_threshold() -> u32 {
        3
    }
}

/// A manifest dependency's version: exact, or a semver requirement resolved
/// to the highest stored version that matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Exact(semver::Version),
    Req(semver::VersionReq),
}

impl VersionSpec {
    /// `1.2.3` is exact (not semver's implicit `^1.2.3`); anything else must
    /// be a requirement such as `^1.2`, `~1`, `>=1, <2`.
    pub fn parse(s: &str) -> Result<VersionSpec, String> {
        if let Ok(v) = semver::Version::parse(s.trim()) {
            return Ok(VersionSpec::Exact(v));
        }
        semver::VersionReq::parse(s)
            .map(VersionSpec::Req)
            .map_err(|e| format!("{s:?} is neither a version nor a semver requirement: {e}"))
    }

    pub fn matches(&self, v: &semver::Version) -> bool {
        match self {
            VersionSpec::Exact(e) => e == v,
            VersionSpec::Req(r) => r.matches(v),
        }
    }
}

impl Manifest {
    /// Parses and validates `manifest.toml` text.
    pub fn from_toml(text: &str) -> Result<Manifest, Error> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| Error::InvalidManifest(format!("manifest.toml: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// The package this manifest describes.
    pub fn package_ref(&self) -> PackageRef {
        PackageRef::new(&self.name, &self.version)
    }

    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = Error::InvalidManifest;
        self.package_ref().validate()?;
        if !self.command.is_empty() {
            let p = Path::new(&self.command);
            if !p.is_absolute()
                && p.components()
                    .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(bad(format!(
                    "command {:?} must be absolute or a plain path inside the package",
                    self.command
                )));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(bad(format!(
                    "env name {key:?} is not a valid variable name"
                )));
            }
        }
        for (name, version) in &self.dependencies {
            names::check("dependency name", name).map_err(bad)?;
            if name == &self.name {
                return Err(bad(format!("package {name} depends on itself")));
            }
            VersionSpec::parse(version).map_err(|e| bad(format!("dependency {name}: {e}")))?;
        }
        if let Some(h) = &self.health {
            let kinds = [h.tcp.is_some(), h.http.is_some(), h.exec.is_some()]
                .iter()
                .filter(|&&k| k)
                .count();
            if kinds != 1 {
                return Err(bad(
                    "[health] needs exactly one of tcp, http or exec".to_string()
                ));
            }
            if matches!(&h.exec, Some(cmd) if cmd.is_empty()) {
                return Err(bad("[health] exec is an empty command".to_string()));
            }
            if h.interval_ms == 0 || h.timeout_ms == 0 || h.failure_threshold == 0 {
                return Err(bad(
                    "[health] interval_ms, timeout_ms and failure_threshold must be above 0"
                        .to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// One resolved package of a dependency closure: what to fetch and check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    pub version: String,
    /// sha256 of the archive, lower-case hex.
    pub digest: String,
}

/// A module's configuration package as the supervisor sends it to an agent:
/// the module's manifest and its dependency closure in install order
/// (dependencies first, the module's own package last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPackage {
    pub manifest: Manifest,
    pub artifacts: Vec<ArtifactRef>,
}

impl ConfigPackage {
    /// The module's own artifact (the last of the closure).
    pub fn own_artifact(&self) -> Option<&ArtifactRef> {
        self.artifacts.last()
    }
}

/// Checks that a string is a lower-case hex sha256 digest.
pub fn check_digest(digest: &str) -> Result<(), String> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(format!("{digest:?} is not a sha256 hex digest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_EXAMPLE: &str = r#"
name = "web"
version = "1.0.0"
command = "bin/web"
args = ["--port", "8080"]

[env]
GREETING = "hello"

[dependencies]
base = "1.0.0"

[health]
tcp = "127.0.0.1:8080"
"#;

    #[test]
    fn contract_manifest_parses() {
        let m = Manifest::from_toml(CONTRACT_EXAMPLE).expect("valid");
        assert_eq!(m.command, "bin/web");
        assert_eq!(m.dependencies["base"], "1.0.0");
        let h = m.health.expect("health");
        assert_eq!(h.tcp.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(h.failure_threshold, 3);
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let cases = [
            ("name = \"web\"\nversion = \"x\"", "version"),
            (
                "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"../x\"",
                "command",
            ),
            (
                "name = \"web\"\nversion = \"1.0.0\"\n[dependencies]\nbase = \"soon\"",
                "dependency base",
            ),
            (
                "name = \"web\"\nversion = \"1.0.0\"\n[health]\ntcp = \"a:1\"\nhttp = \"http://x\"",
                "exactly one",
            ),
            ("name = \"web\"\nversion = \"1.0.0\"\nfoo = 1", "foo"),
            ("version = \"1.0.0\"", "name"),
        ];
        for (text, needle) in cases {
            let err = Manifest::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn exact_versions_are_exact() {
        let v = |s| semver::Version::parse(s).expect("version");
        let exact = VersionSpec::parse("1.2.0").expect("parse");
        assert!(exact.matches(&v("1.2.0")));
        assert!(!exact.matches(&v("1.3.0")));
        let caret = VersionSpec::parse("^1.2").expect("parse");
        assert!(caret.matches(&v("1.9.1")));
        assert!(!caret.matches(&v("2.0.0")));
    }
}
