//! Configuration packages built for tests, packed by depmgr's own packer.
//!
//! [`PackageBuilder`] writes `manifest.toml` and the given files (with their
//! modes) into a temporary directory and packs it with
//! `depmgr::archive::pack_dir`, so a test package is byte for byte what
//! `supctl package push` would upload. [`BuiltPackage`] carries the archive,
//! its sha256 and the parsed manifest, and names itself as an artifact.
//! [`manifest`] and [`sample`] are the small packages depmgr's tests push:
//! a `bin/run` command, declared dependencies and a payload.
//!
//! Archives no packer would write (`..`, absolute names, links out of the
//! tree) come from [`crate::raw_tar`].

use std::os::unix::fs::PermissionsExt;

use proto::manifest::{ArtifactRef, Manifest};

/// A package under construction.
pub struct PackageBuilder {
    name: String,
    version: String,
    manifest: String,
    files: Vec<(String, Vec<u8>, u32)>,
}

/// A built package: its archive and the references that name it.
#[derive(Debug, Clone)]
pub struct BuiltPackage {
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, lower-case hex.
    pub digest: String,
    pub manifest: Manifest,
}

impl BuiltPackage {
    /// A package made of archive bytes from elsewhere (a raw archive).
    pub fn from_bytes(
        name: &str,
        version: &str,
        manifest: Manifest,
        bytes: Vec<u8>,
    ) -> BuiltPackage {
        BuiltPackage {
            name: name.into(),
            version: version.into(),
            digest: depmgr::sha256_hex(&bytes),
            bytes,
            manifest,
        }
    }

    pub fn artifact(&self) -> ArtifactRef {
        ArtifactRef {
            name: self.name.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// `manifest.toml` text: the name and version lines, then `extra` as is.
pub fn manifest_text(name: &str, version: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nversion = \"{version}\"\n{extra}")
}

/// The manifest text of a package with a `bin/run` command and `deps`
/// (name, version requirement) as its `[dependencies]`.
pub fn manifest(name: &str, version: &str, deps: &[(&str, &str)]) -> String {
    let mut extra = "command = \"bin/run\"\n".to_string();
    if !deps.is_empty() {
        extra.push_str("\n[dependencies]\n");
        for (d, spec) in deps {
            extra.push_str(&format!("{d} = \"{spec}\"\n"));
        }
    }
    manifest_text(name, version, &extra)
}

/// The archive of a package with [`manifest`]`(name, version, deps)`, a
/// `bin/run` that sleeps, and `payload` as the file `payload`.
pub fn sample(name: &str, version: &str, deps: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    PackageBuilder::with_manifest(name, version, manifest(name, version, deps))
        .file("bin/run", "#!/bin/sh\nexec sleep 1000\n", 0o644)
        .file("payload", payload, 0o644)
        .build()
        .bytes
}

impl PackageBuilder {
    /// `manifest_extra` follows the name and version lines of
    /// `manifest.toml` (command, args, env, health, dependencies...).
    pub fn new(name: &str, version: &str, manifest_extra: &str) -> PackageBuilder {
        Self::with_manifest(name, version, manifest_text(name, version, manifest_extra))
    }

    /// With the whole `manifest.toml` text given.
    pub fn with_manifest(name: &str, version: &str, manifest: String) -> PackageBuilder {
        PackageBuilder {
            name: name.into(),
            version: version.into(),
            manifest,
            files: Vec::new(),
        }
    }

    /// A file at `path` (parents created) with permission bits `mode`.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.into(), contents.into(), mode));
        self
    }

    pub fn build(self) -> BuiltPackage {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("manifest.toml"), &self.manifest).expect("write manifest");
        for (path, data, mode) in &self.files {
            let file = dir.path().join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&file, data).expect("write file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        let bytes = depmgr::archive::pack_dir(dir.path()).expect("pack");
        let manifest = Manifest::from_toml(&self.manifest).expect("test manifest is valid");
        BuiltPackage::from_bytes(&self.name, &self.version, manifest, bytes)
    }
}
