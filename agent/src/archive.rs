//! Configuration package archives: fetch, verify, cache, unpack.
//!
//! ## Data flow
//! For each artifact of an install (dependencies first, the module's own
//! package last) [`Fetcher::archive`] returns the archive bytes whose sha256
//! equals the artifact's digest: from the cache (`cache/<digest>.tar.gz`,
//! re-verified on every read) or else from depmgr
//! (`GET {depmgr}/v1/packages/{name}/{version}/archive`, with a timeout).
//! A fetched archive is cached only after it verified, so the cache holds
//! nothing but good archives and a restore never needs depmgr.
//!
//! ## Unpacking invariants
//! [`unpack`] writes into a fresh directory and refuses the whole archive
//! (the caller removes the directory) when an entry would land outside it:
//! - a path with `..`, an absolute path, or a Windows prefix;
//! - a write through a symlink (every parent of an entry must be a real
//!   directory inside the target), or onto a path already unpacked;
//! - a symlink whose target is absolute, or that resolves outside the
//!   target (checked lexically per entry, then once more after the whole
//!   archive is out, resolving link chains hop by hop inside the target);
//! - a hard link whose source is not a regular file already unpacked here;
//! - device files, fifos and other special entries.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use proto::manifest::ArtifactRef;
use sha2::{Digest, Sha256};

use crate::state::{DataDir, write_atomically};

/// Largest archive the agent downloads or unpacks from one artifact.
pub const MAX_ARCHIVE_BYTES: usize = 1 << 30;

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Gets verified archives from the cache or from depmgr.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    dir: DataDir,
}

