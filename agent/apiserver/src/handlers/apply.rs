//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, `kubectl apply
//! --server-side`, Helm 4): the body is the manager's whole intent for the object; the server
//! merges it into the live object and records which fields each manager owns in
//! `metadata.managedFields` (`FieldsV1`).
//!
//! One apply by manager `m`:
//! 1. the fields of the applied configuration are collected as paths: object fields,
//!    list items by their merge key (`k:{"name":"web"}`, from the schema's
//!    `x-kubernetes-patch-merge-key` / `x-kubernetes-list-map-keys`), set members
//!    (`v:"a"`), and atomic lists as one leaf;
//! 2. a field another applier owns whose live value differs from the applied one is a
//!    conflict: `409` naming the manager and the field, unless `force=true`, which takes the
//!    field over;
//! 3. fields `m` applied before and no longer does, and that nobody else owns, are removed;
//! 4. the applied configuration is merged in (lists by key, sets by value) and `m`'s `Apply`
//!    entry becomes the new set of paths.
//!
//! An object that does not exist is created from the applied configuration. The result goes
//! through the same validation, defaulting and subresource rules as any write.
//!
//! Limitation: only appliers own fields; plain creates, updates and patches do not record an
//! `Update` entry, so they neither conflict with appliers nor protect their own fields.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{target, Api, Reply};
use crate::error::ApiError;
use crate::meta::meta_str;
use crate::request::Action;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// An object field or map key (`f:name`).
    Field(String),
    /// A list item by its key fields (`k:{"name":"web"}`, compact JSON, keys sorted).
    Key(String),
    /// A set member (`v:"a"`).
    Member(String),
    /// The item itself exists (`.`).
    Itself,
}

type Path = Vec<Step>;
type FieldSet = BTreeSet<Path>;

/// Metadata fields that are the server's or identify the object: never owned.
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

