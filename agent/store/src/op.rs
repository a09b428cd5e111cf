//! Write semantics shared by both implementations: one log row per write.

use crate::{Event, EventKind, KeyValue, Revision, StoreError, WriteOp};

/// One row of the revision log.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub rev: Revision,
    pub key: String,
    /// The row (re)creates the key.
    pub created: bool,
    /// The row is a tombstone.
    pub deleted: bool,
    pub create_revision: Revision,
    /// The key's previous row (0 if none): the unique `(key, prev_revision)` pair.
    pub prev_revision: Revision,
    /// The new value (empty for a tombstone).
    pub value: Vec<u8>,
    /// The value before this row, if the key existed.
    pub old_value: Option<Vec<u8>>,
}

impl Row {
    /// The row as a key's current value, unless it is a tombstone.
    pub fn into_key_value(self) -> Option<KeyValue> {
        (!self.deleted).then_some(KeyValue {
            key: self.key,
            value: self.value,
            mod_revision: self.rev,
            create_revision: self.create_revision,
        })
    }

    /// The row as a watch event.
    pub fn into_event(self) -> Event {
        if self.deleted {
            Event {
                kind: EventKind::Delete,
                key: self.key,
                value: self.old_value.clone().unwrap_or_default(),
                prev_value: self.old_value,
                mod_revision: self.rev,
                create_revision: self.create_revision,
            }
        } else {
            Event {
                kind: EventKind::Put,
                key: self.key,
                value: self.value,
                prev_value: self.old_value,
                mod_revision: self.rev,
                create_revision: self.create_revision,
            }
        }
    }
}

/// Check `op` against the key's newest row and build the row that records it at `rev`.
pub(crate) fn apply(op: WriteOp, latest: Option<&Row>, rev: Revision) -> Result<Row, StoreError> {
    let live = latest.filter(|row| !row.deleted);
    let prev_revision = latest.map_or(0, |row| row.rev);
    let check = |key: &str, expected: Option<Revision>| -> Result<&Row, StoreError> {
        let current = live.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
        match expected {
            Some(expected) if expected != current.rev => Err(StoreError::Conflict {
                key: key.into(),
                expected,
                current: current.rev,
            }),
            _ => Ok(current),
        }
    };
    match op {
        WriteOp::Create { key, value } => {
            if live.is_some() {
                return Err(StoreError::AlreadyExists { key });
            }
            Ok(Row {
                rev,
                key,
                created: true,
                deleted: false,
                create_revision: rev,
                prev_revision,
                value,
                old_value: None,
            })
        }
        WriteOp::Update {
            key,
            value,
            expected_mod_revision,
        } => {
            let current = check(&key, Some(expected_mod_revision))?;
            Ok(Row {
                rev,
                created: false,
                deleted: false,
                create_revision: current.create_revision,
                prev_revision,
                value,
                old_value: Some(current.value.clone()),
                key,
            })
        }
        WriteOp::Delete {
            key,
            expected_mod_revision,
        } => {
            let current = check(&key, expected_mod_revision)?;
            Ok(Row {
                rev,
                created: false,
                deleted: true,
                create_revision: current.create_revision,
                prev_revision,
                value: Vec::new(),
                old_value: Some(current.value.clone()),
                key,
            })
        }
    }
}

/// The exclusive upper bound of the keys starting with `prefix`: no UTF-8 text contains 0xFF.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xFF);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(key: &str, rev: Revision) -> Row {
        let op = WriteOp::Create {
            key: key.into(),
            value: b"v1".to_vec(),
        };
        apply(op, None, rev).unwrap()
    }

    #[test]
    fn update_checks_revision_and_links_rows() {
        let first = create("/a", 5);
        assert_eq!((first.create_revision, first.prev_revision), (5, 0));
        let op = |expected| WriteOp::Update {
            key: "/a".into(),
            value: b"v2".to_vec(),
            expected_mod_revision: expected,
        };
        let err = apply(op(4), Some(&first), 6).unwrap_err();
        assert!(err.is_conflict(), "{err}");
        let second = apply(op(5), Some(&first), 6).unwrap();
        assert_eq!((second.create_revision, second.prev_revision), (5, 5));
        assert_eq!(second.old_value.as_deref(), Some(&b"v1"[..]));
    }

    #[test]
    fn tombstone_allows_recreate_and_blocks_update() {
        let first = create("/a", 1);
        let del = WriteOp::Delete {
            key: "/a".into(),
            expected_mod_revision: None,
        };
        let tomb = apply(del.clone(), Some(&first), 2).unwrap();
        let event = tomb.clone().into_event();
        assert_eq!(
            (event.kind, event.value.as_slice()),
            (EventKind::Delete, &b"v1"[..])
        );
        let again = apply(del, Some(&tomb), 3).unwrap_err();
        assert!(matches!(again, StoreError::NotFound { .. }));
        let recreate = WriteOp::Create {
            key: "/a".into(),
            value: b"v3".to_vec(),
        };
        let row = apply(recreate, Some(&tomb), 3).unwrap();
        assert_eq!((row.create_revision, row.prev_revision), (3, 2));
    }

    #[test]
    fn prefix_end_bounds_every_extension() {
        let end = prefix_end("/registry/pods/");
        assert!(b"/registry/pods/\xf4\x8f\xbf\xbf".as_slice() < end.as_slice());
        assert!(b"/registry/pods0".as_slice() > end.as_slice());
    }
}
