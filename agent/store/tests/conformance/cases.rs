//! Conformance cases: each takes a fresh store and checks one part of the `Store` contract.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Event, EventKind, KeyValue, Revision, Store, StoreError, Watch};

fn next(watch: &mut Watch) -> Result<Option<Event>, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let recv = tokio::time::timeout(Duration::from_secs(5), watch.recv());
        recv.await.expect("no event within 5 s")
    })
}

fn event(watch: &mut Watch) -> Event {
    next(watch).unwrap().expect("watch closed")
}

fn assert_idle(watch: &mut Watch) {
    assert_eq!(watch.try_recv().unwrap(), None);
}

fn value(store: &impl Store, key: &str) -> Option<(Vec<u8>, Revision, Revision)> {
    let kv = store.get(key).unwrap()?;
    Some((kv.value, kv.mod_revision, kv.create_revision))
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

pub fn create_and_get<S: Store>(store: S) {
    let a = "/registry/pods/default/a";
    let r1 = store.create(a, b"a1").unwrap();
    assert!(r1 > 0);
    assert_eq!(store.current_revision().unwrap(), r1);
    assert_eq!(value(&store, a), Some((b"a1".to_vec(), r1, r1)));
    assert_eq!(store.get("/registry/pods/default/b").unwrap(), None);
    let err = store.create(a, b"again").unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        store.current_revision().unwrap(),
        r1,
        "a failed write takes no revision"
    );
    let r2 = store.create("/registry/pods/default/b", b"").unwrap();
    assert!(r2 > r1);
    assert_eq!(value(&store, a), Some((b"a1".to_vec(), r1, r1)));
}

