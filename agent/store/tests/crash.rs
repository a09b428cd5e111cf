//! Durability under a real crash: a child process writes from several threads and prints each
//! acknowledged write; the parent kills it with SIGKILL mid-stream and checks, after reopening
//! the database, that every acknowledged write is there.
//!
//! The child is this test binary again, running only `crash_child` with `CHILD_ENV` set.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::{SqliteOptions, SqliteStore, Store};

const CHILD_ENV: &str = "CAIRN_STORE_CRASH_CHILD_DB";
const THREADS: usize = 8;
const KILL_AFTER_ACKS: usize = 300;

fn value_of(key: &str) -> Vec<u8> {
    format!("value of {key} ").repeat(8).into_bytes()
}

/// Runs as the child; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let options = SqliteOptions {
        compact_interval: None,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open(path, options).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    if Instant::now() > deadline {
                        break; // the parent should have killed us long ago
                    }
                    let key = format!("/crash/{t}/{i}");
                    let rev = store.create(&key, &value_of(&key)).unwrap();
                    // One write per line so that a kill never leaves half an ack.
                    let mut out = std::io::stdout().lock();
                    out.write_all(format!("ack {rev} {key}\n").as_bytes())
                        .unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = common::TempDir::new("crash");
    let path = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ack ") else {
            continue; // the test harness's own output
        };
        let (rev, key) = ack.split_once(' ').unwrap();
        acks.push((rev.parse::<u64>().unwrap(), key.to_owned()));
        if acks.len() == KILL_AFTER_ACKS && !killed {
            child.kill().unwrap(); // SIGKILL; acks already in the pipe still count
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child should die by SIGKILL: {status}"
    );
    assert!(acks.len() >= KILL_AFTER_ACKS, "only {} acks", acks.len());

    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let revs: BTreeSet<_> = acks.iter().map(|(rev, _)| *rev).collect();
    assert_eq!(revs.len(), acks.len(), "revisions must be distinct");
    assert!(store.current_revision().unwrap() >= *revs.last().unwrap());
    for (rev, key) in &acks {
        let kv = store
            .get(key)
            .unwrap()
            .unwrap_or_else(|| panic!("lost {key}"));
        assert_eq!((kv.mod_revision, kv.value), (*rev, value_of(key)), "{key}");
    }
    // Writes committed but not yet acknowledged may also be there; nothing else is.
    let all = store.list("/crash/", None, 0, None).unwrap();
    assert!(all.items.len() >= acks.len());
    for kv in &all.items {
        assert_eq!(kv.value, value_of(&kv.key));
    }
    eprintln!(
        "{} acks, {} keys after the crash",
        acks.len(),
        all.items.len()
    );
}
