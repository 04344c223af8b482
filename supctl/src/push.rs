//! `supctl package push <dir>`: the deterministic archive of the directory
//! is written to a temporary file, then streamed to depmgr from disk with a
//! progress bar on a terminal (memory does not grow with the archive). The
//! other `package` subcommands are depmgr's own (`depmgr::cli`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use depmgr::client::{Client, Timeouts};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The temporary archive; removed when dropped.
struct TempArchive(PathBuf);

impl Drop for TempArchive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `supctl package push <dir> [--depmgr URL]`.
pub async fn push(dir: &Path, depmgr_url: &str, tls: Option<&Arc<tls::Tls>>) -> Result<()> {
    let client = Client::with_tls(depmgr_url, Timeouts::default(), tls)?;
    let manifest_path = dir.join(depmgr::archive::MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "pushing {}: cannot read {}",
            dir.display(),
            manifest_path.display()
        )
    })?;
    let manifest = proto::manifest::Manifest::from_toml(&text).map_err(|e| {
        anyhow::anyhow!(
            "pushing {}: {}: {e}",
            dir.display(),
            manifest_path.display()
        )
    })?;
    let archive = TempArchive(std::env::temp_dir().join(format!(
        "supctl-push-{}-{}.tar.gz",
        std::process::id(),
        manifest.name
    )));
    let (src, dest) = (dir.to_path_buf(), archive.0.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let file = std::fs::File::create(&dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        let out = depmgr::archive::pack_dir_to(&src, std::io::BufWriter::new(file))?;
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", dest.display(), e.error()))?
            .sync_all()?;
        Ok(())
    })
    .await
    .context("packing task failed")?
    .with_context(|| format!("packing {}", dir.display()))?;
    let len = std::fs::metadata(&archive.0)?.len();
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("pushing {}@{}", manifest.name, manifest.version));
    let shown = bar.clone();
    let result = client
        .push_file(&manifest.name, &manifest.version, &archive.0, move |sent| {
            shown.set_position(sent)
        })
        .await;
    bar.finish_and_clear();
    let (answer, created) = result.with_context(|| format!("pushing {}", dir.display()))?;
    let what = if created {
        "stored"
    } else {
        "already stored (same bytes)"
    };
    println!(
        "{}@{} {what}: sha256 {} ({} bytes)",
        answer.name, answer.version, answer.digest, answer.size
    );
    Ok(())
}