pub fn update_conflicts<S: Store>(store: S) {
    let k = "/registry/configmaps/default/c";
    let r1 = store.create(k, b"v1").unwrap();
    let r2 = store.update(k, b"v2", r1).unwrap();
    assert!(r2 > r1);
    match store.update(k, b"v3", r1).unwrap_err() {
        StoreError::Conflict {
            expected, current, ..
        } => assert_eq!((expected, current), (r1, r2)),
        err => panic!("expected a conflict, got {err}"),
    }
    let err = store
        .update("/registry/configmaps/default/none", b"x", r1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(value(&store, k), Some((b"v2".to_vec(), r2, r1)));
}

pub fn delete_and_recreate<S: Store>(store: S) {
    let k = "/registry/secrets/default/s";
    let r1 = store.create(k, b"v1").unwrap();
    let r2 = store.update(k, b"v2", r1).unwrap();
    assert!(store.delete(k, Some(r1)).unwrap_err().is_conflict());
    let r3 = store.delete(k, Some(r2)).unwrap();
    assert!(r3 > r2);
    assert_eq!(store.get(k).unwrap(), None);
    let again = store.delete(k, None).unwrap_err();
    assert!(matches!(again, StoreError::NotFound { .. }), "{again}");
    let update = store.update(k, b"v", r3).unwrap_err();
    assert!(matches!(update, StoreError::NotFound { .. }), "{update}");
    let r4 = store.create(k, b"v3").unwrap();
    assert_eq!(value(&store, k), Some((b"v3".to_vec(), r4, r4)));
    store.delete(k, None).unwrap();
    assert_eq!(store.get(k).unwrap(), None);
}

pub fn list_pages_at_fixed_revision<S: Store>(store: S) {
    let prefix = "/registry/pods/ns/";
    let key = |i: usize| format!("{prefix}p{i:02}");
    for i in 0..10 {
        store.create(&key(i), format!("v{i}").as_bytes()).unwrap();
    }
    for other in [
        "/registry/pods/ns",
        "/registry/pods/nsx/p",
        "/registry/services/ns/s",
    ] {
        store.create(other, b"other").unwrap();
    }
    let first = store.list(prefix, None, 4, None).unwrap();
    let at = first.revision;
    assert_eq!(at, store.current_revision().unwrap());
    assert_eq!(keys(&first.items), (0..4).map(key).collect::<Vec<_>>());
    assert!(first.more);

    // Writes between pages do not show in later pages of the same list.
    let p05 = store.get(&key(5)).unwrap().unwrap();
    store.update(&key(5), b"changed", p05.mod_revision).unwrap();
    store.delete(&key(7), None).unwrap();
    store.create(&format!("{prefix}p045"), b"new").unwrap();
    store.create(&key(10), b"new").unwrap();

    let mut seen = first.items;
    let mut after = seen.last().unwrap().key.clone();
    // Counts see the list's snapshot too: 6 keys after the first page, 11 now.
    assert_eq!(store.count(prefix, Some(&after), Some(at)).unwrap(), 6);
    assert_eq!(store.count(prefix, Some(&after), None).unwrap(), 7);
    assert_eq!(store.count(prefix, None, None).unwrap(), 11);
    loop {
        let page = store.list(prefix, Some(&after), 4, Some(at)).unwrap();
        assert_eq!(page.revision, at);
        assert!(page.items.len() <= 4);
        after = page.items.last().map_or(after, |kv| kv.key.clone());
        seen.extend(page.items);
        if !page.more {
            break;
        }
    }
    assert_eq!(keys(&seen), (0..10).map(key).collect::<Vec<_>>());
    for (i, kv) in seen.iter().enumerate() {
        assert_eq!(kv.value, format!("v{i}").into_bytes(), "{}", kv.key);
    }

    let now = store.list(prefix, None, 0, None).unwrap();
    assert_eq!(now.items.len(), 11);
    assert!(!now.more);
    assert_eq!(now.items[6].value, b"changed");
    assert!(!store.list(prefix, None, 11, None).unwrap().more);
    assert!(store.list(prefix, None, 10, None).unwrap().more);
    let all = store.list("", None, 0, None).unwrap();
    assert_eq!(all.items.len(), 14);
}

pub fn list_at_past_and_future_revisions<S: Store>(store: S) {
    let r1 = store.create("/a", b"v1").unwrap();
    let r2 = store.update("/a", b"v2", r1).unwrap();
    let r3 = store.delete("/a", None).unwrap();
    let r4 = store.create("/b", b"b").unwrap();
    let at = |rev| {
        let page = store.list("/", None, 0, Some(rev)).unwrap();
        assert_eq!(page.revision, rev);
        page.items
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(at(0), vec![]);
    assert_eq!(at(r1), vec![("/a".to_string(), b"v1".to_vec())]);
    assert_eq!(at(r2), vec![("/a".to_string(), b"v2".to_vec())]);
    assert_eq!(at(r3), vec![]);
    assert_eq!(at(r4), vec![("/b".to_string(), b"b".to_vec())]);
    let err = store.list("/", None, 0, Some(r4 + 1)).unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
    assert_eq!(store.count("/", None, Some(r2)).unwrap(), 1);
    assert_eq!(store.count("/", None, Some(r3)).unwrap(), 0);
    let err = store.count("/", None, Some(r4 + 1)).unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
}

pub fn watch_replays_from_revision<S: Store>(store: S) {
    let r1 = store.create("/a/x", b"1").unwrap();
    store.create("/b/y", b"1").unwrap();
    let r3 = store.update("/a/x", b"2", r1).unwrap();
    let r4 = store.delete("/a/x", None).unwrap();
    let r5 = store.create("/a/z", b"1").unwrap();

    let mut from_start = store.watch("/a/", 0).unwrap();
    let first = event(&mut from_start);
    assert_eq!(
        (first.kind, first.mod_revision, first.prev_value),
        (EventKind::Put, r1, None)
    );
    let revs: Vec<_> = (0..3)
        .map(|_| event(&mut from_start).mod_revision)
        .collect();
    assert_eq!(revs, [r3, r4, r5]);

    let mut watch = store.watch("/a/", r1).unwrap();
    let update = event(&mut watch);
    assert_eq!(
        (update.kind, update.key.as_str(), update.mod_revision),
        (EventKind::Put, "/a/x", r3)
    );
    assert_eq!(
        (update.value, update.prev_value),
        (b"2".to_vec(), Some(b"1".to_vec()))
    );
    assert_eq!(update.create_revision, r1);
    let delete = event(&mut watch);
    assert_eq!((delete.kind, delete.mod_revision), (EventKind::Delete, r4));
    assert_eq!(
        (delete.value, delete.prev_value),
        (b"2".to_vec(), Some(b"2".to_vec()))
    );
    let create = event(&mut watch);
    assert_eq!(
        (
            create.key.as_str(),
            create.mod_revision,
            create.create_revision
        ),
        ("/a/z", r5, r5)
    );
    assert_idle(&mut watch);

    store.create("/b/w", b"1").unwrap();
    let r7 = store.create("/a/q", b"1").unwrap();
    let live = event(&mut watch);
    assert_eq!((live.key.as_str(), live.mod_revision), ("/a/q", r7));
    assert_idle(&mut watch);
    assert_eq!(event(&mut from_start).mod_revision, r7);
}

/// A watch started while writers run sees every event exactly once, in order.
pub fn watch_seam_between_replay_and_live<S: Store + 'static>(store: S) {
    let store = Arc::new(store);
    let mut early = store.watch("/seam/", 0).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| store.create(&format!("/seam/{t}/{i}"), b"v").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    while store.current_revision().unwrap() < 20 {
        std::thread::yield_now();
    }
    let mut late = store.watch("/seam/", 0).unwrap();
    let mut acked: Vec<Revision> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    acked.sort_unstable();
    for watch in [&mut early, &mut late] {
        let revs: Vec<_> = (0..100).map(|_| event(watch).mod_revision).collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "out of order: {revs:?}"
        );
        assert_eq!(revs, acked);
        assert_idle(watch);
    }
}

