//! Inspecting an uploaded archive ([`inspect`]): the structural rules of
//! [`super::rules`] plus the package rules.
//!
//! An upload is accepted only if every structural rule holds and:
//!
//! - `manifest.toml` is a regular file at the archive root and a valid
//!   [`Manifest`] (at most [`MAX_MANIFEST_BYTES`]);
//! - a relative `command` resolves (following the archive's symlinks) to a
//!   regular file of the archive.
//!
//! The error names the first rule broken and the entry that breaks it. The
//! caller checks the manifest's name and version against the URL with
//! [`check_identity`].

use std::io::Read;
use std::path::Path;

use proto::manifest::Manifest;

use super::rules::{self, Kind, Tree};
use super::{Limits, MANIFEST, MAX_MANIFEST_BYTES};
use crate::{Error, Result};

/// What [`inspect`] learnt about an accepted archive.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub manifest: Manifest,
    /// `manifest.toml` as found in the archive.
    pub manifest_text: String,
    /// Number of entries (directories included).
    pub entries: usize,
    /// Size of the decompressed tar stream.
    pub unpacked_bytes: u64,
}

/// Checks that `manifest` names the package `name@version` of the URL.
pub fn check_identity(manifest: &Manifest, name: &str, version: &semver::Version) -> Result<()> {
    if manifest.name != name {
        return Err(Error::BadRequest(format!(
            "manifest.toml names package {:?}, but the upload is for {name:?}",
            manifest.name
        )));
    }
    let declared = semver::Version::parse(&manifest.version).map_err(|e| {
        Error::BadRequest(format!("manifest.toml version {:?}: {e}", manifest.version))
    })?;
    if &declared != version {
        return Err(Error::BadRequest(format!(
            "manifest.toml has version {}, but the upload is for version {version}",
            manifest.version
        )));
    }
    Ok(())
}

/// Reads the whole gzip'd tar `input` and applies every rule (see the module
/// doc). Reads at most `limits.max_unpacked_bytes` decompressed bytes; holds
/// only the entry list (not the contents) in memory.
pub fn inspect(input: impl Read, limits: &Limits) -> Result<Inspection> {
    let mut manifest = None;
    let walked = rules::walk(input, limits, |v| {
        if v.path.len() == 1 && v.path[0] == MANIFEST {
            if *v.kind != Kind::File {
                return Err(Error::BadRequest(format!(
                    "{MANIFEST} must be a regular file"
                )));
            }
            manifest = Some(read_manifest(v.entry).map_err(|e| match e {
                Error::Io { source, .. } => (v.broken)(source),
                other => other,
            })?);
        }
        Ok(())
    })?;
    let tree = walked.tree;
    let (manifest, manifest_text) = manifest.ok_or_else(|| {
        let elsewhere = tree
            .iter()
            .map(|(p, _)| p)
            .find(|p| p.last().is_some_and(|n| n == MANIFEST))
            .map(|p| format!(" (found {:?}; it must be at the root)", p.join("/")))
            .unwrap_or_default();
        Error::BadRequest(format!(
            "the archive has no {MANIFEST} at its root{elsewhere}"
        ))
    })?;
    check_command(&tree, &manifest)?;
    Ok(Inspection {
        manifest,
        manifest_text,
        entries: walked.entries,
        unpacked_bytes: walked.unpacked_bytes,
    })
}

fn read_manifest(entry: &mut impl Read) -> Result<(Manifest, String)> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(MANIFEST, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::BadRequest(format!(
            "{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::BadRequest(format!("{MANIFEST} is not UTF-8 text")))?;
    let manifest = Manifest::from_toml(&text).map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok((manifest, text))
}

/// A relative command must be a regular file of the archive (possibly
/// reached through symlinks).
fn check_command(tree: &Tree, manifest: &Manifest) -> Result<()> {
    let command = &manifest.command;
    if command.is_empty() || Path::new(command).is_absolute() {
        return Ok(());
    }
    let missing = || {
        Error::BadRequest(format!(
            "command {command:?} of manifest.toml is not a file in the archive"
        ))
    };
    let resolved = rules::resolve_in_tree(tree, &[], command).map_err(|_| missing())?;
    match tree.get(&resolved) {
        Some(Kind::File | Kind::HardLink(_)) => Ok(()),
        _ => Err(missing()),
    }
}
