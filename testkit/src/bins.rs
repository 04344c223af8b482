//! Where the workspace's binaries are.
//!
//! Tests, benches, examples and the partition-test harness start the release
//! binaries (`supervisor`, `agent`, `depmgr`, `supctl`, `probe-module`) that
//! sit in the same target dir as the running executable:
//! `target/release/` for a binary, its parent for a test or bench (in
//! `deps/`) or an example (in `examples/`). Cargo builds a package's own
//! binaries before its integration tests, but not the other packages' ones:
//! build them first with `cargo build --release --workspace --bins`, as
//! `.ci/test` does.

use std::path::PathBuf;

/// The command that builds what [`bin`] looks for.
pub const BUILD: &str = "cargo build --release --workspace --bins";

/// The target dir of the running executable (`target/release/`), whether
/// or not the binaries are there yet.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    let parent = exe.parent().expect("the executable has a directory");
    let dir = if parent.ends_with("deps") || parent.ends_with("examples") {
        parent.parent().expect("deps/ has a parent")
    } else {
        parent
    };
    dir.to_path_buf()
}

/// [`bin_dir`], once it holds every one of `names`; otherwise which one is
/// missing and how to build it.
pub fn find_dir(names: &[&str]) -> Result<PathBuf, String> {
    let dir = bin_dir();
    match names.iter().map(|n| dir.join(n)).find(|p| !p.exists()) {
        Some(missing) => Err(format!(
            "{} is missing: run `{BUILD}` first",
            missing.display()
        )),
        None => Ok(dir),
    }
}

/// The release binary `name`; panics saying how to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    match find_dir(&[name]) {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("{e}"),
    }
}
