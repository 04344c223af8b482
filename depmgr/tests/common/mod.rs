//! What only depmgr's tests share: small helpers for raw HTTP, payloads
//! and the data dir. The depmgr process (`testkit::depmgr_proc`), packages
//! (`testkit::package::sample`) and raw archives (`testkit::raw_tar`) come
//! from the test kit.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// Files in `dir` (non-recursive), empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    depmgr::sha256_hex(bytes)
}

/// `n` pseudo-random (incompressible) bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A reqwest client for raw requests, with a deadline.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Status and `{"error"}` message of an answer.
pub async fn status_and_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<proto::ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or(text);
    (status, msg)
}
