//! Package archives: building one from a directory, and the rules an
//! uploaded one must pass.
//!
//! # Building ([`pack_dir`])
//!
//! The archive of a directory is a pure function of the directory's names,
//! contents, kinds (file, directory, symlink) and executable bits: entries are
//! sorted by path (bytewise), every mtime is [`FIXED_MTIME`], owners are
//! uid/gid 0 with no user or group name, modes are normalised to `0755`
//! (directories, executable files), `0644` (other files) or `0777`
//! (symlinks), and the gzip header carries no time or name. So the same
//! directory gives the same bytes, hence the same sha256 digest, on any
//! machine and at any time (for a given version of this crate and its
//! compressor).
//!
//! # Inspecting ([`inspect`])
//!
//! An upload is accepted only if all of these hold; the error names the
//! first rule broken and the entry that breaks it:
//!
//! - it is a gzip stream holding a tar archive, intact to the end (the
//!   gzip checksum is verified);
//! - `manifest.toml` is a regular file at the archive root and a valid
//!   [`Manifest`];
//! - no entry path is absolute or contains `..`, and no entry lies below a
//!   symlink or a file;
//! - every symlink resolves (following the archive's other symlinks) inside
//!   the package root; absolute symlinks are refused; every hard link names
//!   a regular file of the archive by a plain relative path;
//! - only regular files, directories, symlinks and hard links (devices,
//!   fifos and the like are refused);
//! - a relative `command` resolves to a regular file of the archive;
//! - at most [`Limits::max_entries`] entries and
//!   [`Limits::max_unpacked_bytes`] decompressed bytes (counted while
//!   decompressing, so a gzip bomb stops at the limit).
//!
//! The caller checks the manifest's name and version against the URL with
//! [`check_identity`].

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};
use std::rc::Rc;

use flate2::Compression;
use proto::manifest::Manifest;
use tar::{EntryType, Header};

use crate::{Error, Result};

/// Name of the manifest at the archive root.
pub const MANIFEST: &str = "manifest.toml";
/// Largest `manifest.toml` accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The mtime of every entry [`pack_dir`] writes (the Unix epoch).
pub const FIXED_MTIME: u64 = 0;
/// How many symlinks one path resolution may follow before it counts as a
/// loop (the Linux limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Size limits for an uploaded archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest archive (compressed bytes, as uploaded).
    pub max_archive_bytes: u64,
    /// Largest decompressed tar stream.
    pub max_unpacked_bytes: u64,
    /// Most entries in the archive.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_bytes: 256 << 20,
            max_unpacked_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

// ---------------------------------------------------------------- building

/// One thing found in the directory being packed.
enum Source {
    Dir,
    File {
        path: std::path::PathBuf,
        size: u64,
        executable: bool,
    },
    Symlink(std::path::PathBuf),
}

/// Builds the deterministic `.tar.gz` of `dir`, which must hold a
/// `manifest.toml` (checked to be a valid manifest). See the module doc for
/// what "deterministic" covers. The whole archive is held in memory.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>> {
    let text = fs::read_to_string(dir.join(MANIFEST))
        .map_err(|e| Error::io(format!("cannot read {}", dir.join(MANIFEST).display()), e))?;
    Manifest::from_toml(&text).map_err(|e| Error::BadRequest(format!("{}: {e}", dir.display())))?;
    pack_dir_to(dir, Vec::new())
}

