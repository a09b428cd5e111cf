//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge patch
//! ([`super::strategic`]).

use serde_json::Value;

use super::{subject, target, Api, Reply};
use crate::error::ApiError;
use crate::meta::meta_str;
use crate::request::{Action, PatchType};

/// Attempts when the object changes between our read and our write (no client precondition).
const PATCH_RETRIES: usize = 5;

impl Api {
    pub(super) fn patch(
        &self,
        action: &Action,
        kind: PatchType,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        if body.len() > super::write::MAX_BODY {
            return Err(ApiError::TooLarge {
                limit: super::write::MAX_BODY,
            });
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))?;
        let (_, name) = target(action);
        let schema = match action.subresource {
            Some(crate::request::Subresource::Scale) => None,
            _ => crate::openapi::kind_schema(action.resource),
        };
        let mut attempt = 0;
        loop {
            let current = self.get(action)?.body;
            let patched = apply(kind, &current, &patch, schema)?;
            // A resourceVersion the patch sets is the client's precondition; otherwise the
            // write is based on the version just read, and retried if that changed meanwhile.
            let current_rv = meta_str(&current, "resourceVersion");
            let patched_rv = meta_str(&patched, "resourceVersion");
            let client_precondition = !patched_rv.is_empty() && patched_rv != current_rv;
            let expected_rv = if client_precondition {
                patched_rv
            } else {
                current_rv
            };
            let expected = expected_rv.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "metadata.resourceVersion {expected_rv:?} is not a number"
                ))
            })?;
            let name_after = meta_str(&patched, "name");
            if name_after != name {
                return Err(ApiError::BadRequest(format!(
                    "the patch changes metadata.name to {name_after:?}: names cannot be changed"
                )));
            }
            match self.replace(action, patched, Some(expected)) {
                Err(ApiError::Conflict { .. })
                    if !client_precondition && attempt < PATCH_RETRIES =>
                {
                    attempt += 1;
                }
                Err(ApiError::NotFound(_)) => {
                    return Err(ApiError::NotFound(subject(action.resource, name)))
                }
                other => return other,
            }
        }
    }
}

/// Apply a patch of `kind` to `current`, whose OpenAPI schema is `schema` (strategic merge
/// patches need it to know which lists merge by key).
pub fn apply(
    kind: PatchType,
    current: &Value,
    patch: &Value,
    schema: Option<&Value>,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the JSON patch is not a list of RFC 6902 operations: {e}"
                ))
            })?;
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::Invalid {
                subject: Default::default(),
                message: format!("the JSON patch cannot be applied: {e}"),
            })?;
        }
        PatchType::Merge => {
            require_object(patch)?;
            json_patch::merge(&mut doc, patch);
        }
        PatchType::StrategicMerge => {
            require_object(patch)?;
            super::strategic::apply(&mut doc, patch, schema)?;
        }
        PatchType::Apply => {
            return Err(ApiError::BadRequest(
                "server-side apply is not a patch of a read object".into(),
            ))
        }
    }
    Ok(doc)
}

fn require_object(patch: &Value) -> Result<(), ApiError> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "a merge patch must be a JSON object".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let cur = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        let m = apply(
            PatchType::Merge,
            &cur,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            None,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let j = apply(PatchType::Json, &cur, &json!([{"op": "replace", "path": "/data/k", "value": "w"}, {"op": "add", "path": "/data/n", "value": "x"}]), None)
        .unwrap();
        assert_eq!(j["data"], json!({"k": "w", "n": "x"}));
        let err = apply(
            PatchType::Json,
            &cur,
            &json!([{"op": "remove", "path": "/nope"}]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.code_reason().0, 422);
        assert_eq!(
            apply(PatchType::Json, &cur, &json!({"op": 1}), None)
                .unwrap_err()
                .code_reason()
                .0,
            400
        );
        assert_eq!(
            apply(PatchType::Merge, &cur, &json!([1]), None)
                .unwrap_err()
                .code_reason()
                .0,
            400
        );
    }

    #[test]
    fn strategic_is_routed() {
        let cur = json!({"data": {"k": "v"}});
        let p = json!({"$setElementOrder/x": [], "data": {"k": "w", "$retainKeys": ["k"]}});
        assert_eq!(
            apply(PatchType::StrategicMerge, &cur, &p, None).unwrap(),
            json!({"data": {"k": "w"}})
        );
        assert!(apply(PatchType::StrategicMerge, &cur, &json!([1]), None).is_err());
    }
}
