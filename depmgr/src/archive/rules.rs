//! The one rule set every archive passes, on upload ([`super::inspect`]) and
//! on install ([`super::unpack`]): entry paths, entry kinds, links and sizes.
//!
//! # Data flow
//!
//! [`walk`] reads a gzip'd tar stream once, front to back. For every entry
//! it applies the per-entry rules, records the entry in a [`Tree`] (the
//! archive's paths and kinds, never their contents) and hands it to the
//! caller's visitor, which reads or writes the entry's data. After the last
//! entry it reads the gzip stream to its end (so its checksum is verified)
//! and applies the rules that need the whole tree (links).
//!
//! # The rules (each error names the entry that breaks it)
//!
//! - Per entry, in stream order: at most [`Limits::max_entries`] entries;
//!   the path is relative, without `..`, UTF-8 ([`normalise`]); only
//!   regular files, directories, symlinks and hard links (devices, fifos
//!   and the like are refused); the entry's size fits in what is left of
//!   [`Limits::max_unpacked_bytes`]; no entry lies below a symlink or a
//!   file, and no path appears twice (a directory may repeat).
//! - Whole stream: at most [`Limits::max_unpacked_bytes`] decompressed bytes
//!   (counted while decompressing, so a gzip bomb stops at the limit); the
//!   gzip stream is intact to its end.
//! - Whole tree: every symlink resolves, following the archive's other
//!   symlinks like the kernel would ([`resolve_in_tree`]), to a path inside
//!   the package root; absolute symlinks and loops are refused. Every hard
//!   link names a regular file of the archive by a plain relative path.
//!
//! - Modes: the header's mode is never used as is ([`unpacked_mode`]). A
//!   file that any execute bit marks executable is written [`EXEC_MODE`]
//!   (0o755), any other file [`FILE_MODE`] (0o644), and every directory
//!   [`DIR_MODE`] (0o755): no setuid, setgid or sticky bit, nothing group-
//!   or world-writable, whatever the archive claims (a package runs as the
//!   agent's user; a world-writable file in it could be changed by any
//!   local user before it runs).
//!
//! # Invariant
//!
//! Whatever passes these rules, unpacked as the tree says, stays inside the
//! directory it is unpacked into: no path leaves it, and no link followed
//! from inside it leads out.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path};
use std::rc::Rc;

use tar::EntryType;

use super::Limits;
use crate::{Error, Result};

/// How many symlinks one path resolution may follow before it counts as a
/// loop (the Linux limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Mode of an unpacked file marked executable (any execute bit).
pub const EXEC_MODE: u32 = 0o755;
/// Mode of any other unpacked file.
pub const FILE_MODE: u32 = 0o644;
/// Mode of an unpacked directory.
pub const DIR_MODE: u32 = 0o755;

/// The mode a file is unpacked with, from its header's mode: [`EXEC_MODE`]
/// when any execute bit is set, [`FILE_MODE`] otherwise. Special bits
/// (setuid 0o4000, setgid 0o2000, sticky 0o1000) and group/world write
/// bits never survive.
pub fn unpacked_mode(header_mode: u32) -> u32 {
    if header_mode & 0o111 != 0 {
        EXEC_MODE
    } else {
        FILE_MODE
    }
}

/// An entry path as plain components (`["bin", "web"]`).
pub(crate) type EntryPath = Vec<String>;

/// What an archive entry is, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    /// A symlink and its target, as written in the archive.
    Symlink(String),
    /// A hard link and the (normalised) path of the file it names.
    HardLink(EntryPath),
}

impl Kind {
    fn noun(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink(_) => "symlink",
            Kind::HardLink(_) => "hard link",
        }
    }
}

/// Every path of an archive with its kind. Directories that no entry names
/// but that hold entries are in it too (as [`Kind::Dir`]).
#[derive(Debug, Default)]
pub(crate) struct Tree {
    paths: BTreeMap<EntryPath, Kind>,
}

impl Tree {
    pub(crate) fn get(&self, path: &[String]) -> Option<&Kind> {
        self.paths.get(path)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&EntryPath, &Kind)> {
        self.paths.iter()
    }

