//! Package archives: building one from a directory, and the one rule set an
//! archive must pass, on upload and on install.
//!
//! # Parts
//!
//! - [`pack_dir`] (`pack`): the deterministic `.tar.gz` of a directory, so
//!   the same directory always has the same digest.
//! - `rules`: the structural rules (entry paths, kinds, links, sizes) and
//!   the one streaming reader that applies them. This is the only place
//!   that decides whether an archive path is safe; nothing else in the
//!   workspace re-implements it.
//! - [`inspect`]: what depmgr checks before it stores an upload: the
//!   structural rules plus the package rules (`manifest.toml` at the root,
//!   a command that is a file of the archive).
//! - [`unpack`]: what a node manager does to install an artifact: the
//!   structural rules, applied while the archive streams from its file into
//!   a staging directory that becomes the destination only when the whole
//!   archive passed.
//!
//! # Invariants
//!
//! - An archive [`inspect`] accepts, [`unpack`] unpacks (given the same
//!   [`Limits`]), and both refuse a hostile archive with the same message
//!   naming the entry: they share one reader and one rule set.
//! - Neither holds an archive's contents in memory; both read at most
//!   [`Limits::max_unpacked_bytes`] decompressed bytes and
//!   [`Limits::max_entries`] entries.

mod inspect;
mod pack;
mod rules;
mod unpack;

pub use inspect::{Inspection, check_identity, inspect};
pub use pack::{pack_dir, pack_dir_to};
pub use rules::{DIR_MODE, EXEC_MODE, FILE_MODE, unpacked_mode};
pub use unpack::{Unpacked, unpack};

/// Name of the manifest at the archive root.
pub const MANIFEST: &str = "manifest.toml";
/// Largest `manifest.toml` accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The mtime of every entry [`pack_dir`] writes (the Unix epoch).
pub const FIXED_MTIME: u64 = 0;

/// Size limits of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest archive (compressed bytes, as uploaded or downloaded).
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