impl Fetcher {
    pub fn new(dir: DataDir, timeout: Duration) -> Result<Fetcher, crate::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| crate::Error::Internal(format!("http client: {e}")))?;
        Ok(Fetcher { client, dir })
    }

    /// True when the artifact is in the cache (not re-verified).
    pub fn is_cached(&self, a: &ArtifactRef) -> bool {
        proto::manifest::check_digest(&a.digest).is_ok()
            && self.dir.cached_archive(&a.digest).is_file()
    }

    /// The archive of `a`, verified against its digest. The error is the
    /// reason an install fails, ready for a report.
    pub async fn archive(&self, depmgr: &str, a: &ArtifactRef) -> Result<Vec<u8>, String> {
        let what = format!("artifact {}@{}", a.name, a.version);
        proto::manifest::check_digest(&a.digest).map_err(|e| format!("{what}: {e}"))?;
        proto::names::check("artifact name", &a.name).map_err(|e| format!("{what}: {e}"))?;
        let cached = self.dir.cached_archive(&a.digest);
        if let Ok(bytes) = tokio::fs::read(&cached).await {
            if sha256_hex(&bytes) == a.digest {
                return Ok(bytes);
            }
            tracing::warn!(path = %cached.display(), "cached archive is corrupt; fetching it again");
            let _ = tokio::fs::remove_file(&cached).await;
        }
        if depmgr.is_empty() {
            return Err(format!(
                "{what}: not in the cache and no depmgr to fetch it from"
            ));
        }
        let url = format!(
            "{}/v1/packages/{}/{}/archive",
            depmgr.trim_end_matches('/'),
            a.name,
            a.version
        );
        let resp = self.client.get(&url).send().await.map_err(|e| {
            format!(
                "{what}: fetching {url}: {}",
                crate::heartbeat::error_chain(&e)
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!(
                "{what}: {url} answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_ARCHIVE_BYTES as u64)
        {
            return Err(format!(
                "{what}: archive larger than {MAX_ARCHIVE_BYTES} bytes"
            ));
        }
        let bytes = resp.bytes().await.map_err(|e| {
            format!(
                "{what}: reading {url}: {}",
                crate::heartbeat::error_chain(&e)
            )
        })?;
        let got = sha256_hex(&bytes);
        if got != a.digest {
            return Err(format!(
                "{what}: digest mismatch: expected sha256 {}, got {got}",
                a.digest
            ));
        }
        let bytes = bytes.to_vec();
        let to_cache = bytes.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&cached, &to_cache))
            .await
            .map_err(|e| format!("{what}: cache write task: {e}"))?;
        if let Err(e) = written {
            // A cache failure does not fail the install; the next restore
            // fetches again.
            tracing::warn!(artifact = %what, "cannot cache archive: {e}");
        }
        Ok(bytes)
    }
}

/// Unpacks a `.tar.gz` into `dest` (which must not exist yet), refusing
/// entries that escape it (see the module doc). Blocking. On error, `dest`
/// may hold part of the archive; the caller removes it.
pub fn unpack(archive: &[u8], dest: &Path) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let root = fs::canonicalize(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut ar = tar::Archive::new(GzDecoder::new(archive).take(MAX_ARCHIVE_BYTES as u64 * 4));
    ar.set_preserve_permissions(false);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(false);
    let mut symlinks = Vec::new();
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("entry with a bad path: {e}"))?
            .into_owned();
        let rel = safe_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = root.join(&rel);
        let parent = rel.parent().unwrap_or(Path::new(""));
        real_dirs(&root, parent, true)?;
        let kind = entry.header().entry_type();
        let exists = fs::symlink_metadata(&target).ok();
        match kind {
            tar::EntryType::Directory => match exists {
                Some(m) if m.file_type().is_dir() => {}
                Some(_) => {
                    return Err(format!(
                        "entry {}: a file of that name exists",
                        raw.display()
                    ));
                }
                None => {
                    fs::create_dir(&target).map_err(|e| format!("entry {}: {e}", raw.display()))?
                }
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if exists.is_some() {
                    return Err(format!("entry {}: duplicate path", raw.display()));
                }
                entry
                    .unpack(&target)
                    .map_err(|e| format!("entry {}: {e}", raw.display()))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("entry {}: bad link: {e}", raw.display()))?
                    .ok_or_else(|| format!("entry {}: symlink without target", raw.display()))?
                    .into_owned();
                if !lexically_inside(parent, &link) {
                    return Err(format!(
                        "entry {}: symlink to {} points outside the package",
                        raw.display(),
                        link.display()
                    ));
                }
                if exists.is_some() {
                    return Err(format!("entry {}: duplicate path", raw.display()));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| format!("entry {}: {e}", raw.display()))?;
                symlinks.push(rel);
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("entry {}: bad link: {e}", raw.display()))?
                    .ok_or_else(|| format!("entry {}: hard link without source", raw.display()))?
                    .into_owned();
                let src_rel = safe_relative(&link)
                    .map_err(|e| format!("entry {}: hard link source: {e}", raw.display()))?;
                real_dirs(&root, src_rel.parent().unwrap_or(Path::new("")), false)?;
                let src = root.join(&src_rel);
                let is_file = fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file());
                if !is_file {
                    return Err(format!(
                        "entry {}: hard link to {}, which is not a file of the package",
                        raw.display(),
                        link.display()
                    ));
                }
                if exists.is_some() {
                    return Err(format!("entry {}: duplicate path", raw.display()));
                }
                fs::hard_link(&src, &target)
                    .map_err(|e| format!("entry {}: {e}", raw.display()))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(format!(
                    "entry {}: unsupported entry type {other:?}",
                    raw.display()
                ));
            }
        }
    }
    for link in symlinks {
        resolves_inside(&root, &link)?;
    }
    Ok(())
}

/// The entry path as plain relative components (`.` dropped); an error for
/// `..`, absolute paths and prefixes.
fn safe_relative(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("entry {} escapes the package (..)", p.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry {} is an absolute path", p.display()));
            }
        }
    }
    Ok(out)
}

/// Checks that every existing ancestor `root/rel...` is a real directory
/// (no symlink to write through); creates the missing ones when `create`.
fn real_dirs(root: &Path, rel: &Path, create: bool) -> Result<(), String> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory of the package (a link or a file)",
                    at.strip_prefix(root).unwrap_or(&at).display()
                ));
            }
            Err(_) if create => {
                fs::create_dir(&at).map_err(|e| format!("cannot create {}: {e}", at.display()))?
            }
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(())
}

