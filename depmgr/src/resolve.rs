//! The dependency closure: which packages, resolved to exact versions, must
//! be installed to run a package, and in which order.
//!
//! [`closure`] is a pure function over a [`Catalog`] (what is stored): the
//! server passes its store, the tests an in-memory map. It walks the
//! dependency graph depth-first with an explicit stack, so the answer is
//! computed in bounded stack space whatever the depth, and a cycle is
//! detected (the package is on the current path) instead of followed.
//!
//! Rules:
//!
//! - An exact dependency version (`base = "1.0.0"`) names exactly that
//!   version; a semver requirement (`base = "^1.2"`) resolves to the highest
//!   stored version matching it (semver rules: pre-releases only when the
//!   requirement names one). The answer records the resolved version and its
//!   digest, so what an agent installs is exact.
//! - The order is a post-order: every package comes after all of its
//!   dependencies; the requested package is last. Dependencies of one
//!   package are visited in name order, so the answer is deterministic.
//! - A package reached twice with the same resolved version appears once.
//!   Two different versions of one package may both appear (each is
//!   installed in its own directory).
//! - A dependency that is not stored or that no stored version satisfies,
//!   and a cycle, are [`Error::Conflict`]s naming the package and the path
//!   that led to it. An unknown requested package is [`Error::NotFound`].

use std::collections::{BTreeMap, HashSet};

use proto::manifest::{ArtifactRef, VersionSpec};
use semver::Version;

use crate::{Error, Result};

/// A stored package as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// sha256 of the archive, lower-case hex.
    pub digest: String,
    /// Declared dependencies: name → exact version or semver requirement.
    pub dependencies: BTreeMap<String, String>,
}

/// What is stored, as far as resolution needs it.
pub trait Catalog {
    /// The stored versions of `name`, in any order (empty if none).
    fn versions(&self, name: &str) -> Result<Vec<Version>>;
    /// The stored package `name@version`, if any.
    fn package(&self, name: &str, version: &Version) -> Result<Option<Node>>;
}