impl Api {
    pub(super) fn server_side_apply(
        &self,
        action: &Action,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let manager = action
            .options
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest("fieldManager is required for apply requests".into())
            })?;
        if body.len() > super::write::MAX_BODY {
            return Err(ApiError::TooLarge {
                limit: super::write::MAX_BODY,
            });
        }
        let applied: Value = serde_yaml::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the apply configuration is not valid YAML or JSON: {e}"
            ))
        })?;
        if !applied.is_object() {
            return Err(ApiError::BadRequest(
                "the apply configuration must be an object".into(),
            ));
        }
        let resource = action.resource;
        for (field, want) in [
            ("apiVersion", resource.api_version()),
            ("kind", resource.kind.to_owned()),
        ] {
            match applied[field].as_str() {
                Some(got) if got == want => {}
                Some(got) => {
                    return Err(ApiError::BadRequest(format!(
                        "the {field} of the apply configuration ({got}) does not match the resource ({want}) of the URL"
                    )))
                }
                None => {
                    return Err(ApiError::BadRequest(format!(
                        "the apply configuration must name its {field} ({want})"
                    )))
                }
            }
        }
        let (_, name) = target(action);
        let applied_name = meta_str(&applied, "name");
        if !applied_name.is_empty() && applied_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the apply configuration ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        let schema = crate::openapi::kind_schema(resource);
        let paths = fields(&applied, schema);
        let now = crate::meta::now();
        let entry = |set: &FieldSet| {
            json!({
                "manager": manager,
                "operation": "Apply",
                "apiVersion": resource.api_version(),
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(set),
            })
        };

        let live = match self.get(action) {
            Ok(reply) => Some(reply.body),
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let Some(live) = live else {
            let mut object = applied.clone();
            object["metadata"]["name"] = json!(name);
            object["metadata"]["managedFields"] = json!([entry(&paths)]);
            let mut create = action.clone();
            create.name = None;
            let body = serde_json::to_vec(&object).expect("JSON values serialise");
            return self.create(&create, &body);
        };

        // Who owns what now.
        let mut owners: Vec<(Value, FieldSet)> = live["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e.clone(), decode(&e["fieldsV1"])))
            .collect();
        let mine = |e: &Value| e["manager"] == manager.as_str() && e["operation"] == "Apply";
        let previous: FieldSet = owners
            .iter()
            .filter(|(e, _)| mine(e))
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        let mut conflicts = Vec::new();
        for (e, set) in owners.iter_mut().filter(|(e, _)| !mine(e)) {
            let taken: Vec<Path> = set
                .iter()
                .filter(|p| paths.contains(*p) && p.last() != Some(&Step::Itself))
                .filter(|p| value_at(&live, p, schema) != value_at(&applied, p, schema))
                .cloned()
                .collect();
            if action.options.force {
                for p in &taken {
                    set.remove(p);
                }
            } else {
                for p in taken {
                    conflicts.push(format!(
                        "conflict with \"{}\"{}: {}",
                        e["manager"].as_str().unwrap_or(""),
                        match e["operation"].as_str() {
                            Some("Update") =>
                                format!(" using {}", e["apiVersion"].as_str().unwrap_or("")),
                            _ => String::new(),
                        },
                        display(&p)
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            let n = conflicts.len();
            return Err(ApiError::Conflict {
                subject: super::subject(resource, name),
                message: format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    conflicts.join("\n")
                ),
            });
        }
        let others: FieldSet = owners
            .iter()
            .filter(|(e, _)| !mine(e))
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        let mut merged = live.clone();
        // Whole list items first (their fields go with them, and an item stripped of its key
        // fields could no longer be found), then fields, deepest first.
        let mut dropped: Vec<&Path> = previous
            .iter()
            .filter(|p| !paths.contains(*p) && !others.contains(*p))
            .collect();
        dropped.sort_by_key(|p| {
            let item = p.last() == Some(&Step::Itself);
            (
                !item,
                if item {
                    p.len() as isize
                } else {
                    -(p.len() as isize)
                },
            )
        });
        for p in dropped {
            remove_at(&mut merged, p, schema);
        }
        merge(&mut merged, &applied, schema);
        let mut entries: Vec<Value> = owners
            .into_iter()
            .filter(|(e, set)| !mine(e) && !set.is_empty())
            .map(|(mut e, set)| {
                e["fieldsV1"] = encode(&set);
                e
            })
            .collect();
        entries.push(entry(&paths));
        merged["metadata"]["managedFields"] = json!(entries);
        if let Some(meta) = merged["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        self.replace(action, merged, None)
    }
}

/// The (resolved) schema of `key` in an object schema or its map values.
fn property<'s>(schema: Option<&'s Value>, key: &str) -> Option<&'s Value> {
    super::strategic::property(schema, key).map(crate::openapi::resolve)
}

/// How a list is owned and merged.
enum ListKind {
    /// Items are objects identified by these fields.
    Map(Vec<String>),
    /// Items are primitives, each owned on its own.
    Set,
    /// The list is one value.
    Atomic,
}

fn list_kind(schema: Option<&Value>) -> ListKind {
    let Some(s) = schema.map(crate::openapi::resolve) else {
        return ListKind::Atomic;
    };
    if let Some(keys) = s["x-kubernetes-list-map-keys"].as_array() {
        return ListKind::Map(
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
        );
    }
    let merge = s["x-kubernetes-patch-strategy"]
        .as_str()
        .is_some_and(|st| st.split(',').any(|x| x == "merge"));
    match (
        s["x-kubernetes-list-type"].as_str(),
        s["x-kubernetes-patch-merge-key"].as_str(),
    ) {
        (Some("set"), _) => ListKind::Set,
        (_, Some(key)) if merge => ListKind::Map(key.split(',').map(str::to_owned).collect()),
        (None, None) if merge => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut map = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            map.insert(k.clone(), v.clone());
        }
    }
    Value::Object(map).to_string()
}

/// The field paths of an applied configuration.
fn fields(applied: &Value, schema: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::new();
    collect(applied, schema, &mut Vec::new(), &mut out, true);
    out
}

fn collect(value: &Value, schema: Option<&Value>, path: &mut Path, out: &mut FieldSet, root: bool) {
    let Value::Object(map) = value else {
        out.insert(path.clone());
        return;
    };
    if map.is_empty() && !root {
        out.insert(path.clone());
        return;
    }
    for (k, v) in map {
        if root && (k == "apiVersion" || k == "kind") {
            continue;
        }
        if path.len() == 1
            && path[0] == Step::Field("metadata".into())
            && UNOWNED_METADATA.contains(&k.as_str())
        {
            continue;
        }
        let sub = property(schema, k);
        path.push(Step::Field(k.clone()));
        match v {
            Value::Array(items) => match list_kind(sub) {
                ListKind::Map(keys) => {
                    let item_schema = sub
                        .and_then(|s| s.get("items"))
                        .map(crate::openapi::resolve);
                    for item in items {
                        path.push(Step::Key(item_key(item, &keys)));
                        path.push(Step::Itself);
                        out.insert(path.clone());
                        path.pop();
                        collect(item, item_schema, path, out, false);
                        path.pop();
                    }
                }
                ListKind::Set => {
                    for item in items {
                        path.push(Step::Member(item.to_string()));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
            },
            v => collect(v, sub, path, out, false),
        }
        path.pop();
    }
}

/// The value at `path` (an item for a key step, a member for a value step).
fn value_at<'a>(object: &'a Value, path: &[Step], schema: Option<&Value>) -> Option<&'a Value> {
    let mut cur = object;
    let mut schema = schema.map(crate::openapi::resolve);
    for step in path {
        match step {
            Step::Field(name) => {
                schema = property(schema, name);
                cur = cur.get(name)?;
            }
            Step::Key(key) => {
                let ListKind::Map(keys) = list_kind(schema) else {
                    return None;
                };
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|i| item_key(i, &keys) == *key)?;
                schema = schema
                    .and_then(|s| s.get("items"))
                    .map(crate::openapi::resolve);
            }
            Step::Member(member) => {
                let member: Value = serde_json::from_str(member).ok()?;
                return cur.as_array()?.iter().find(|i| **i == member);
            }
            Step::Itself => return Some(cur),
        }
    }
    Some(cur)
}

