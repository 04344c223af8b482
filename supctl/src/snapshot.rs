//! `supctl snapshot save <file>`: a backup of the replicated state
//! (`GET /v1/snapshot`), checked (it is a backup, its checksum holds, its
//! state decodes) before it is written, and written whole or not at all
//! (a temporary file, synced, then renamed). `supervisor --restore-from
//! <file>` re-creates a cluster from it.

use std::io::Write;
use std::path::Path;

use admin_api::AdminClient;
use anyhow::{Context, Result};
use proto::backup::Backup;

/// What was saved.
#[derive(Debug, serde::Serialize)]
pub struct Saved {
    pub file: String,
    pub bytes: usize,
    pub index: u64,
    pub term: u64,
    pub cluster_id: u64,
    pub sha256: String,
}

/// `supctl snapshot save <file>`.
pub async fn save(c: &AdminClient, file: &Path, out: crate::output::Output) -> Result<()> {
    let bytes = c.snapshot().await?;
    let backup = Backup::from_bytes(&bytes).context("the supervisor answered a damaged backup")?;
    write_whole(file, &bytes)?;
    let saved = Saved {
        file: file.display().to_string(),
        bytes: bytes.len(),
        index: backup.index,
        term: backup.term,
        cluster_id: backup.cluster_id,
        sha256: backup.sha256,
    };
    if out.structured() {
        out.print(&saved)?;
    } else {
        println!(
            "saved {} ({} bytes): the replicated state at log index {} (term {}) of cluster {}, sha256 {}",
            saved.file, saved.bytes, saved.index, saved.term, saved.cluster_id, saved.sha256
        );
        println!(
            "restore with: supervisor --restore-from {} ... on empty data dirs (docs/operations.md, \"Backup and restore\")",
            saved.file
        );
    }
    Ok(())
}

/// Writes `bytes` to `file` whole or not at all.
fn write_whole(file: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    Ok(())
}
