//! All openraft generics behind one type configuration, and the glue that
//! makes [`ClusterState`] the replicated state of a `raft-store`.

use std::io::Cursor;

use openraft::{BasicNode, Entry, TokioRuntime};

use crate::state::{Batch, BatchResponse, ClusterState};

openraft::declare_raft_types!(
    /// The supervisor cluster's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

pub type SupervisorId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = raft_store::LogStore<TypeConfig>;
pub type StateMachineStore = raft_store::StateMachineStore<TypeConfig, ClusterState>;
pub type StateHandle = raft_store::StateHandle<TypeConfig, ClusterState>;
pub type RaftMetrics = openraft::RaftMetrics<SupervisorId, BasicNode>;

pub mod typ {
    //! Short aliases for openraft's generic request, response and error types.
    use super::{SupervisorId, TypeConfig};
    use openraft::BasicNode;

    pub type RaftError<E = openraft::error::Infallible> =
        openraft::error::RaftError<SupervisorId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<SupervisorId, BasicNode, RaftError<E>>;
    pub type InitializeError = openraft::error::InitializeError<SupervisorId, BasicNode>;
    pub type ClientWriteError = openraft::error::ClientWriteError<SupervisorId, BasicNode>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<SupervisorId, BasicNode>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<SupervisorId, BasicNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<SupervisorId>;
    pub type VoteRequest = openraft::raft::VoteRequest<SupervisorId>;
    pub type VoteResponse = openraft::raft::VoteResponse<SupervisorId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<SupervisorId>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
}

impl raft_store::ReplicatedState for ClusterState {
    type Command = Batch;
    type Response = BatchResponse;

    fn apply(&mut self, index: u64, command: &Batch) -> BatchResponse {
        ClusterState::apply(self, index, command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, proto::Error> {
        proto::encode(self)
    }

    fn restore(bytes: &[u8]) -> Result<Self, proto::Error> {
        proto::decode(bytes)
    }
}