/// Writes the deterministic `.tar.gz` of `dir` to `out` (no manifest check)
/// and returns `out`.
pub fn pack_dir_to<W: Write>(dir: &Path, out: W) -> Result<W> {
    let mut found = Vec::new();
    walk(dir, "", &mut found)?;
    found.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for (rel, source) in found {
        let mut header = Header::new_gnu();
        header.set_mtime(FIXED_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        let fail = |e: io::Error| Error::io(format!("cannot pack {rel}"), e);
        match source {
            Source::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, format!("{rel}/"), io::empty())
                    .map_err(fail)?;
            }
            Source::File {
                path,
                size,
                executable,
            } => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(if executable { 0o755 } else { 0o644 });
                header.set_size(size);
                let file = fs::File::open(&path).map_err(fail)?;
                // A file that changed size since the walk makes the archive
                // wrong; `take` + the size check below catch it.
                let mut counted = CountingReader {
                    inner: file.take(size),
                    count: 0,
                };
                tar.append_data(&mut header, &rel, &mut counted)
                    .map_err(fail)?;
                if counted.count != size {
                    return Err(Error::BadRequest(format!(
                        "{rel} changed while it was being packed"
                    )));
                }
            }
            Source::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, &rel, &target).map_err(fail)?;
            }
        }
    }
    let gz = tar
        .into_inner()
        .map_err(|e| Error::io("cannot finish the archive", e))?;
    gz.finish()
        .map_err(|e| Error::io("cannot finish the archive", e))
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, Source)>) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|n| {
            Error::BadRequest(format!("{}: file name {n:?} is not UTF-8", dir.display()))
        })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(&path, &rel, found)?;
            found.push((rel, Source::Dir));
        } else if kind.is_file() {
            found.push((
                rel,
                Source::File {
                    size: meta.len(),
                    executable: is_executable(&meta),
                    path,
                },
            ));
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)
                .map_err(|e| Error::io(format!("cannot read link {}", path.display()), e))?;
            found.push((rel, Source::Symlink(target)));
        } else {
            return Err(Error::BadRequest(format!(
                "cannot pack {}: not a file, directory or symlink",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

// -------------------------------------------------------------- inspecting

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

/// What an archive entry is, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(String),
    HardLink(Vec<String>),
}

/// Reads the whole gzip'd tar `input` and applies every rule of the module
/// doc. Reads at most `limits.max_unpacked_bytes` decompressed bytes; holds
/// only the entry list (not the contents) in memory.
pub fn inspect(input: impl Read, limits: &Limits) -> Result<Inspection> {
    let mut input = BufReader::with_capacity(64 << 10, input);
    let head = input
        .fill_buf()
        .map_err(|e| Error::io("cannot read the archive", e))?;
    if head.is_empty() {
        return Err(Error::BadRequest("the archive is empty".into()));
    }
    if !head.starts_with(&[0x1f, 0x8b]) {
        return Err(Error::BadRequest(
            "the archive is not gzip'd (a .tar.gz with manifest.toml at its root is expected)"
                .into(),
        ));
    }
    let over_limit = Rc::new(Cell::new(false));
    let limited = LimitedReader {
        inner: flate2::bufread::GzDecoder::new(input),
        left: limits.max_unpacked_bytes,
        over_limit: over_limit.clone(),
    };
    let broken = |e: io::Error| {
        if over_limit.get() {
            Error::BadRequest(format!(
                "the archive unpacks to more than {} bytes (the limit)",
                limits.max_unpacked_bytes
            ))
        } else {
            Error::BadRequest(format!("the archive is not a valid .tar.gz: {e}"))
        }
    };

    let mut archive = tar::Archive::new(limited);
    let mut tree: BTreeMap<Vec<String>, Kind> = BTreeMap::new();
    let mut manifest = None;
    let mut entries = 0usize;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            continue; // pax global header (git archive writes one): metadata only
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(Error::BadRequest(format!(
                "the archive has more than {} entries (the limit)",
                limits.max_entries
            )));
        }
        let raw = entry.path().map_err(broken)?.into_owned();
        let shown = raw.display().to_string();
        let path = normalise(&raw)
            .map_err(|why| Error::BadRequest(format!("archive entry {shown:?} {why}")))?;
        let kind = match kind {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => {
                let target = link_target(&mut entry, &shown, "symlink")?;
                Kind::Symlink(target)
            }
            EntryType::Link => {
                let target = link_target(&mut entry, &shown, "hard link")?;
                let target = normalise(Path::new(&target))
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "hard link {shown:?} points outside the package ({target:?})"
                        ))
                    })?;
                Kind::HardLink(target)
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "archive entry {shown:?} has unsupported type {other:?} \
                     (only files, directories, symlinks and hard links)"
                )));
            }
        };
        if path.is_empty() {
            if kind == Kind::Dir {
                continue; // "./": the root itself
            }
            return Err(Error::BadRequest(format!(
                "archive entry {shown:?} has no name"
            )));
        }
        if path.len() == 1 && path[0] == MANIFEST {
            if kind != Kind::File {
                return Err(Error::BadRequest(format!(
                    "{MANIFEST} must be a regular file"
                )));
            }
            manifest = Some(read_manifest(&mut entry).map_err(|e| match e {
                Error::Io { source, .. } => broken(source),
                other => other,
            })?);
        }
        match tree.get(&path) {
            Some(Kind::Dir) if kind == Kind::Dir => {}
            Some(_) => {
                return Err(Error::BadRequest(format!(
                    "archive entry {:?} appears twice",
                    path.join("/")
                )));
            }
            None => {
                tree.insert(path, kind);
            }
        }
    }
    // Read to the end of the gzip stream so its checksum is verified.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(broken)?;
    let unpacked_bytes = limits.max_unpacked_bytes - rest.left;

    let (manifest, manifest_text) = manifest.ok_or_else(|| {
        let elsewhere = tree
            .keys()
            .find(|p| p.last().is_some_and(|n| n == MANIFEST))
            .map(|p| format!(" (found {:?}; it must be at the root)", p.join("/")))
            .unwrap_or_default();
        Error::BadRequest(format!(
            "the archive has no {MANIFEST} at its root{elsewhere}"
        ))
    })?;
    check_tree(&tree)?;
    check_command(&tree, &manifest)?;
    Ok(Inspection {
        manifest,
        manifest_text,
        entries,
        unpacked_bytes,
    })
}

