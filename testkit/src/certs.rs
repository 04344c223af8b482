//! Certificates for tests, made the way an operator makes them: by running
//! `supctl ca init` and `supctl ca issue` (the release binary).
//!
//! [`Certs`] is a CA in a directory; [`Certs::flags`] gives the three TLS
//! flags of a program holding an identity (issuing its certificate the
//! first time), [`Certs::load`] the loaded identity for an in-process
//! client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tls::{Role, Tls, TlsFiles};

use crate::bins::bin;

/// A cluster CA in a directory, and the certificates it issued.
pub struct Certs {
    dir: PathBuf,
    operator: std::sync::OnceLock<Arc<Tls>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Certs {
    /// A new CA in a temp dir.
    pub fn new() -> Certs {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut c = Certs::init(&tmp.path().join("ca"));
        c._tmp = Some(tmp);
        c
    }

    /// A new CA in `dir` (`supctl ca init <dir>`).
    pub fn init(dir: &Path) -> Certs {
        supctl(&["ca", "init"], dir, &[]);
        Certs {
            dir: dir.to_path_buf(),
            operator: std::sync::OnceLock::new(),
            _tmp: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The files of `role/name`, issued now if they are not there yet
    /// (`supctl ca issue <dir> <role> <name> --host 127.0.0.1`).
    pub fn issue(&self, role: Role, name: &str) -> TlsFiles {
        let files = TlsFiles {
            ca: self.ca(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        if !files.cert.exists() {
            self.reissue(role, name, &[]);
        }
        files
    }

    /// Issues `role/name` again (rotation), with extra `supctl ca issue`
    /// flags (e.g. `--days -1` for an expired one).
    pub fn reissue(&self, role: Role, name: &str, extra: &[&str]) {
        supctl(
            &["ca", "issue"],
            &self.dir,
            &[&[role.as_str(), name, "--host", "127.0.0.1"], extra].concat(),
        );
    }

    /// `--tls-ca <ca> --tls-cert <name>.pem --tls-key <name>.key`.
    pub fn flags(&self, role: Role, name: &str) -> Vec<String> {
        self.issue(role, name).to_flags()
    }

    /// `role/name`'s identity, loaded, for a client in the test.
    pub fn load(&self, role: Role, name: &str) -> Arc<Tls> {
        Tls::load(self.issue(role, name)).expect("loading a certificate the test issued")
    }

    /// The operator `ops`, for admin and upload clients.
    pub fn operator(&self) -> Arc<Tls> {
        self.operator
            .get_or_init(|| self.load(Role::Operator, "ops"))
            .clone()
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

/// Runs supctl and waits for it (tens of milliseconds). Called from an
/// async test on a multi-threaded runtime, the worker hands its other
/// tasks away while it waits (`block_in_place`); a current-thread runtime
/// or plain thread just waits.
fn supctl(cmd: &[&str], dir: &Path, rest: &[&str]) {
    let run = || {
        Command::new(bin("supctl"))
            .args(cmd)
            .arg(dir)
            .args(rest)
            .output()
            .expect("running supctl (build the binaries first)")
    };
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let out = if multi_thread {
        tokio::task::block_in_place(run)
    } else {
        run()
    };
    assert!(
        out.status.success(),
        "supctl {cmd:?} {} {rest:?} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