/// A watcher that falls behind the live buffer catches up from the log.
pub fn lagging_watch_rereads_the_log<S: Store>(store: S) {
    let mut watch = store
        .watch("/lag/", store.current_revision().unwrap())
        .unwrap();
    let revs: Vec<_> = (0..60)
        .map(|i| store.create(&format!("/lag/{i:03}"), b"v").unwrap())
        .collect();
    for (i, rev) in revs.iter().enumerate() {
        let e = event(&mut watch);
        assert_eq!((e.key, e.mod_revision), (format!("/lag/{i:03}"), *rev));
    }
    assert_idle(&mut watch);
}

pub fn compaction<S: Store>(store: S) {
    let ra = store.create("/c/a", b"a1").unwrap();
    store.create("/c/b", b"b1").unwrap();
    let ra2 = store.update("/c/a", b"a2", ra).unwrap();
    store.delete("/c/b", None).unwrap();
    let ra3 = store.update("/c/a", b"a3", ra2).unwrap();
    store.create("/c/c", b"c1").unwrap();
    assert_eq!(store.compacted_revision().unwrap(), 0);

    store.compact(ra2).unwrap();
    assert_eq!(store.compacted_revision().unwrap(), ra2);
    assert!(store.watch("/c/", ra).unwrap_err().is_compacted());
    assert!(store
        .list("/c/", None, 0, Some(ra))
        .unwrap_err()
        .is_compacted());
    assert!(store
        .count("/c/", None, Some(ra))
        .unwrap_err()
        .is_compacted());
    assert_eq!(store.count("/c/", None, Some(ra2)).unwrap(), 2);
    let at = store.list("/c/", None, 0, Some(ra2)).unwrap();
    let values: Vec<_> = at.items.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [&b"a2"[..], b"b1"]);
    let mut watch = store.watch("/c/", ra2).unwrap();
    assert_eq!(event(&mut watch).key, "/c/b");
    assert_eq!(event(&mut watch).mod_revision, ra3);
    assert_eq!(event(&mut watch).key, "/c/c");

    let current = store.current_revision().unwrap();
    store.compact(current).unwrap();
    store.compact(ra).unwrap();
    assert_eq!(store.compacted_revision().unwrap(), current);
    let err = store.compact(current + 1).unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
    assert_eq!(value(&store, "/c/a"), Some((b"a3".to_vec(), ra3, ra)));
    assert_eq!(store.get("/c/b").unwrap(), None);
    let now = store.list("/c/", None, 0, None).unwrap();
    assert_eq!(keys(&now.items), ["/c/a", "/c/c"]);

    // Compacted keys keep working.
    let ra4 = store.update("/c/a", b"a4", ra3).unwrap();
    store.create("/c/b", b"b2").unwrap();
    assert_eq!(event(&mut watch).mod_revision, ra4);
    assert_eq!(event(&mut watch).value, b"b2");
    assert_eq!(store.list("/c/", None, 0, None).unwrap().items.len(), 3);
}

/// A watcher that fell behind and whose missed events were compacted ends with `Compacted`.
pub fn compaction_ends_lagging_watch<S: Store>(store: S) {
    let mut watch = store.watch("/l/", 0).unwrap();
    for i in 0..30 {
        store.create(&format!("/l/{i}"), b"v").unwrap();
    }
    store.compact(store.current_revision().unwrap()).unwrap();
    let err = next(&mut watch).unwrap_err();
    assert!(err.is_compacted(), "{err}");
}

/// Racing read-modify-write loops: every base revision has exactly one winner, no update is lost.
pub fn concurrent_updates_have_one_winner_per_revision<S: Store + 'static>(store: S) {
    let store = Arc::new(store);
    let key = "/registry/leases/counter";
    let r0 = store.create(key, b"0").unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                while wins.len() < 15 {
                    let kv = store.get(key).unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    match store.update(key, (n + 1).to_string().as_bytes(), kv.mod_revision) {
                        Ok(rev) => wins.push((kv.mod_revision, rev)),
                        Err(StoreError::Conflict { .. }) => {}
                        Err(err) => panic!("{err}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut wins: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    wins.sort_unstable();
    assert_eq!(wins.len(), 120);
    let bases: BTreeSet<_> = wins.iter().map(|w| w.0).collect();
    assert_eq!(bases.len(), 120, "two updates won on the same revision");
    let mut expected_base = r0;
    for (base, rev) in &wins {
        assert_eq!(*base, expected_base, "updates must chain");
        expected_base = *rev;
    }
    assert_eq!(value(&store, key).unwrap().0, b"120");
}

pub fn watch_ends_when_store_closes<S: Store>(store: S) {
    let mut watch = store.watch("", 0).unwrap();
    store.create("/x", b"1").unwrap();
    drop(store);
    assert_eq!(event(&mut watch).key, "/x");
    assert_eq!(next(&mut watch).unwrap(), None);
}