fn link_target<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str, what: &str) -> Result<String> {
    let target = entry
        .link_name()
        .map_err(|e| Error::BadRequest(format!("{what} {shown:?}: {e}")))?
        .ok_or_else(|| Error::BadRequest(format!("{what} {shown:?} has no target")))?;
    target
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::BadRequest(format!("{what} {shown:?}: target is not UTF-8")))
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

/// Splits an archive path into plain components: `./` is dropped; absolute
/// paths and `..` are refused (the error completes "archive entry X ...").
fn normalise(path: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(
                n.to_str()
                    .ok_or_else(|| "has a name that is not UTF-8".to_string())?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("escapes the package root (contains \"..\")".into());
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(
                    "is an absolute path; entries must be relative to the package root".into(),
                );
            }
        }
    }
    Ok(out)
}

/// Why a path cannot be resolved inside the tree.
enum Unresolvable {
    Escapes,
    Loop,
}

/// Resolves `target` (a symlink's target, or a relative path) from directory
/// `from`, following the tree's symlinks like the kernel would, without
/// leaving the root. The result is a path that need not exist.
fn resolve_in_tree(
    tree: &BTreeMap<Vec<String>, Kind>,
    from: &[String],
    target: &str,
) -> Result<Vec<String>, Unresolvable> {
    let mut resolved: Vec<String> = from.to_vec();
    let mut pending: VecDeque<String> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<String>, target: &str| {
        if Path::new(target).is_absolute() {
            return Err(Unresolvable::Escapes);
        }
        for part in target.split('/').rev() {
            pending.push_front(part.to_string());
        }
        Ok(())
    };
    push_front(&mut pending, target)?;
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if resolved.pop().is_none() {
                    return Err(Unresolvable::Escapes);
                }
            }
            _ => {
                resolved.push(part);
                if let Some(Kind::Symlink(next)) = tree.get(&resolved) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Unresolvable::Loop);
                    }
                    resolved.pop();
                    push_front(&mut pending, next)?;
                }
            }
        }
    }
    Ok(resolved)
}

