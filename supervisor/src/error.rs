//! The supervisor's one error type.
//!
//! Every fallible step of a replica (start-up, bootstrap, proposing
//! transitions, retrieving packages, forwarding) fails with [`Error`]; the
//! HTTP layer turns it into an answer in one place
//! (`impl From<Error> for http::ApiError`), choosing the status from the
//! variant, and `main` turns a start-up error into exit status 2.

use crate::raft::{SupervisorId, typ};
use crate::state::Rejection;

/// Everything that can go wrong in a supervisor replica.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or a combination of flags that cannot work. Exit 2.
    #[error("{0}")]
    Config(String),
    /// The data dir cannot be used (foreign, corrupt, another version).
    #[error(transparent)]
    Store(#[from] raft_store::Error),
    /// The `--listen` address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// Raft stopped: the storage failed.
    #[error("raft stopped: {0}")]
    Fatal(Box<openraft::error::Fatal<SupervisorId>>),
    /// Initialising a new cluster failed.
    #[error("initialising the cluster: {0}")]
    Initialize(Box<typ::RaftError<typ::InitializeError>>),
    /// This replica is not the leader (any more). HTTP 503.
    #[error("this replica is not the leader")]
    NotLeader {
        leader: Option<(SupervisorId, String)>,
    },
    /// No quorum, or leadership is changing. HTTP 503.
    #[error("no quorum: {0}")]
    Unavailable(String),
    /// The state machine refused a transition. HTTP 404/409/400.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// depmgr answered with an error, or could not be reached.
    #[error(transparent)]
    Depmgr(#[from] depmgr::Error),
    /// depmgr answered a closure that does not end with the package itself.
    #[error("the closure of {0} does not end with the package itself")]
    BadClosure(String),
    /// Forwarding an admin request to the leader failed. HTTP 503.
    #[error("{0}")]
    Forward(String),
}

/// Result with the supervisor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<openraft::error::Fatal<SupervisorId>> for Error {
    fn from(e: openraft::error::Fatal<SupervisorId>) -> Self {
        Error::Fatal(Box::new(e))
    }
}
