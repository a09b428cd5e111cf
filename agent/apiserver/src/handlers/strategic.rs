//! Strategic merge patch (`application/strategic-merge-patch+json`), what `kubectl apply`,
//! `kubectl patch` (its default type) and `kubectl edit` send for built-in types.
//!
//! It is a JSON merge patch in which some lists are merged element by element, matched on a
//! key field (containers by `name`, container ports by `containerPort`, ...), and primitive
//! lists such as `finalizers` are merged as sets. Which lists merge, and on what, is read from
//! the kind's OpenAPI schema (`x-kubernetes-patch-strategy`/`-merge-key`, the same extensions
//! kubectl reads to compute the patch); every other list is replaced whole, as in a merge
//! patch. Directives:
//! - `$patch: replace` (object or list element: replace instead of merging), `$patch: delete`
//!   (list element: remove the element with that key; object: remove it), `$patch: merge`;
//! - `$setElementOrder/<list>`: the order of a merged list after the patch;
//! - `$deleteFromPrimitiveList/<list>`: values to remove from a primitive list;
//! - `$retainKeys`: keys of the object to keep (others are removed).

use serde_json::{Map, Value};

use crate::error::ApiError;

/// How a list field is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge<'a> {
    /// Elements are objects matched on this key.
    ByKey(&'a str),
    /// Elements are primitives merged as a set.
    Primitive,
    /// Replaced whole.
    Replace,
}

/// The merge strategy a list property's schema declares (`x-kubernetes-patch-strategy`,
/// `x-kubernetes-patch-merge-key`, see `openapi::PATCH_MERGE`).
fn list_merge(prop: Option<&Value>) -> ListMerge<'_> {
    let Some(prop) = prop else {
        return ListMerge::Replace;
    };
    let strategy = prop["x-kubernetes-patch-strategy"].as_str().unwrap_or("");
    if !strategy.split(',').any(|s| s == "merge") {
        return ListMerge::Replace;
    }
    match prop["x-kubernetes-patch-merge-key"].as_str() {
        Some(key) => ListMerge::ByKey(key),
        None => ListMerge::Primitive,
    }
}

/// The schema of property `key` of an object schema (or of its map values).
pub(super) fn property<'s>(schema: Option<&'s Value>, key: &str) -> Option<&'s Value> {
    let schema = resolve(schema?);
    schema["properties"]
        .get(key)
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn resolve(schema: &Value) -> &Value {
    crate::openapi::resolve(schema)
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(format!("strategic merge patch: {message}"))
}

/// Applies `patch` to `target` (both JSON objects at the top level); `schema` is the OpenAPI
/// schema of the object's kind (`None`: every list is replaced, as in a merge patch).
pub fn apply(target: &mut Value, patch: &Value, schema: Option<&Value>) -> Result<(), ApiError> {
    merge_object(target, patch, schema, &mut Vec::new())
}

