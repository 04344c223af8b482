//! Building an archive from a directory ([`pack_dir`]): deterministic bytes,
//! hence a stable digest.
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

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::Compression;
use proto::manifest::Manifest;
use tar::{EntryType, Header};

use super::{FIXED_MTIME, MANIFEST};
use crate::{Error, Result};
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
