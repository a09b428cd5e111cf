//! The conformance suite: every case runs against every `Store` implementation.
//!
//! To check a new implementation, add a line at the bottom that names a module and an
//! expression giving `(store, guard)`; the guard lives as long as the test (a temp dir).

#[path = "conformance/cases.rs"]
mod cases;
mod common;

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        conformance!(@cases $module, $make, [
            create_and_get,
            update_conflicts,
            delete_and_recreate,
            list_pages_at_fixed_revision,
            list_at_past_and_future_revisions,
            watch_replays_from_revision,
            watch_seam_between_replay_and_live,
            lagging_watch_rereads_the_log,
            compaction,
            compaction_ends_lagging_watch,
            concurrent_updates_have_one_winner_per_revision,
            watch_ends_when_store_closes,
        ]);
    };
    (@cases $module:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::common;
            $(
                #[test]
                fn $case() {
                    // The guard (a temp dir) outlives the store, which the case consumes.
                    let (store, _guard) = $make;
                    super::cases::$case(store);
                }
            )*
        }
    };
}

conformance!(
    memory,
    (cairn_store::MemoryStore::with_watch_capacity(16), ())
);
conformance!(
    sqlite,
    common::sqlite_store("conformance", common::test_options())
);