    /// Adds one entry, refusing one that lies below a symlink or a file, or
    /// whose path is taken (a directory may repeat).
    fn add(&mut self, path: EntryPath, kind: Kind) -> Result<()> {
        let shown = path.join("/");
        for depth in 1..path.len() {
            match self.paths.get(&path[..depth]) {
                None => {
                    self.paths.insert(path[..depth].to_vec(), Kind::Dir);
                }
                Some(Kind::Dir) => {}
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
        match self.paths.get(&path) {
            None => {
                self.paths.insert(path, kind);
                Ok(())
            }
            Some(Kind::Dir) if kind == Kind::Dir => Ok(()),
            Some(Kind::Dir) => match self.first_below(&path) {
                // An earlier entry made this path a directory.
                Some(below) => Err(Error::BadRequest(format!(
                    "archive entry {:?} lies below {} {shown:?}",
                    below.join("/"),
                    kind.noun()
                ))),
                None => Err(twice(&shown)),
            },
            Some(_) => Err(twice(&shown)),
        }
    }

    /// The first path strictly below `dir`, if any.
    fn first_below(&self, dir: &[String]) -> Option<&EntryPath> {
        self.paths
            .range(dir.to_vec()..)
            .map(|(p, _)| p)
            .find(|p| p.len() > dir.len())
            .filter(|p| p.starts_with(dir))
    }

    /// The rules over the whole tree: links may come before or after what
    /// they point at, so they are checked once every entry is known.
    fn check_links(&self) -> Result<()> {
        for (path, kind) in &self.paths {
            let shown = path.join("/");
            match kind {
                Kind::Symlink(target) => {
                    match resolve_in_tree(self, &path[..path.len() - 1], target) {
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
                    }
                }
                Kind::HardLink(target) => {
                    if self.paths.get(target) != Some(&Kind::File) {
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
}

fn twice(shown: &str) -> Error {
    Error::BadRequest(format!("archive entry {shown:?} appears twice"))
}

/// Splits an archive path into plain components: `./` is dropped; absolute
/// paths, `..` and names that are not UTF-8 are refused (the error completes
/// "archive entry X ...").
pub(crate) fn normalise(path: &Path) -> Result<EntryPath, String> {
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
pub(crate) enum Unresolvable {
    Escapes,
    Loop,
}

/// Resolves `target` (a symlink's target, or a relative path) from directory
/// `from`, following the tree's symlinks like the kernel would, without
/// leaving the root. The result is a path that need not exist.
pub(crate) fn resolve_in_tree(
    tree: &Tree,
    from: &[String],
    target: &str,
) -> Result<EntryPath, Unresolvable> {
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

// ----------------------------------------------------------------- walking

/// One entry that passed the per-entry rules, handed to a visitor.
pub(crate) struct Visit<'a, 'e, R: Read> {
    /// The normalised path (never empty: the root entry is not visited).
    pub path: &'a [String],
    pub kind: &'a Kind,
    /// The entry, to read a file's data from.
    pub entry: &'a mut tar::Entry<'e, R>,
    /// The mode to give a file: [`unpacked_mode`] of its header's mode.
    pub mode: u32,
    /// Turns an error while reading the entry's data into the right answer.
    pub broken: &'a dyn Fn(io::Error) -> Error,
}

/// What [`walk`] saw of an archive that passed every rule.
#[derive(Debug)]
pub(crate) struct Walked {
    pub tree: Tree,
    /// Entries, directories included (pax global headers are not).
    pub entries: usize,
    /// Size of the decompressed tar stream.
    pub unpacked_bytes: u64,
}

/// The decompressed stream, counted against a limit.
type Stream<R> = LimitedReader<flate2::bufread::GzDecoder<BufReader<R>>>;

/// Reads the gzip'd tar `input` once, applying every rule of the module doc,
/// and calls `visit` for every entry that passed the per-entry rules (in
/// stream order, the root directory excepted). Memory holds the tree, not
/// the contents.
pub(crate) fn walk<R: Read>(
    input: R,
    limits: &Limits,
    mut visit: impl FnMut(Visit<'_, '_, Stream<R>>) -> Result<()>,
) -> Result<Walked> {
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
    let left = Rc::new(Cell::new(limits.max_unpacked_bytes));
    let over_limit = Rc::new(Cell::new(false));
    let limited = LimitedReader {
        inner: flate2::bufread::GzDecoder::new(input),
        left: left.clone(),
        over_limit: over_limit.clone(),
    };
    let too_big = || {
        Error::BadRequest(format!(
            "the archive unpacks to more than {} bytes (the limit)",
            limits.max_unpacked_bytes
        ))
    };
    let broken = |e: io::Error| {
        if over_limit.get() {
            too_big()
        } else {
            Error::BadRequest(format!("the archive is not a valid .tar.gz: {e}"))
        }
    };

    let mut archive = tar::Archive::new(limited);
    let mut tree = Tree::default();
    let mut entries = 0usize;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue; // pax headers (git archive writes one): metadata only
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
            EntryType::Symlink => Kind::Symlink(link_target(&mut entry, &shown, "symlink")?),
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
        let size = entry.size();
        if size > left.get() {
            return Err(Error::BadRequest(format!(
                "archive entry {shown:?} holds {size} bytes: the archive unpacks to more than {} bytes (the limit)",
                limits.max_unpacked_bytes
            )));
        }
        if path.is_empty() {
            if kind == Kind::Dir {
                continue; // "./": the root itself
            }
            return Err(Error::BadRequest(format!(
                "archive entry {shown:?} has no name"
            )));
        }
        tree.add(path.clone(), kind.clone())?;
        let mode = unpacked_mode(entry.header().mode().unwrap_or(FILE_MODE));
        visit(Visit {
            path: &path,
            kind: &kind,
            entry: &mut entry,
            mode,
            broken: &broken,
        })?;
    }
    // Read to the end of the gzip stream so its checksum is verified.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(broken)?;
    let unpacked_bytes = limits.max_unpacked_bytes - left.get();
    tree.check_links()?;
    Ok(Walked {
        tree,
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

/// Passes bytes through up to a limit; reading past it is an error (and sets
/// the shared flag, so the caller can say why).
pub(crate) struct LimitedReader<R> {
    inner: R,
    left: Rc<Cell<u64>>,
    over_limit: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.left.get();
        if n as u64 > left {
            self.over_limit.set(true);
            return Err(io::Error::other("unpacked size limit exceeded"));
        }
        self.left.set(left - n as u64);
        Ok(n)
    }
}
