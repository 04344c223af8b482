//! A small tmpfs for disk-full tests: mounted on a directory, filled with a
//! ballast file until `ENOSPC`, unmounted when dropped. Mounting needs root
//! (and permission to mount); [`Tmpfs::mount`] says why it cannot, so a
//! test can print `SKIPPED` instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory, unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `16m`) on `dir`,
    /// or says why it cannot.
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// The ballast file [`Tmpfs::fill`] writes.
    pub fn ballast(&self) -> PathBuf {
        self.0.join("ballast")
    }

    /// Writes the ballast file until the filesystem refuses with ENOSPC.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.ballast()).expect("create the ballast file");
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0xa5u8; chunk];
            loop {
                match f.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling the tmpfs: {e}"),
                }
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
