//! Unpacking an archive into a directory ([`unpack`]), for the node manager's
//! install: streamed from a reader (an archive file), checked entry by entry
//! with the same rules as an upload ([`super::rules`]).
//!
//! # Data flow
//!
//! Entries are written, as they stream in, into a staging directory beside
//! the destination (`.<name>.unpacking-<pid>-<n>`): directories are created
//! and files written with `O_EXCL`; symlinks and hard links are only
//! recorded. Once the last entry is read and the whole tree passed the link
//! rules, the links are created and the staging directory is renamed to the
//! destination.
//!
//! # Invariants
//!
//! - Nothing is written outside the staging directory: entry paths are
//!   plain relative paths, and no symlink exists on disk while any file is
//!   written (links are created last, after every rule held), so no write
//!   can go through one.
//! - The destination appears complete or not at all: on any error (a rule
//!   broken, a corrupt stream, a full disk) the staging directory is removed
//!   and the destination was never created.
//! - Memory holds the entry list and one 64 KiB buffer, whatever the
//!   archive's size; [`Limits`] bound the decompressed bytes and entries.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Limits;
use super::rules::{self, EntryPath, Kind};
use crate::{Error, Result};

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Entries in the archive (directories included).
    pub entries: usize,
    /// Size of the decompressed tar stream.
    pub unpacked_bytes: u64,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Unpacks the gzip'd tar `input` into `dest`, which must not exist yet (its
/// parent is created when missing). Refuses, naming the entry, an archive
/// that breaks any rule of [`super::rules`]; then `dest` is not created and
/// nothing is left behind. Blocking.
pub fn unpack(input: impl Read, dest: &Path, limits: &Limits) -> Result<Unpacked> {
    let shown = dest.display();
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            return Err(Error::io(
                format!("cannot unpack into {shown}"),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot unpack into {shown}"), e)),
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into());
    fs::create_dir_all(parent)
        .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    let staging = Staging::create(parent.join(format!(
        ".{name}.unpacking-{}-{}",
        std::process::id(),
        STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
    )))?;
    let root = staging.path.as_path();

    let mut links: Vec<(EntryPath, Kind)> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let walked = rules::walk(input, limits, |v| match v.kind {
        Kind::Dir => make_dirs(root, v.path),
        Kind::File => {
            make_dirs(root, &v.path[..v.path.len() - 1])?;
            let target = join(root, v.path);
            let shown = v.path.join("/");
            let write_err =
                |e: io::Error| Error::io(format!("archive entry {shown:?}: cannot write"), e);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(write_err)?;
            loop {
                let n = v.entry.read(&mut buf).map_err(v.broken)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n]).map_err(write_err)?;
            }
            // `v.mode` is already masked by the rules (`unpacked_mode`).
            file.set_permissions(fs::Permissions::from_mode(v.mode))
                .map_err(write_err)
        }
        Kind::Symlink(_) | Kind::HardLink(_) => {
            make_dirs(root, &v.path[..v.path.len() - 1])?;
            links.push((v.path.to_vec(), v.kind.clone()));
            Ok(())
        }
    })?;

    // Every rule held for the whole tree: hard links (to files written
    // above), then symlinks.
    links.sort_by_key(|(_, k)| matches!(k, Kind::Symlink(_)));
    for (path, kind) in &links {
        let at = join(root, path);
        let made = match kind {
            Kind::HardLink(target) => fs::hard_link(join(root, target), &at),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &at),
            Kind::Dir | Kind::File => Ok(()),
        };
        made.map_err(|e| {
            Error::io(
                format!("archive entry {:?}: cannot create the link", path.join("/")),
                e,
            )
        })?;
    }
    fs::rename(&staging.path, dest).map_err(|e| {
        Error::io(
            format!("cannot rename {} to {shown}", staging.path.display()),
            e,
        )
    })?;
    staging.committed();
    Ok(Unpacked {
        entries: walked.entries,
        unpacked_bytes: walked.unpacked_bytes,
    })
}

fn join(root: &Path, path: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(path);
    p
}

/// Creates `root/path...` one directory at a time; every existing component
/// must be a real directory (never a link: the rules make sure of it, this
/// checks it again).
fn make_dirs(root: &Path, path: &[String]) -> Result<()> {
    let mut at = root.to_path_buf();
    for (depth, part) in path.iter().enumerate() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(Error::BadRequest(format!(
                    "archive entry {:?} is not a directory, but entries lie below it",
                    path[..=depth].join("/")
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // DIR_MODE whatever the umask: never group/world writable.
                fs::DirBuilder::new()
                    .mode(rules::DIR_MODE)
                    .create(&at)
                    .and_then(|()| {
                        fs::set_permissions(&at, fs::Permissions::from_mode(rules::DIR_MODE))
                    })
                    .map_err(|e| {
                        Error::io(
                            format!(
                                "archive entry {:?}: cannot create",
                                path[..=depth].join("/")
                            ),
                            e,
                        )
                    })?
            }
            Err(e) => return Err(Error::io(format!("cannot stat {}", at.display()), e)),
        }
    }
    Ok(())
}

/// The staging directory; removed on drop unless [`Staging::committed`].
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    fn create(path: PathBuf) -> Result<Staging> {
        // Renamed to the destination: DIR_MODE like every unpacked directory.
        fs::DirBuilder::new()
            .mode(rules::DIR_MODE)
            .create(&path)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(rules::DIR_MODE)))
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        Ok(Staging { path, keep: false })
    }

    fn committed(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