/// The structural rules over the whole entry list (links may come before
/// or after what they point at, so this runs once everything is read).
fn check_tree(tree: &BTreeMap<Vec<String>, Kind>) -> Result<()> {
    for (path, kind) in tree {
        let shown = path.join("/");
        for depth in 1..path.len() {
            match tree.get(&path[..depth]) {
                None | Some(Kind::Dir) => {}
                Some(Kind::Symlink(_)) => {
                    return Err(Error::BadRequest(format!(
                        "archive entry {shown:?} lies below symlink {:?}",
                        path[..depth].join("/")
                    )));
                }
                Some(_) => {
                    return Err(Error::BadRequest(format!(
                        "archive entry {shown:?} lies below {:?}, which is not a directory",
                        path[..depth].join("/")
                    )));
                }
            }
        }
        match kind {
            Kind::Symlink(target) => match resolve_in_tree(tree, &path[..path.len() - 1], target) {
                Ok(_) => {}
                Err(Unresolvable::Escapes) => {
                    return Err(Error::BadRequest(format!(
                        "symlink {shown:?} points outside the package ({target:?})"
                    )));
                }
                Err(Unresolvable::Loop) => {
                    return Err(Error::BadRequest(format!(
                        "symlink {shown:?} is part of a symlink loop"
                    )));
                }
            },
            Kind::HardLink(target) => {
                if tree.get(target) != Some(&Kind::File) {
                    return Err(Error::BadRequest(format!(
                        "hard link {shown:?} points to {:?}, which is not a regular file of the archive",
                        target.join("/")
                    )));
                }
            }
            Kind::Dir | Kind::File => {}
        }
    }
    Ok(())
}

/// A relative command must be a regular file of the archive (possibly
/// reached through symlinks).
fn check_command(tree: &BTreeMap<Vec<String>, Kind>, manifest: &Manifest) -> Result<()> {
    let command = &manifest.command;
    if command.is_empty() || Path::new(command).is_absolute() {
        return Ok(());
    }
    let missing = || {
        Error::BadRequest(format!(
            "command {command:?} of manifest.toml is not a file in the archive"
        ))
    };
    let resolved = resolve_in_tree(tree, &[], command).map_err(|_| missing())?;
    match tree.get(&resolved) {
        Some(Kind::File | Kind::HardLink(_)) => Ok(()),
        _ => Err(missing()),
    }
}

