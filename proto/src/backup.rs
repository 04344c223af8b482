//! The backup file of `GET /v1/snapshot` (`supctl snapshot save`) and
//! `supervisor --restore-from`: the replicated state as the Raft snapshot
//! encodes it, with the log index and term it was taken at, the cluster's
//! id, and a SHA-256 of the state bytes, so a truncated or altered file is
//! refused before anything is restored from it.
//!
//! Encoded with [`crate::codec`] (format-version byte first), like
//! everything stored.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// What every backup file says it is.
pub const MAGIC: &str = "supcluster-snapshot";
/// The layout of [`Backup`] (only ever raised).
pub const BACKUP_FORMAT: u32 = 1;

/// A backup of the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// [`MAGIC`].
    pub magic: String,
    /// [`BACKUP_FORMAT`].
    pub format: u32,
    /// The cluster's id (0: none recorded yet).
    pub cluster_id: u64,
    /// The Raft log index the state was taken at (its last applied entry).
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// Wall clock of the replica that took it (ms since the Unix epoch).
    pub taken_at_ms: u64,
    /// SHA-256 of `state`, lower-case hex.
    pub sha256: String,
    /// The state, as a Raft snapshot encodes it.
    pub state: Vec<u8>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Backup {
    /// A backup of the encoded `state`.
    pub fn new(cluster_id: u64, index: u64, term: u64, taken_at_ms: u64, state: Vec<u8>) -> Backup {
        Backup {
            magic: MAGIC.to_string(),
            format: BACKUP_FORMAT,
            cluster_id,
            index,
            term,
            taken_at_ms,
            sha256: sha256_hex(&state),
            state,
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        crate::encode(self)
    }

    /// Reads a file made by [`Backup::to_bytes`], checking that it is one
    /// and that its state bytes are those it was taken with.
    pub fn from_bytes(bytes: &[u8]) -> Result<Backup, Error> {
        let b: Backup = crate::decode(bytes)
            .map_err(|e| Error::Decode(format!("not a supervisor cluster backup ({e})")))?;
        if b.magic != MAGIC {
            return Err(Error::Decode(format!(
                "not a supervisor cluster backup (it says {:?})",
                b.magic
            )));
        }
        if b.format != BACKUP_FORMAT {
            return Err(Error::Decode(format!(
                "backup format {} is not {BACKUP_FORMAT}, the one this build reads",
                b.format
            )));
        }
        let sum = sha256_hex(&b.state);
        if sum != b.sha256 {
            return Err(Error::Decode(format!(
                "backup checksum mismatch: the state hashes to {sum}, the file says {} (the file is damaged)",
                b.sha256
            )));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_damage_is_named() {
        let b = Backup::new(7, 120, 3, 1_796_000_000_000, vec![1, 2, 3, 4]);
        let bytes = b.to_bytes().expect("encode");
        assert_eq!(Backup::from_bytes(&bytes).expect("decode"), b);
        // One state byte changed: the checksum says so.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let err = Backup::from_bytes(&flipped)
            .expect_err("damaged")
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        // Truncated: not a backup.
        let err = Backup::from_bytes(&bytes[..bytes.len() - 2])
            .expect_err("short")
            .to_string();
        assert!(err.contains("not a supervisor cluster backup"), "{err}");
        // Something else entirely.
        let err = Backup::from_bytes(b"{\"json\": true}")
            .expect_err("json")
            .to_string();
        assert!(err.contains("not a supervisor cluster backup"), "{err}");
    }
}
