//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_store::{SqliteOptions, SqliteStore};

/// A directory on real disk (under the target directory, not a tmpfs), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cairn-store-{name}-{}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for tests: no timer, small watch buffers so that lag is exercised.
pub fn test_options() -> SqliteOptions {
    SqliteOptions {
        compact_interval: None,
        watch_capacity: 16,
        ..SqliteOptions::default()
    }
}

/// A fresh SQLite store in its own directory (keep the guard alive as long as the store).
pub fn sqlite_store(name: &str, options: SqliteOptions) -> (SqliteStore, TempDir) {
    let dir = TempDir::new(name);
    let store = SqliteStore::open(dir.path().join("state.db"), options).expect("open store");
    (store, dir)
}

/// Poll `done` every few milliseconds for up to five seconds.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