/// Passes bytes through up to a limit; reading past it is an error (and sets
/// the shared flag, so the caller can say why).
struct LimitedReader<R> {
    inner: R,
    left: u64,
    over_limit: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.over_limit.set(true);
            return Err(io::Error::other("unpacked size limit exceeded"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_TEXT: &str = "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"\n";

    /// A tar.gz built entry by entry, writing names raw so that forbidden
    /// paths (which the tar crate refuses to write) can be tested.
    struct Raw {
        tar: tar::Builder<Vec<u8>>,
    }

    impl Raw {
        fn new() -> Raw {
            Raw {
                tar: tar::Builder::new(Vec::new()),
            }
        }

        fn entry(mut self, kind: EntryType, name: &str, link: &str, data: &[u8]) -> Raw {
            let mut h = Header::new_old();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            self.tar.append(&h, data).expect("append");
            self
        }

        fn file(self, name: &str, data: &[u8]) -> Raw {
            self.entry(EntryType::Regular, name, "", data)
        }

        fn gz(self) -> Vec<u8> {
            let tar = self.tar.into_inner().expect("tar");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&tar).expect("gz");
            gz.finish().expect("gz")
        }
    }

    fn ok_base() -> Raw {
        Raw::new()
            .file("manifest.toml", MANIFEST_TEXT.as_bytes())
            .entry(EntryType::Directory, "bin/", "", b"")
            .file("bin/web", b"#!/bin/sh\n")
    }

    fn check(bytes: &[u8]) -> Result<Inspection> {
        inspect(bytes, &Limits::default())
    }

    #[test]
    fn accepts_a_good_archive() {
        let got = check(&ok_base().gz()).expect("good");
        assert_eq!(got.manifest.name, "web");
        assert_eq!(got.entries, 3);
    }

    #[test]
    fn refuses_each_broken_rule_naming_it() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty"),
            ("not gzip", b"hello world".to_vec(), "not gzip"),
            (
                "gzip of garbage",
                {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
                    gz.write_all(&[7u8; 5000]).expect("gz");
                    gz.finish().expect("gz")
                },
                "not a valid .tar.gz",
            ),
            (
                "no manifest",
                Raw::new().file("bin/web", b"x").gz(),
                "no manifest.toml",
            ),
            (
                "nested manifest",
                Raw::new()
                    .file("web/manifest.toml", MANIFEST_TEXT.as_bytes())
                    .gz(),
                "it must be at the root",
            ),
            (
                "bad manifest",
                Raw::new().file("manifest.toml", b"name = 1").gz(),
                "invalid manifest",
            ),
            (
                "dotdot",
                ok_base().file("../evil", b"x").gz(),
                "escapes the package root",
            ),
            (
                "inner dotdot",
                ok_base().file("bin/../../evil", b"x").gz(),
                "escapes",
            ),
            (
                "absolute",
                ok_base().file("/etc/evil", b"x").gz(),
                "absolute",
            ),
            (
                "symlink out",
                ok_base()
                    .entry(EntryType::Symlink, "bin/x", "../../etc", b"")
                    .gz(),
                "points outside",
            ),
            (
                "absolute symlink",
                ok_base()
                    .entry(EntryType::Symlink, "x", "/etc/passwd", b"")
                    .gz(),
                "points outside",
            ),
            (
                "symlink chain out",
                ok_base()
                    .entry(EntryType::Symlink, "bin/up", "..", b"")
                    .entry(EntryType::Symlink, "bin/out", "up/..", b"")
                    .gz(),
                "points outside",
            ),
            (
                "below symlink",
                ok_base()
                    .entry(EntryType::Symlink, "lnk", "bin", b"")
                    .file("lnk/evil", b"x")
                    .gz(),
                "below symlink",
            ),
            (
                "hard link out",
                ok_base()
                    .entry(EntryType::Link, "h", "../etc/passwd", b"")
                    .gz(),
                "hard link",
            ),
            (
                "symlink loop",
                ok_base()
                    .entry(EntryType::Symlink, "a", "b", b"")
                    .entry(EntryType::Symlink, "b", "a", b"")
                    .gz(),
                "loop",
            ),
            (
                "fifo",
                ok_base().entry(EntryType::Fifo, "f", "", b"").gz(),
                "unsupported type",
            ),
            (
                "command missing",
                Raw::new()
                    .file("manifest.toml", MANIFEST_TEXT.as_bytes())
                    .gz(),
                "command \"bin/web\"",
            ),
            (
                "command is a dir",
                Raw::new()
                    .file("manifest.toml", MANIFEST_TEXT.as_bytes())
                    .entry(EntryType::Directory, "bin/web/", "", b"")
                    .gz(),
                "command",
            ),
            ("duplicate", ok_base().file("bin/web", b"y").gz(), "twice"),
        ];
        for (what, bytes, needle) in cases {
            let err = check(&bytes).expect_err(what);
            assert!(matches!(err, Error::BadRequest(_)), "{what}: {err:?}");
            assert!(err.to_string().contains(needle), "{what}: {err}");
        }
    }

    #[test]
    fn symlinks_inside_are_fine_and_the_command_may_use_them() {
        let text = "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"run\"\n";
        let bytes = Raw::new()
            .file("manifest.toml", text.as_bytes())
            .entry(EntryType::Directory, "app/", "", b"")
            .file("app/web", b"x")
            .entry(EntryType::Symlink, "run", "./app/../app/web", b"")
            .entry(EntryType::Symlink, "app/self", "..", b"")
            .entry(EntryType::Link, "app/web2", "app/web", b"")
            .gz();
        check(&bytes).expect("symlinks inside the root");
    }

    #[test]
    fn limits_stop_bombs() {
        let big = vec![0u8; 4 << 20];
        let bytes = ok_base().file("zeros", &big).gz();
        assert!(bytes.len() < 100 << 10, "compresses well");
        let limits = Limits {
            max_unpacked_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = inspect(&bytes[..], &limits).expect_err("bomb");
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = inspect(&ok_base().gz()[..], &limits).expect_err("entries");
        assert!(err.to_string().contains("more than 2 entries"), "{err}");
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_refused() {
        let bytes = ok_base().file("data", &[1u8; 100_000]).gz();
        let err = check(&bytes[..bytes.len() - 6]).expect_err("truncated");
        assert!(err.to_string().contains("not a valid"), "{err}");
        let mut bad = bytes.clone();
        let at = bad.len() - 5; // inside the CRC32/ISIZE trailer
        bad[at] ^= 0xff;
        let err = check(&bad).expect_err("corrupt");
        assert!(err.to_string().contains("not a valid"), "{err}");
    }

    #[test]
    fn identity_must_match() {
        let m = check(&ok_base().gz()).expect("good").manifest;
        let v = |s| semver::Version::parse(s).expect("v");
        check_identity(&m, "web", &v("1.0.0")).expect("same");
        assert!(check_identity(&m, "api", &v("1.0.0")).is_err());
        assert!(check_identity(&m, "web", &v("1.0.1")).is_err());
    }

    #[test]
    fn pack_dir_is_deterministic_and_accepted() {
        use std::os::unix::fs::PermissionsExt;
        let make = |dir: &Path| {
            fs::create_dir_all(dir.join("bin")).expect("mkdir");
            fs::create_dir_all(dir.join("empty")).expect("mkdir");
            fs::write(dir.join("manifest.toml"), MANIFEST_TEXT).expect("write");
            fs::write(dir.join("bin/web"), "#!/bin/sh\necho hi\n").expect("write");
            fs::set_permissions(dir.join("bin/web"), fs::Permissions::from_mode(0o700))
                .expect("chmod");
            fs::write(dir.join("a.txt"), "a").expect("write");
            std::os::unix::fs::symlink("bin/web", dir.join("run")).expect("symlink");
        };
        let one = tempfile::tempdir().expect("tmp");
        let two = tempfile::tempdir().expect("tmp");
        make(one.path());
        // Different creation order and mtimes, same content.
        fs::write(two.path().join("a.txt"), "a").expect("write");
        make(two.path());
        fs::File::options()
            .write(true)
            .open(two.path().join("a.txt"))
            .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH))
            .expect("touch");
        let a = pack_dir(one.path()).expect("pack");
        let b = pack_dir(two.path()).expect("pack");
        assert_eq!(crate::sha256_hex(&a), crate::sha256_hex(&b));
        let got = check(&a).expect("packed archives pass inspection");
        assert_eq!(got.entries, 6);

        // Entries in sorted order, with normalised metadata.
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let mut seen = Vec::new();
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            assert_eq!(h.mtime().expect("mtime"), FIXED_MTIME);
            assert_eq!(h.uid().expect("uid"), 0);
            seen.push((
                e.path().expect("path").display().to_string(),
                h.mode().expect("mode"),
            ));
        }
        assert_eq!(
            seen,
            [
                ("a.txt".to_string(), 0o644),
                ("bin/".to_string(), 0o755),
                ("bin/web".to_string(), 0o755),
                ("empty/".to_string(), 0o755),
                ("manifest.toml".to_string(), 0o644),
                ("run".to_string(), 0o777),
            ]
        );

        fs::remove_file(one.path().join("manifest.toml")).expect("rm");
        assert!(pack_dir(one.path()).is_err());
    }
}
