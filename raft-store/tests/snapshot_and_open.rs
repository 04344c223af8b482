//! Snapshots survive a round trip through another store and a reopen; data
//! dirs of another format, foreign or corrupt ones are refused untouched.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, Membership, RaftSnapshotBuilder, StoredMembership};
use raft_store::{Error, FORMAT_FILE, Store};
use testkit::kv::{Kv, KvConfig, entry, log_id};

#[tokio::test]
async fn snapshot_round_trip_and_reload() {
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let (leader_log, mut leader) = Store::open::<KvConfig, Kv>(leader_dir.path()).expect("open");
    let mut entries: Vec<_> = (1..=40).map(|i| entry(1, i)).collect();
    entries.insert(
        0,
        openraft::Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Membership(Membership::new(vec![[1u64, 2, 3].into()], ())),
        },
    );
    leader.apply(entries).await.expect("apply");
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 40)));

    // Install on a fresh store.
    let follower_dir = tempfile::tempdir().expect("temp dir");
    {
        let (_log, mut follower) = Store::open::<KvConfig, Kv>(follower_dir.path()).expect("open");
        let mut receiving = follower.begin_receiving_snapshot().await.expect("begin");
        *receiving = *built.snapshot.clone();
        follower
            .install_snapshot(&built.meta, receiving)
            .await
            .expect("install");
    }

    // Reopen both: the same state, applied id and membership.
    let leader_state = leader.handle().read(Kv::clone);
    drop((leader, leader_log));
    let (_log, mut reopened) = Store::open::<KvConfig, Kv>(follower_dir.path()).expect("reopen");
    assert_eq!(reopened.handle().read(Kv::clone), leader_state);
    assert_eq!(leader_state.map.len(), 40);
    let (applied, membership) = reopened.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 40)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 0)));
    let current = reopened
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());
    let (_l, mut leader_again) =
        Store::open::<KvConfig, Kv>(leader_dir.path()).expect("reopen leader");
    assert_eq!(
        leader_again.applied_state().await.expect("state").0,
        Some(log_id(1, 40))
    );
    let _: StoredMembership<u64, openraft::BasicNode> = membership;
}

#[tokio::test]
async fn group_commit_shares_syncs_without_skipping_any() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open");
    // Every sync is reported to the observer, with its duration.
    let observed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = observed.clone();
    assert!(log.observe_syncs(move |d| seen.lock().expect("lock").push(d)));
    assert!(
        !log.observe_syncs(|_| {}),
        "only the first observer is kept"
    );
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let mut log = log.clone();
            tokio::spawn(async move {
                for i in 0..50u64 {
                    let index = 1 + t * 1000 + i;
                    log.blocking_append([entry(1, index)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender");
    }
    let syncs = log.sync_count();
    assert!((1..=400).contains(&syncs), "{syncs} syncs for 400 appends");
    let observed = observed.lock().expect("lock").clone();
    assert_eq!(observed.len() as u64, syncs, "one observation per sync");
    assert!(observed.iter().all(|d| !d.is_zero()), "{observed:?}");
    let mut log = log;
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id.map(|l| l.index), Some(1 + 7 * 1000 + 49));
}

/// Every file under `dir` with its bytes.
fn snapshot_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.display().to_string(),
                    std::fs::read(&p).expect("read file"),
                );
            }
        }
    }
    out
}

async fn populated_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open");
    log.blocking_append((1..=10).map(|i| entry(1, i)))
        .await
        .expect("append");
    dir
}

#[tokio::test]
async fn other_format_version_is_refused_untouched() {
    let dir = populated_dir().await;
    std::fs::write(dir.path().join(FORMAT_FILE), "raft-store 99\n").expect("write marker");
    let before = snapshot_tree(dir.path());
    let err = Store::open::<KvConfig, Kv>(dir.path())
        .err()
        .expect("must refuse");
    assert!(matches!(err, Error::FormatVersion { .. }), "{err}");
    assert!(err.to_string().contains("raft-store 99"), "{err}");
    assert_eq!(snapshot_tree(dir.path()), before);
}

#[tokio::test]
async fn foreign_dir_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "my files").expect("write");
    let before = snapshot_tree(dir.path());
    let err = Store::open::<KvConfig, Kv>(dir.path())
        .err()
        .expect("must refuse");
    assert!(matches!(err, Error::Foreign { .. }), "{err}");
    assert_eq!(snapshot_tree(dir.path()), before);
}

#[tokio::test]
async fn corrupt_dir_is_refused_untouched() {
    let dir = populated_dir().await;
    // Garble every MANIFEST file: RocksDB cannot recover its file list.
    for entry in std::fs::read_dir(dir.path().join("rocksdb")).expect("read") {
        let p = entry.expect("entry").path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST"))
        {
            std::fs::write(&p, b"this is not a rocksdb manifest at all, not even close")
                .expect("garble");
        }
    }
    let before = snapshot_tree(dir.path());
    let err = Store::open::<KvConfig, Kv>(dir.path())
        .err()
        .expect("must refuse");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(
        snapshot_tree(dir.path()),
        before,
        "a refused open changed files"
    );
}

#[tokio::test]
async fn reopen_keeps_log_vote_and_committed() {
    let dir = populated_dir().await;
    {
        let (mut log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("open");
        log.save_vote(&openraft::Vote::new(7, 2))
            .await
            .expect("vote");
        log.save_committed(Some(log_id(1, 8)))
            .await
            .expect("committed");
        log.purge(log_id(1, 3)).await.expect("purge");
    }
    let (mut log, _sm) = Store::open::<KvConfig, Kv>(dir.path()).expect("reopen");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(openraft::Vote::new(7, 2))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 8))
    );
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
}
