//! openraft's own storage conformance suite against the RocksDB store.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use raft_store::{LogStore, StateMachineStore, Store};
use testkit::kv::{Kv, KvConfig};

struct Builder;

impl StoreBuilder<KvConfig, LogStore<KvConfig>, StateMachineStore<KvConfig, Kv>, tempfile::TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<KvConfig>,
            StateMachineStore<KvConfig, Kv>,
        ),
        StorageError<u64>,
    > {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite failed: {e}");
    }
}