/// Removes what `path` names from `object`.
fn remove_at(object: &mut Value, path: &[Step], schema: Option<&Value>) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    // An item's `.` marker: remove the item.
    let (last, parent) = if *last == Step::Itself {
        match parent.split_last() {
            Some((item, rest)) => (item, rest),
            None => return,
        }
    } else {
        (last, parent)
    };
    let mut cur = object;
    let mut schema = schema.map(crate::openapi::resolve);
    for step in parent {
        match step {
            Step::Field(name) => {
                schema = property(schema, name);
                let Some(next) = cur.get_mut(name) else {
                    return;
                };
                cur = next;
            }
            Step::Key(key) => {
                let ListKind::Map(keys) = list_kind(schema) else {
                    return;
                };
                let Some(next) = cur
                    .as_array_mut()
                    .and_then(|l| l.iter_mut().find(|i| item_key(i, &keys) == *key))
                else {
                    return;
                };
                cur = next;
                schema = schema
                    .and_then(|s| s.get("items"))
                    .map(crate::openapi::resolve);
            }
            Step::Member(_) | Step::Itself => return,
        }
    }
    match last {
        Step::Field(name) => {
            if let Some(map) = cur.as_object_mut() {
                map.remove(name);
            }
        }
        Step::Key(key) => {
            if let ListKind::Map(keys) = list_kind(schema) {
                if let Some(list) = cur.as_array_mut() {
                    list.retain(|i| item_key(i, &keys) != *key);
                }
            }
        }
        Step::Member(member) => {
            let member: Option<Value> = serde_json::from_str(member).ok();
            if let Some(list) = cur.as_array_mut() {
                list.retain(|i| Some(i) != member.as_ref());
            }
        }
        Step::Itself => {}
    }
}

