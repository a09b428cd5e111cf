//! The store's typed errors.

use crate::Revision;

/// Why a store operation failed.
///
/// Mapping to Kubernetes API responses: `AlreadyExists` → 409 AlreadyExists, `NotFound` →
/// 404 NotFound, `Conflict` → 409 Conflict, `Compacted` → 410 Gone (Expired), `FutureRevision`
/// → 504 Timeout ("Too large resource version"), the others → 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },

    #[error("key {key} not found")]
    NotFound { key: String },

    #[error("key {key} was modified: expected revision {expected}, current revision {current}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },

    #[error("revision {requested} has been compacted (oldest available revision is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },

    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    #[error("write failed: {0}")]
    WriteFailed(String),

    #[error("the store is closed")]
    Closed,

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("the database file is not a Cairn store: {0}")]
    Format(String),
}

impl StoreError {
    /// True for [`StoreError::Compacted`]: the client must re-list (HTTP 410 Gone).
    pub fn is_compacted(&self) -> bool {
        matches!(self, StoreError::Compacted { .. })
    }

    /// True for [`StoreError::Conflict`]: re-read the object and retry the update.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}
