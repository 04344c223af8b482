//! A tiny replicated key-value state that raft-store's tests and bench run
//! the store with (feature `raft`).
//!
//! [`Kv`] applies [`Set`] commands and remembers the index of every applied
//! one, so a test can check that nothing was applied twice or skipped;
//! [`entry`] makes a deterministic entry per index (its value grows with the
//! index, so entries differ in size), which a crash test re-creates to check
//! what it reads back.

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId};
use raft_store::ReplicatedState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

openraft::declare_raft_types!(
    pub KvConfig:
        D = Set,
        R = Option<String>,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<KvConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    /// Index of every applied command, in order.
    pub applied: Vec<u64>,
}

impl ReplicatedState for Kv {
    type Command = Set;
    type Response = Option<String>;

    fn apply(&mut self, index: u64, command: &Set) -> Option<String> {
        self.applied.push(index);
        self.map.insert(command.key.clone(), command.value.clone())
    }

    fn snapshot(&self) -> Result<Vec<u8>, proto::Error> {
        proto::encode(self)
    }

    fn frozen(&self) -> Kv {
        self.clone()
    }

    fn restore(bytes: &[u8]) -> Result<Self, proto::Error> {
        proto::decode(bytes)
    }
}

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A normal entry setting `k<index>` to a value derived from the index.
pub fn entry(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Set {
            key: format!("k{index}"),
            value: format!("value-of-{index}-{}", "x".repeat((index % 64) as usize)),
        }),
    }
}
