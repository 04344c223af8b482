//! Tar archives written entry by entry with raw names, for the hostile
//! cases: `..`, absolute paths, links out of the tree, hard links, device
//! files, modes, which the tar crate's checked API refuses to write and no
//! packer would produce.
//!
//! Headers are old-style (v7) with the name and link name copied byte for
//! byte; [`Raw::gz`] gzips the result.

use std::io::Write;

use flate2::Compression;
pub use tar::EntryType;
use tar::Header;

/// A tar under construction.
pub struct Raw {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw::new()
    }
}

impl Raw {
    pub fn new() -> Raw {
        Raw {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// An entry of `kind` (mode 0644).
    pub fn entry(self, kind: EntryType, name: &str, link: &str, data: &[u8]) -> Raw {
        self.entry_with_mode(kind, name, link, data, 0o644)
    }

    pub fn entry_with_mode(
        mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> Raw {
        let mut h = Header::new_old();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Raw {
        self.entry(EntryType::Regular, name, "", data)
    }

    /// An executable file (mode 0755).
    pub fn exec(self, name: &str, data: &[u8]) -> Raw {
        self.entry_with_mode(EntryType::Regular, name, "", data, 0o755)
    }

    pub fn dir(self, name: &str) -> Raw {
        self.entry_with_mode(EntryType::Directory, name, "", b"", 0o755)
    }

    pub fn symlink(self, name: &str, target: &str) -> Raw {
        self.entry(EntryType::Symlink, name, target, b"")
    }

    pub fn hard_link(self, name: &str, target: &str) -> Raw {
        self.entry(EntryType::Link, name, target, b"")
    }

    /// `manifest.toml` for `name@version` (command `bin/run`) plus `bin/run`.
    pub fn valid(name: &str, version: &str) -> Raw {
        Raw::new()
            .file(
                "manifest.toml",
                crate::package::manifest(name, version, &[]).as_bytes(),
            )
            .file("bin/run", b"#!/bin/sh\n")
    }

    /// The tar, uncompressed.
    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().expect("tar")
    }

    /// The tar, gzipped.
    pub fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

/// `bytes` gzipped (fast).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).expect("gz");
    gz.finish().expect("gz")
}