/// Merges the applied configuration into `live`: objects field by field, keyed lists item by
/// item, sets by member, anything else replaced.
fn merge(live: &mut Value, applied: &Value, schema: Option<&Value>) {
    let (Some(target), Some(source)) = (live.as_object_mut(), applied.as_object()) else {
        *live = applied.clone();
        return;
    };
    for (k, v) in source {
        let sub = property(schema, k);
        match (target.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => merge(existing, v, sub),
            (Some(Value::Array(existing)), Value::Array(items)) => match list_kind(sub) {
                ListKind::Map(keys) => {
                    let item_schema = sub
                        .and_then(|s| s.get("items"))
                        .map(crate::openapi::resolve);
                    for item in items {
                        let key = item_key(item, &keys);
                        match existing.iter_mut().find(|i| item_key(i, &keys) == key) {
                            Some(found) => merge(found, item, item_schema),
                            None => existing.push(item.clone()),
                        }
                    }
                }
                ListKind::Set => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                ListKind::Atomic => *existing = items.clone(),
            },
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A field set as `FieldsV1` JSON.
fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let name = match step {
                Step::Field(f) => format!("f:{f}"),
                Step::Key(k) => format!("k:{k}"),
                Step::Member(v) => format!("v:{v}"),
                Step::Itself => ".".to_owned(),
            };
            node = node
                .entry(name)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("FieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// A `FieldsV1` tree as a field set: every leaf (and every `.`) is a path.
fn decode(fields: &Value) -> FieldSet {
    fn walk(node: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(map) = node.as_object() else { return };
        if map.is_empty() && !path.is_empty() {
            out.insert(path.clone());
            return;
        }
        for (name, child) in map {
            let step = if name == "." {
                Step::Itself
            } else if let Some(f) = name.strip_prefix("f:") {
                Step::Field(f.to_owned())
            } else if let Some(k) = name.strip_prefix("k:") {
                Step::Key(k.to_owned())
            } else if let Some(v) = name.strip_prefix("v:") {
                Step::Member(v.to_owned())
            } else {
                continue;
            };
            path.push(step);
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// A path as kubectl shows conflicts: `.spec.replicas`, `.spec.containers[name="web"].image`.
fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let inner: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", inner.join(",")));
            }
            Step::Member(v) => out.push_str(&format!("[={v}]")),
            Step::Itself => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let schema = crate::openapi::kind_schema(
            crate::resources::find("apps", "v1", "deployments").unwrap(),
        );
        let applied = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a/b"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "args": ["-v"]}]}}},
        });
        let set = fields(&applied, schema);
        let v1 = encode(&set);
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert!(
            v1["f:metadata"].get("f:name").is_none(),
            "names are not owned"
        );
        assert_eq!(v1["f:metadata"]["f:finalizers"]["v:\"a/b\""], json!({}));
        let item = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert_eq!(item["f:args"], json!({}), "an atomic list is one leaf");
        assert_eq!(decode(&v1), set);
        let image = set
            .iter()
            .find(|p| p.last() == Some(&Step::Field("image".into())))
            .unwrap();
        assert_eq!(
            display(image),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        assert_eq!(value_at(&applied, image, schema), Some(&json!("web:1")));
    }

    #[test]
    fn merging_and_removing_follow_list_keys() {
        let schema = crate::openapi::kind_schema(
            crate::resources::find("apps", "v1", "deployments").unwrap(),
        );
        let mut live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1"}, {"name": "side", "image": "s:1"}]}}}});
        merge(
            &mut live,
            &json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:2"}]}}}}),
            schema,
        );
        let containers = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(containers[1]["name"], "side", "other items stay");
        let side: Path = vec![
            Step::Field("spec".into()),
            Step::Field("template".into()),
            Step::Field("spec".into()),
            Step::Field("containers".into()),
            Step::Key("{\"name\":\"side\"}".into()),
            Step::Itself,
        ];
        remove_at(&mut live, &side, schema);
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