fn merge_object(
    target: &mut Value,
    patch: &Value,
    schema: Option<&Value>,
    path: &mut Vec<String>,
) -> Result<(), ApiError> {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip(patch);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(bad(format!("unknown $patch directive {other:?}"))),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), value));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value
                .as_array()
                .ok_or_else(|| bad(format!("{key} must be a list")))?;
            if let Some(list) = target[field].as_array_mut() {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue; // $patch handled above, $retainKeys after the merge
        }
        let map = target.as_object_mut().expect("made an object above");
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(_) => {
                path.push(key.clone());
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                merge_object(slot, value, property(schema, key), path)?;
                if slot.is_null() {
                    map.remove(key);
                }
                path.pop();
            }
            Value::Array(items) => {
                path.push(key.clone());
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                merge_list(slot, items, property(schema, key), path)?;
                path.pop();
            }
            other => {
                map.insert(key.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let how = list_merge(property(schema, &field));
        if let Some(list) = target.get_mut(&field) {
            reorder(list, order, how);
        }
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| bad("$retainKeys must be a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if let Some(map) = target.as_object_mut() {
            map.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    Ok(())
}

fn merge_list(
    target: &mut Value,
    items: &[Value],
    prop: Option<&Value>,
    path: &mut Vec<String>,
) -> Result<(), ApiError> {
    let item_schema = prop.map(resolve).and_then(|p| p.get("items"));
    // `[{"$patch": "replace"}, ...]`: the list is replaced by the other elements.
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    match list_merge(prop) {
        _ if replace => {
            *target = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(strip_value)
                    .collect(),
            );
        }
        ListMerge::Replace => *target = Value::Array(items.iter().map(strip_value).collect()),
        ListMerge::Primitive => {
            let list = list_of(target);
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListMerge::ByKey(key) => {
            let list = list_of(target);
            for item in items {
                let Some(id) = item.get(key) else {
                    return Err(bad(format!(
                        "an element of {} has no merge key {key:?}",
                        path.join(".")
                    )));
                };
                let found = list.iter().position(|e| e.get(key) == Some(id));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (found, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge_object(&mut list[i], item, item_schema, path)?,
                    (None, false) => list.push(strip_value(item)),
                }
            }
        }
    }
    Ok(())
}

fn list_of(target: &mut Value) -> &mut Vec<Value> {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    target.as_array_mut().expect("made a list above")
}

/// Orders `list` as `order` says (elements named there first, in that order; the rest after,
/// in their current order).
fn reorder(list: &mut Value, order: &Value, how: ListMerge) {
    let (Some(items), Some(order)) = (list.as_array_mut(), order.as_array()) else {
        return;
    };
    let rank = |e: &Value| -> usize {
        let pos = match how {
            ListMerge::ByKey(key) => order.iter().position(|o| o.get(key) == e.get(key)),
            _ => order.iter().position(|o| o == e),
        };
        pos.unwrap_or(order.len())
    };
    items.sort_by_key(|e| rank(e)); // stable: unordered elements keep their order
}

/// A copy of `map` without directives.
fn strip(map: &Map<String, Value>) -> Value {
    Value::Object(
        map.iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| (k.clone(), strip_value(v)))
            .collect(),
    )
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(map) => strip(map),
        Value::Array(items) => Value::Array(items.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(plural: &str) -> Option<&'static Value> {
        let r = crate::resources::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap();
        crate::openapi::kind_schema(r)
    }

    fn smp_as(plural: &str, target: Value, patch: Value) -> Value {
        let mut t = target;
        apply(&mut t, &patch, schema(plural)).unwrap();
        t
    }

    fn smp(target: Value, patch: Value) -> Value {
        smp_as("deployments", target, patch)
    }

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "log", "image": "log:1"}
        ]}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        // What kubectl apply sends when one image changes.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
                "containers": [{"name": "web", "image": "web:2"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "web:2");
        assert_eq!(
            cs[0]["ports"],
            json!([{"containerPort": 80}]),
            "untouched fields stay"
        );
        assert_eq!(cs[1]["name"], "log");
        assert!(
            !out.to_string().contains('$'),
            "no directive is stored: {out}"
        );
    }

    #[test]
    fn nested_lists_add_delete_and_order() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web",
                 "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                 "$setElementOrder/env": [{"name": "C"}, {"name": "A"}]},
                {"name": "log", "$patch": "delete"},
                {"name": "sidecar", "image": "s:1"}
            ]}}}}),
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = cs.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["web", "sidecar"]);
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn replace_primitive_and_retain() {
        let cur = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
                         "spec": {"tolerations": [{"key": "k1"}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            cur,
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"],
                                "labels": {"$patch": "replace", "z": "3"}},
                   "spec": {"tolerations": [{"key": "k2"}],
                            "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"z": "3"}));
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "k2"}]),
            "no merge key: replaced"
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn service_ports_merge_by_port_and_errors() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = smp_as(
            "services",
            svc.clone(),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"port": 80, "name": "http", "targetPort": 8080})
        );
        assert_eq!(out["spec"]["ports"][1]["port"], 443);
        let mut t = svc;
        let err = apply(
            &mut t,
            &json!({"spec": {"ports": [{"name": "x"}]}}),
            schema("services"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("merge key \"port\""), "{err}");
        // Without a schema every list is replaced, as in a merge patch.
        let mut plain = json!({"spec": {"ports": [{"port": 1}]}});
        apply(&mut plain, &json!({"spec": {"ports": [{"port": 2}]}}), None).unwrap();
        assert_eq!(plain["spec"]["ports"], json!([{"port": 2}]));
        let err = apply(&mut t, &json!({"$patch": "explode"}), None).unwrap_err();
        assert_eq!(err.code_reason().0, 400);
    }
}