/// An in-memory catalog: name → version → node. Handy for tests and tools.
impl Catalog for BTreeMap<String, BTreeMap<Version, Node>> {
    fn versions(&self, name: &str) -> Result<Vec<Version>> {
        Ok(self
            .get(name)
            .map(|vs| vs.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn package(&self, name: &str, version: &Version) -> Result<Option<Node>> {
        Ok(self.get(name).and_then(|vs| vs.get(version)).cloned())
    }
}

/// Resolves one declared dependency `dep = "spec"` to an exact stored
/// version. The inner error says why it cannot be resolved (without the path
/// that led here, which the caller adds).
pub fn resolve_one(
    catalog: &impl Catalog,
    dep: &str,
    spec: &str,
) -> Result<Result<Version, String>> {
    let parsed = match VersionSpec::parse(spec) {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("the version is invalid: {e}"))),
    };
    let mut stored = catalog.versions(dep)?;
    if stored.is_empty() {
        return Ok(Err(format!("package {dep} is not stored")));
    }
    if let Some(best) = stored.iter().filter(|v| parsed.matches(v)).max() {
        return Ok(Ok(best.clone()));
    }
    stored.sort();
    let list: Vec<String> = stored.iter().map(Version::to_string).collect();
    Ok(Err(format!(
        "no stored version of {dep} matches (stored: {})",
        list.join(", ")
    )))
}

/// One package being visited: its dependencies and how far we got.
struct Frame {
    name: String,
    version: Version,
    digest: String,
    deps: Vec<(String, String)>,
    next: usize,
}

impl Frame {
    fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

fn path_of(stack: &[Frame]) -> String {
    stack
        .iter()
        .map(Frame::label)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The dependency closure of `name@version` in install order (dependencies
/// first, the package itself last). See the module doc for the rules.
pub fn closure(catalog: &impl Catalog, name: &str, version: &Version) -> Result<Vec<ArtifactRef>> {
    let root = catalog
        .package(name, version)?
        .ok_or_else(|| Error::NotFound(format!("package {name}@{version} is not stored")))?;
    let frame = |name: &str, version: Version, node: Node| Frame {
        name: name.to_string(),
        version,
        digest: node.digest,
        deps: node.dependencies.into_iter().collect(),
        next: 0,
    };
    let mut stack = vec![frame(name, version.clone(), root)];
    let mut on_path: HashSet<(String, Version)> = HashSet::new();
    on_path.insert((name.to_string(), version.clone()));
    let mut done: HashSet<(String, Version)> = HashSet::new();
    let mut order = Vec::new();

    while let Some(top) = stack.last_mut() {
        if top.next == top.deps.len() {
            let finished = stack.pop().expect("the loop holds a frame");
            let key = (finished.name.clone(), finished.version.clone());
            on_path.remove(&key);
            done.insert(key);
            order.push(ArtifactRef {
                name: finished.name,
                version: finished.version.to_string(),
                digest: finished.digest,
            });
            continue;
        }
        let (dep, spec) = top.deps[top.next].clone();
        top.next += 1;
        let resolved = match resolve_one(catalog, &dep, &spec)? {
            Ok(v) => v,
            Err(why) => {
                return Err(Error::Conflict(format!(
                    "{} depends on {dep} {spec}, but {why}",
                    path_of(&stack)
                )));
            }
        };
        let key = (dep.clone(), resolved.clone());
        if done.contains(&key) {
            continue;
        }
        if on_path.contains(&key) {
            return Err(Error::Conflict(format!(
                "dependency cycle: {} -> {dep}@{resolved}",
                path_of(&stack)
            )));
        }
        // `versions` listed it, so it is stored; a concurrent writer can
        // only add versions, never remove them.
        let node = catalog.package(&dep, &resolved)?.ok_or_else(|| {
            Error::Conflict(format!(
                "{} depends on {dep}@{resolved}, which is not stored",
                path_of(&stack)
            ))
        })?;
        on_path.insert(key);
        stack.push(frame(&dep, resolved, node));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mem = BTreeMap<String, BTreeMap<Version, Node>>;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    fn add(cat: &mut Mem, name: &str, version: &str, deps: &[(&str, &str)]) {
        cat.entry(name.to_string()).or_default().insert(
            v(version),
            Node {
                digest: format!("{name}-{version}"),
                dependencies: deps
                    .iter()
                    .map(|(n, s)| (n.to_string(), s.to_string()))
                    .collect(),
            },
        );
    }

    fn names(order: &[ArtifactRef]) -> Vec<String> {
        order
            .iter()
            .map(|a| format!("{}@{}", a.name, a.version))
            .collect()
    }

    #[test]
    fn three_levels_dependencies_first() {
        let mut cat = Mem::new();
        add(
            &mut cat,
            "app",
            "1.0.0",
            &[("mid", "1.0.0"), ("log", "2.0.0")],
        );
        add(&mut cat, "mid", "1.0.0", &[("base", "1.0.0")]);
        add(&mut cat, "log", "2.0.0", &[("base", "1.0.0")]);
        add(&mut cat, "base", "1.0.0", &[]);
        let order = closure(&cat, "app", &v("1.0.0")).expect("closure");
        assert_eq!(
            names(&order),
            ["base@1.0.0", "log@2.0.0", "mid@1.0.0", "app@1.0.0"]
        );
        assert_eq!(order[0].digest, "base-1.0.0");
    }

    #[test]
    fn requirements_pick_the_highest_match() {
        let mut cat = Mem::new();
        add(&mut cat, "app", "1.0.0", &[("base", "^1.2")]);
        for ver in ["1.1.0", "1.2.0", "1.4.1", "2.0.0", "1.5.0-rc.1"] {
            add(&mut cat, "base", ver, &[]);
        }
        let order = closure(&cat, "app", &v("1.0.0")).expect("closure");
        assert_eq!(names(&order), ["base@1.4.1", "app@1.0.0"]);
    }

    #[test]
    fn exact_is_exact() {
        let mut cat = Mem::new();
        add(&mut cat, "app", "1.0.0", &[("base", "1.2.0")]);
        add(&mut cat, "base", "1.2.0", &[]);
        add(&mut cat, "base", "1.9.0", &[]);
        let order = closure(&cat, "app", &v("1.0.0")).expect("closure");
        assert_eq!(names(&order), ["base@1.2.0", "app@1.0.0"]);
    }

    #[test]
    fn missing_and_unmatched_dependencies_name_the_package() {
        let mut cat = Mem::new();
        add(&mut cat, "app", "1.0.0", &[("mid", "1.0.0")]);
        add(&mut cat, "mid", "1.0.0", &[("ghost", "^1")]);
        let err = closure(&cat, "app", &v("1.0.0")).expect_err("missing");
        assert!(
            matches!(&err, Error::Conflict(m)
            if m.contains("ghost") && m.contains("app@1.0.0 -> mid@1.0.0")),
            "{err}"
        );

        add(&mut cat, "ghost", "2.0.0", &[]);
        let err = closure(&cat, "app", &v("1.0.0")).expect_err("unmatched");
        assert!(
            matches!(&err, Error::Conflict(m)
            if m.contains("no stored version of ghost") && m.contains("2.0.0")),
            "{err}"
        );

        let err = closure(&cat, "nope", &v("1.0.0")).expect_err("unknown");
        assert!(
            matches!(&err, Error::NotFound(m) if m.contains("nope@1.0.0")),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_errors_not_hangs() {
        let mut cat = Mem::new();
        add(&mut cat, "a", "1.0.0", &[("b", "1.0.0")]);
        add(&mut cat, "b", "1.0.0", &[("c", "^1")]);
        add(&mut cat, "c", "1.0.0", &[("a", "1.0.0")]);
        let err = closure(&cat, "a", &v("1.0.0")).expect_err("cycle");
        assert!(
            matches!(&err, Error::Conflict(m)
            if m.contains("cycle") && m.contains("a@1.0.0 -> b@1.0.0 -> c@1.0.0 -> a@1.0.0")),
            "{err}"
        );
    }

    #[test]
    fn diamonds_appear_once_and_deep_chains_do_not_overflow() {
        let mut cat = Mem::new();
        add(&mut cat, "top", "1.0.0", &[("l", "1.0.0"), ("r", "1.0.0")]);
        add(&mut cat, "l", "1.0.0", &[("base", "1.0.0")]);
        add(&mut cat, "r", "1.0.0", &[("base", "1.0.0")]);
        add(&mut cat, "base", "1.0.0", &[]);
        let order = closure(&cat, "top", &v("1.0.0")).expect("closure");
        assert_eq!(
            names(&order),
            ["base@1.0.0", "l@1.0.0", "r@1.0.0", "top@1.0.0"]
        );

        let mut deep = Mem::new();
        let n = 50_000;
        for i in 0..n {
            let deps = if i + 1 < n {
                vec![(format!("p{}", i + 1), "1.0.0".to_string())]
            } else {
                vec![]
            };
            let deps: Vec<(&str, &str)> =
                deps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            add(&mut deep, &format!("p{i}"), "1.0.0", &deps);
        }
        let order = closure(&deep, "p0", &v("1.0.0")).expect("deep closure");
        assert_eq!(order.len(), n);
        assert_eq!(order[0].name, format!("p{}", n - 1));
        assert_eq!(order[n - 1].name, "p0");
    }
}
