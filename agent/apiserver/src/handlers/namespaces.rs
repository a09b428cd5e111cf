//! Deleting a namespace, as Kubernetes' namespace lifecycle does it: the namespace turns
//! `Terminating` (with a `deletionTimestamp`), everything in it is deleted the way any
//! deletion is (objects with finalizers are only marked), and the namespace itself goes once
//! nothing is left in it: at once, or when the last object's last finalizer is removed
//! ([`Api::finish_namespace`], called from the write that removes it). Nothing new can be
//! created in a terminating namespace. Deleting it again re-runs the sweep, so a deletion
//! interrupted by a crash completes on the next attempt.

use serde_json::{json, Value};

use super::{decode_object, encode_object, set_resource_version, Api};
use crate::error::ApiError;
use crate::meta::{self, meta_str};
use crate::resources;

/// Attempts at deleting one object that changes under us.
const ATTEMPTS: usize = 3;

impl Api {
    /// DELETE of the namespace `obj` (stored at `key`, revision `rev`). Returns the namespace
    /// as it now is: terminating, or just deleted.
    pub(super) fn delete_namespace(
        &self,
        key: &str,
        mut obj: Value,
        rev: u64,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").to_owned();
        if obj["metadata"].get("deletionTimestamp").is_none() {
            let m = meta::metadata(&mut obj);
            m.insert("deletionTimestamp".into(), Value::String(meta::now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            obj["status"]["phase"] = json!("Terminating");
            let rev = self.store.update(key, &encode_object(&obj), rev)?;
            set_resource_version(&mut obj, rev);
        }
        self.delete_namespace_contents(&name)?;
        Ok(self.finish_namespace(&name)?.unwrap_or(obj))
    }

    /// Deletes (or, where finalizers hold them, marks) every object in `namespace`.
    fn delete_namespace_contents(&self, namespace: &str) -> Result<(), ApiError> {
        for resource in self.catalog().iter().filter(|r| r.namespaced) {
            let page = self
                .store
                .list(&resource.prefix(Some(namespace)), None, 0, None)?;
            for kv in page.items {
                let mut current = Some(kv);
                for _ in 0..ATTEMPTS {
                    let Some(kv) = current.take() else { break };
                    let obj = decode_object(&kv)?;
                    // Pods get their grace period: the namespace waits for them.
                    let grace = super::write::grace_period(resource, &obj, None);
                    match self.delete_or_mark(&kv.key, obj, kv.mod_revision, grace) {
                        Ok(_) | Err(cairn_store::StoreError::NotFound { .. }) => break,
                        // Changed meanwhile: read it again and retry.
                        Err(cairn_store::StoreError::Conflict { .. }) => {
                            current = self.store.get(&kv.key)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes namespace `name` if it is terminating, has no finalizers of its own and holds
    /// nothing any more; returns it if it was deleted now.
    pub(super) fn finish_namespace(&self, name: &str) -> Result<Option<Value>, ApiError> {
        let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are served");
        let Some(kv) = self.store.get(&namespaces.key(None, name))? else {
            return Ok(None);
        };
        let obj = decode_object(&kv)?;
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if obj["metadata"].get("deletionTimestamp").is_none() || has_finalizers {
            return Ok(None);
        }
        for resource in self.catalog().iter().filter(|r| r.namespaced) {
            let page = self
                .store
                .list(&resource.prefix(Some(name)), None, 1, None)?;
            if !page.items.is_empty() {
                return Ok(None);
            }
        }
        match self.store.delete(&kv.key, Some(kv.mod_revision)) {
            Ok(_) => Ok(Some(obj)),
            Err(
                cairn_store::StoreError::NotFound { .. } | cairn_store::StoreError::Conflict { .. },
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `namespace` is being deleted (no new objects may go in).
    pub(super) fn namespace_terminating(namespace: &Value) -> bool {
        namespace["metadata"].get("deletionTimestamp").is_some()
    }
}