/// True when `target`, read relative to the directory `parent` (relative to
/// the package root), stays inside the package root, lexically.
fn lexically_inside(parent: &Path, target: &Path) -> bool {
    let mut depth = parent.components().count();
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Resolves the symlink at `root/rel` hop by hop, confined to `root`; an
/// error when any hop leaves it.
fn resolves_inside(root: &Path, rel: &Path) -> Result<(), String> {
    const MAX_HOPS: usize = 40;
    let escape = || format!("symlink {} resolves outside the package", rel.display());
    let mut current: Vec<OsString> = rel
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let first = fs::read_link(root.join(rel)).map_err(|e| format!("{}: {e}", rel.display()))?;
    let owned =
        |p: &Path| -> Vec<OwnedComponent> { p.components().map(OwnedComponent::from).collect() };
    let mut queue: VecDeque<OwnedComponent> = owned(&first).into();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c {
            OwnedComponent::Cur => {}
            OwnedComponent::Parent => {
                if current.pop().is_none() {
                    return Err(escape());
                }
            }
            OwnedComponent::Other => return Err(escape()),
            OwnedComponent::Normal(n) => {
                let mut cand = root.to_path_buf();
                cand.extend(&current);
                cand.push(&n);
                match fs::symlink_metadata(&cand) {
                    Ok(m) if m.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(format!("symlink {} loops", rel.display()));
                        }
                        let t =
                            fs::read_link(&cand).map_err(|e| format!("{}: {e}", cand.display()))?;
                        for c in owned(&t).into_iter().rev() {
                            queue.push_front(c);
                        }
                    }
                    _ => current.push(n),
                }
            }
        }
    }
    Ok(())
}

enum OwnedComponent {
    Cur,
    Parent,
    Normal(OsString),
    /// Root or prefix: absolute.
    Other,
}

impl From<Component<'_>> for OwnedComponent {
    fn from(c: Component<'_>) -> Self {
        match c {
            Component::CurDir => OwnedComponent::Cur,
            Component::ParentDir => OwnedComponent::Parent,
            Component::Normal(n) => OwnedComponent::Normal(n.to_os_string()),
            Component::RootDir | Component::Prefix(_) => OwnedComponent::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// An entry of a test archive: (path bytes, kind, data or link target).
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    /// Builds a tar.gz writing raw names, so bad paths can be made too.
    fn archive(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match e {
                E::File(n, d) => (n, tar::EntryType::Regular, d, None),
                E::Dir(n) => (n, tar::EntryType::Directory, b"", None),
                E::Sym(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
                E::Hard(n, t) => (n, tar::EntryType::Link, b"", Some(t)),
            };
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gz")
    }

    #[test]
    fn good_archive_unpacks_with_links_inside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("pkg");
        let a = archive(&[
            E::Dir("./"),
            E::File("./manifest.toml", b"name = \"x\""),
            E::Dir("bin"),
            E::File("bin/run", b"#!/bin/sh\n"),
            E::Sym("bin/alias", "run"),
            E::Sym("lib/up", "../bin/run"),
            E::Hard("bin/copy", "bin/run"),
        ]);
        unpack(&a, &dest).expect("unpack");
        assert_eq!(
            fs::read(dest.join("bin/alias")).expect("read"),
            b"#!/bin/sh\n"
        );
        assert_eq!(fs::read(dest.join("lib/up")).expect("read"), b"#!/bin/sh\n");
        assert_eq!(
            fs::read(dest.join("bin/copy")).expect("read"),
            b"#!/bin/sh\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dest.join("bin/run"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "executable bit kept");
    }

    #[test]
    fn escaping_archives_are_refused_and_nothing_lands_outside() {
        let cases: Vec<(Vec<E>, &str)> = vec![
            (vec![E::File("../escape.txt", b"x")], "escapes"),
            (vec![E::File("a/../../escape.txt", b"x")], "escapes"),
            (vec![E::File("/tmp/agent-abs-escape.txt", b"x")], "absolute"),
            (vec![E::Sym("l", "/etc")], "outside"),
            (vec![E::Sym("l", "../..")], "outside"),
            (
                vec![E::Sym("l", "."), E::File("l/escape.txt", b"x")],
                "not a directory",
            ),
            (
                // Each link lexically inside, the chain outside.
                vec![
                    E::Dir("x"),
                    E::Dir("x/y"),
                    E::Sym("x/b", ".."),
                    E::Sym("x/y/a", "../b/.."),
                ],
                "outside",
            ),
            (vec![E::Hard("h", "../../etc/passwd")], "escapes"),
            (vec![E::Hard("h", "missing")], "not a file"),
            (vec![E::File("f", b"1"), E::File("f", b"2")], "duplicate"),
        ];
        for (entries, needle) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dest = tmp.path().join("in").join("pkg");
            let err = unpack(&archive(&entries), &dest).expect_err(needle);
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(!tmp.path().join("escape.txt").exists());
            assert!(!tmp.path().join("in").join("escape.txt").exists());
        }
        assert!(!Path::new("/tmp/agent-abs-escape.txt").exists());
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(unpack(b"not gzip at all", &tmp.path().join("p")).is_err());
    }
}
