//! Behaviour of the SQLite store beyond the shared contract: persistence, group commit,
//! automatic compaction, the async write path.

mod common;

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{SqliteOptions, SqliteStore, Store, WriteOp};
use common::{sqlite_store, test_options, wait_until, TempDir};

#[test]
fn reopen_keeps_data_and_never_reuses_revisions() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("state.db");
    let (kept, last) = {
        let store = SqliteStore::open(&path, test_options()).unwrap();
        let kept = store.create("/keep", b"v").unwrap();
        store.create("/gone", b"v").unwrap();
        // The newest row is a tombstone, and compaction removes it.
        let last = store.delete("/gone", None).unwrap();
        store.compact(last).unwrap();
        (kept, last)
    };
    let store = SqliteStore::open(&path, test_options()).unwrap();
    assert_eq!(store.current_revision().unwrap(), last);
    assert_eq!(store.compacted_revision().unwrap(), last);
    assert_eq!(store.get("/keep").unwrap().unwrap().mod_revision, kept);
    assert_eq!(store.get("/gone").unwrap(), None);
    assert_eq!(store.create("/gone", b"again").unwrap(), last + 1);
    assert_eq!(store.stats().rows, 2);
}

#[test]
fn concurrent_writers_share_commits() {
    let (store, _dir) = sqlite_store("group", test_options());
    let store = Arc::new(store);
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    store.create(&format!("/group/{c}/{i}"), b"v").unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 320);
    assert!(stats.commits < stats.writes, "no batching: {stats:?}");
    assert_eq!(
        store.list("/group/", None, 0, None).unwrap().items.len(),
        320
    );
}

#[test]
fn a_failed_write_does_not_fail_its_group() {
    let (store, _dir) = sqlite_store("savepoint", test_options());
    // Queue writes without waiting so that they land in one group.
    let (done, results) = channel();
    let ops = [
        WriteOp::Create {
            key: "/s/a".into(),
            value: b"1".to_vec(),
        },
        WriteOp::Create {
            key: "/s/a".into(),
            value: b"dup".to_vec(),
        },
        WriteOp::Update {
            key: "/s/a".into(),
            value: b"2".to_vec(),
            expected_mod_revision: 1,
        },
        WriteOp::Delete {
            key: "/s/none".into(),
            expected_mod_revision: None,
        },
        WriteOp::Create {
            key: "/s/b".into(),
            value: b"1".to_vec(),
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let done = done.clone();
        store
            .submit(op, Box::new(move |r| done.send((i, r)).unwrap()))
            .unwrap();
    }
    let mut outcomes: Vec<_> = (0..5).map(|_| results.recv().unwrap()).collect();
    outcomes.sort_by_key(|(i, _)| *i);
    let revs: Vec<_> = outcomes.into_iter().map(|(_, r)| r.ok()).collect();
    assert_eq!(revs, [Some(1), None, Some(2), None, Some(3)]);
    assert_eq!(store.get("/s/a").unwrap().unwrap().value, b"2");
}

#[test]
fn size_limit_bounds_the_log() {
    let options = SqliteOptions {
        max_rows: 50,
        retain_revisions: 20,
        ..test_options()
    };
    let (store, _dir) = sqlite_store("bounded", options);
    let first = store.create("/live", b"kept").unwrap();
    // Churn: create and delete the same key, queued without waiting.
    let (done, results) = channel();
    for _ in 0..150 {
        for op in [
            WriteOp::Create {
                key: "/churn".into(),
                value: vec![0; 100],
            },
            WriteOp::Delete {
                key: "/churn".into(),
                expected_mod_revision: None,
            },
        ] {
            let done = done.clone();
            store
                .submit(op, Box::new(move |r| done.send(r).unwrap()))
                .unwrap();
        }
    }
    for _ in 0..300 {
        results.recv().unwrap().unwrap();
    }
    wait_until("compaction", || store.stats().rows <= 50);
    let stats = store.stats();
    assert!(stats.compacted > first, "{stats:?}");
    assert_eq!(store.get("/live").unwrap().unwrap().mod_revision, first);
    assert!(store.watch("/", 0).unwrap_err().is_compacted());
}

#[test]
fn periodic_compaction_keeps_the_retention_window() {
    let options = SqliteOptions {
        retain_revisions: 5,
        compact_interval: Some(Duration::from_millis(20)),
        ..test_options()
    };
    let (store, _dir) = sqlite_store("periodic", options);
    let mut rev = store.create("/p", b"0").unwrap();
    for i in 1..20 {
        rev = store.update("/p", i.to_string().as_bytes(), rev).unwrap();
    }
    wait_until("periodic compaction", || store.stats().compacted == rev - 5);
    assert_eq!(
        store.list("/", None, 0, Some(rev - 5)).unwrap().items[0].value,
        b"14"
    );
    assert!(store
        .list("/", None, 0, Some(rev - 6))
        .unwrap_err()
        .is_compacted());
    assert_eq!(store.stats().rows, 6);
}

#[test]
fn async_writes_and_watches() {
    let (store, _dir) = sqlite_store("async", test_options());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut watch = store.watch("/a/", 0).unwrap();
        let op = WriteOp::Create {
            key: "/a/x".into(),
            value: b"v".to_vec(),
        };
        let rev = store.write_async(op.clone()).await.unwrap();
        let err = store.write_async(op).await.unwrap_err();
        assert!(matches!(err, cairn_store::StoreError::AlreadyExists { .. }));
        let event = tokio::time::timeout(Duration::from_secs(5), watch.recv()).await;
        assert_eq!(event.unwrap().unwrap().unwrap().mod_revision, rev);
    });
}

/// Queue `rounds` create/delete pairs of one key without waiting for each, then wait for all.
fn churn(store: &SqliteStore, key: &str, rounds: usize) {
    let (done, results) = channel();
    for _ in 0..rounds {
        for op in [
            WriteOp::Create {
                key: key.into(),
                value: b"v".to_vec(),
            },
            WriteOp::Delete {
                key: key.into(),
                expected_mod_revision: None,
            },
        ] {
            let done = done.clone();
            store
                .submit(op, Box::new(move |r| done.send(r).unwrap()))
                .unwrap();
        }
    }
    for _ in 0..rounds * 2 {
        results.recv().unwrap().unwrap();
    }
}

#[test]
fn compaction_spanning_several_chunks_keeps_live_keys() {
    let (store, _dir) = sqlite_store("chunks", test_options());
    let r1 = store.create("/x", b"1").unwrap();
    churn(&store, "/churn", 1300);
    // Superseded in a later chunk than the one holding its previous row.
    let r2 = store.update("/x", b"2", r1).unwrap();
    churn(&store, "/churn", 1300);
    let current = store.current_revision().unwrap();
    assert!(current > 5000);
    store.compact(r2).unwrap();
    assert_eq!(store.list("/", None, 0, Some(r2)).unwrap().items.len(), 1);
    store.compact(current).unwrap();
    assert_eq!(store.stats().rows, 1);
    assert_eq!(store.get("/x").unwrap().unwrap().mod_revision, r2);
    let page = store.list("/", None, 0, Some(current)).unwrap();
    assert_eq!(page.items[0].value, b"2");
}
