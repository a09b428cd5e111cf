//! OpenAPI v3 documents and schema-driven field validation.
//!
//! The component schemas are generated at build time from k8s-openapi (`build.rs`) and
//! embedded compressed; they are decompressed on first use. From them and the resource table
//! this module serves:
//! - `/openapi/v3`: the index of group-version documents, each with a content hash;
//! - `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: paths with every operation
//!   (tagged with `x-kubernetes-action` and `x-kubernetes-group-version-kind`, so kubectl sees
//!   that PATCH takes `fieldValidation` and leaves validation to the server) and the schemas
//!   they reach (top-level kinds carry `x-kubernetes-group-version-kind`, which `kubectl
//!   explain` looks for).
//!
//! [`unknown_fields`] walks an object against its kind's schema and reports fields the schema
//! does not have, by JSON path, for `fieldValidation=Strict|Warn`, and [`remove_fields`] drops
//! them as kube-apiserver does when it decodes into typed structs.
//!
//! [`v2`] converts the same documents to one Swagger 2.0 `/openapi/v2`, in JSON only: a
//! client that accepts nothing but its protobuf form gets 406 (client-go's v2 reader does;
//! kubectl 1.35 reads v3 and falls back to v2 only when v3 is missing).

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::resources::{Catalog, Resource, RESOURCES};

static COMPRESSED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/schemas.json.zst"));

/// The decompressed schemas and, per served kind, its component name.
struct Schemas {
    schemas: Map<String, Value>,
    /// (group, kind) → component name.
    kinds: HashMap<(&'static str, &'static str), String>,
}

fn built_in() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let json = zstd::decode_all(COMPRESSED).expect("embedded schemas decompress");
        let mut schemas: Map<String, Value> =
            serde_json::from_slice(&json).expect("embedded schemas are JSON");
        let mut kinds = HashMap::new();
        for r in RESOURCES {
            if let Some(name) = schema_name_in(&schemas, r) {
                let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
                schemas[&name]["x-kubernetes-group-version-kind"] = gvk;
                kinds.insert((r.group, r.kind), name);
            }
        }
        for (ty, field, key) in PATCH_MERGE {
            if let Some(prop) = schemas
                .get_mut(*ty)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(*field))
            {
                prop["x-kubernetes-patch-strategy"] = json!("merge");
                if !key.is_empty() {
                    prop["x-kubernetes-patch-merge-key"] = json!(key);
                }
            }
        }
        Schemas { schemas, kinds }
    })
}

/// Every component schema, with GVK and patch-strategy extensions added.
pub fn schemas() -> &'static Map<String, Value> {
    &built_in().schemas
}

/// Lists a strategic merge patch merges instead of replacing: (type, field, merge key; "" for
/// a list of primitives merged as a set). These are properties of the Kubernetes types (their
/// `patchStrategy`/`patchMergeKey`); k8s-openapi's schemas do not carry them, so they are
/// added to the served schemas here, where kubectl reads them to compute `apply` patches and
/// `handlers::strategic` reads them to apply patches.
const PATCH_MERGE: &[(&str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "name"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "type"),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "type",
    ),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "type"),
];

/// The schema of `resource`'s kind, if served.
pub fn kind_schema(resource: &Resource) -> Option<&'static Value> {
    if let Some(custom) = resource.custom {
        return Some(&custom.schema);
    }
    schema_name(resource).and_then(|n| schemas().get(n))
}

/// The component name of `resource`'s kind (`io.k8s.api.core.v1.ConfigMap`).
pub fn schema_name(resource: &Resource) -> Option<&'static str> {
    if let Some(custom) = resource.custom {
        return Some(custom.schema_name);
    }
    built_in()
        .kinds
        .get(&(resource.group, resource.kind))
        .map(String::as_str)
}

fn schema_name_in(schemas: &Map<String, Value>, r: &Resource) -> Option<String> {
    let suffix = format!(".{}.{}", r.version, r.kind);
    let package = if r.group.is_empty() {
        "core"
    } else {
        r.group.split('.').next().unwrap_or(r.group)
    };
    let mut candidates = schemas.keys().filter(|k| k.ends_with(&suffix));
    let first = candidates.next()?;
    let rest: Vec<&String> = candidates.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    std::iter::once(first)
        .chain(rest)
        .find(|k| k.contains(&format!(".{package}.{}", r.version)))
        .cloned()
}

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is, with a hash of its content (the
/// built-in documents' entries are made once: they are fixed for a build).
pub fn index(catalog: &Catalog) -> Value {
    static BUILTIN: OnceLock<Map<String, Value>> = OnceLock::new();
    let builtin = Catalog::default();
    let mut paths = BUILTIN
        .get_or_init(|| {
            let mut paths = Map::new();
            for (group, version) in builtin.group_versions() {
                add_index_entry(&builtin, group, version, &mut paths);
            }
            paths
        })
        .clone();
    for (group, version) in catalog.group_versions() {
        if !paths.contains_key(&doc_path(group, version)) {
            add_index_entry(catalog, group, version, &mut paths);
        }
    }
    json!({ "paths": paths })
}

fn add_index_entry(catalog: &Catalog, group: &str, version: &str, paths: &mut Map<String, Value>) {
    let doc = group_version(catalog, group, version).expect("served group version");
    let hash = fnv1a(&serde_json::to_vec(&doc).unwrap_or_default());
    let path = doc_path(group, version);
    paths.insert(
        path.clone(),
        json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash:016X}")}),
    );
}

/// The document for one group version, `None` when nothing is served there.
pub fn group_version(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = catalog.in_group_version(group, version).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut roots = BTreeSet::new();
    let mut components = Map::new();
    let mut todo: Vec<String> = Vec::new();
    for r in &served {
        let Some(kind_schema) = schema_name(r) else {
            continue;
        };
        if let Some(custom) = r.custom {
            // A definition's schema is not among the built-in components.
            components.insert(kind_schema.to_owned(), custom.schema.clone());
            collect_refs(&custom.schema, &mut todo);
        } else {
            roots.insert(kind_schema.to_owned());
        }
        resource_paths(r, kind_schema, &mut paths);
    }
    for common in [
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    ] {
        roots.insert(common.to_owned());
    }
    let all = schemas();
    todo.extend(roots);
    while let Some(name) = todo.pop() {
        if components.contains_key(&name) {
            continue;
        }
        let Some(schema) = all.get(&name) else {
            continue;
        };
        collect_refs(schema, &mut todo);
        components.insert(name, schema.clone());
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::VersionInfo::current().git_version},
        "paths": paths,
        "components": {"schemas": components},
    }))
}

/// `/openapi/v2`: one Swagger 2.0 document for everything served, converted from the v3
/// documents (refs to `#/definitions/`, bodies as `in: body` parameters, parameter schemas
/// inlined). For clients and tools that still read v2; kubectl 1.35 reads v3.
pub fn v2(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (group, version) in catalog.group_versions() {
        let Some(doc) = group_version(catalog, group, version) else {
            continue;
        };
        if let Some(schemas) = doc["components"]["schemas"].as_object() {
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| v2_refs(schema.clone()));
            }
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut ops = Map::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                ops.insert(method.clone(), v2_operation(op));
            }
            paths.insert(path.clone(), Value::Object(ops));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::version::VersionInfo::current().git_version},
        "paths": paths,
        "definitions": definitions,
    })
}

/// A v3 schema with its refs pointing at v2 `definitions`.
fn v2_refs(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r.trim_start_matches("#/components/schemas/");
                        (k, Value::String(format!("#/definitions/{name}")))
                    }
                    (_, v) => (k, v2_refs(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(v2_refs).collect()),
        other => other,
    }
}

fn v2_operation(op: &Value) -> Value {
    let mut out = op.clone();
    let map = out.as_object_mut().expect("operations are objects");
    let mut params: Vec<Value> = map
        .remove("parameters")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|mut p| {
            if let Some(Value::Object(schema)) = p.as_object_mut().and_then(|m| m.remove("schema"))
            {
                for (k, v) in schema {
                    p[k] = v;
                }
            }
            p
        })
        .collect();
    let mut consumes = Vec::new();
    if let Some(body) = map.remove("requestBody") {
        let content = body["content"].as_object().cloned().unwrap_or_default();
        consumes.extend(content.keys().cloned());
        let schema = content
            .values()
            .next()
            .map_or(json!({"type": "object"}), |c| v2_refs(c["schema"].clone()));
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    map.insert("parameters".into(), Value::Array(params));
    if !consumes.is_empty() {
        map.insert("consumes".into(), json!(consumes));
    }
    map.insert(
        "produces".into(),
        json!(["application/json", "application/yaml"]),
    );
    if let Some(Value::Object(responses)) = map.get_mut("responses") {
        for response in responses.values_mut() {
            if let Some(schema) = response
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().next())
                .map(|c| v2_refs(c["schema"].clone()))
            {
                response["schema"] = schema;
            }
            if let Some(r) = response.as_object_mut() {
                r.remove("content");
            }
        }
    }
    out
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    out.push(name.to_owned());
                }
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}, "uniqueItems": true})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": format!("{name} of the object"), "schema": {"type": "string"}, "uniqueItems": true})
}

/// The write parameters kube-apiserver documents.
fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All"),
        query("fieldManager", "A name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "How the server treats unknown fields in the request: Ignore, Warn or Strict (the default)."),
    ]
}

fn list_params() -> Vec<Value> {
    [
        (
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        (
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        (
            "limit",
            "The maximum number of responses to return for a list call.",
        ),
        (
            "continue",
            "The continue option from the previous page of a list.",
        ),
        (
            "resourceVersion",
            "Where to start a watch (or what a list must be at least as recent as).",
        ),
        (
            "watch",
            "Watch for changes to the described resources instead of listing them.",
        ),
        (
            "allowWatchBookmarks",
            "Request watch events of type BOOKMARK.",
        ),
        ("timeoutSeconds", "Timeout for the list/watch call."),
    ]
    .iter()
    .map(|(n, d)| query(n, d))
    .collect()
}

fn resource_paths(r: &Resource, kind_schema: &str, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let scope = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{scope}/{{name}}");
    let tag = if r.group.is_empty() {
        "core_v1".to_owned()
    } else {
        format!(
            "{}_{}",
            r.group.split('.').next().unwrap_or(r.group),
            r.version
        )
    };
    let one = json!({"application/json": {"schema": schema_ref(kind_schema)}, "application/yaml": {"schema": schema_ref(kind_schema)}});
    let status = json!({"application/json": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Status")}});
    let op = |action: &str, id: String, params: Vec<Value>, body: Option<Value>, ok: Value| {
        let mut o = json!({
            "tags": [tag],
            "operationId": id,
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": ok}, "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if let Some(content) = body {
            o["requestBody"] = json!({"required": true, "content": content});
        }
        o
    };
    let id = |verb: &str| format!("{verb}{}", r.kind);
    let mut scope_params = vec![];
    if r.namespaced {
        scope_params.push(path_param("namespace"));
    }
    let mut item_params = scope_params.clone();
    item_params.push(path_param("name"));
    let patch_types = json!({
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
    });
    let with = |mut base: Vec<Value>, extra: Vec<Value>| {
        base.extend(extra);
        base
    };
    paths.insert(
        scope.clone(),
        json!({
            "get": op("list", id("list"), with(scope_params.clone(), list_params()), None, json!({"application/json": {"schema": {"type": "object"}}})),
            "post": op("post", id("create"), with(scope_params.clone(), write_params()), Some(one.clone()), one.clone()),
            "delete": op("deletecollection", id("deletecollection"), with(scope_params.clone(), list_params()), None, status.clone()),
        }),
    );
    paths.insert(
        item,
        json!({
            "get": op("get", id("read"), item_params.clone(), None, one.clone()),
            "put": op("put", id("replace"), with(item_params.clone(), write_params()), Some(one.clone()), one.clone()),
            "patch": op("patch", id("patch"), with(item_params.clone(), write_params()), Some(patch_types), one.clone()),
            "delete": op("delete", id("delete"), with(item_params, vec![query("dryRun", "Valid value: All")]), None, status),
        }),
    );
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fields of `object` that `resource`'s schema does not know, as JSON paths
/// (`.spec.replicaz`, `.data[0]`), in document order.
pub fn unknown_fields(resource: &Resource, object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(schema) = kind_schema(resource) {
        walk(schema, object, String::new(), &mut found);
    }
    found
}

/// Removes the fields at `paths` (as [`unknown_fields`] reports them).
pub fn remove_fields(object: &mut Value, paths: &[String]) {
    for path in paths {
        remove_path(object, path);
    }
}

/// Resolves `$ref`s (and `allOf: [$ref]` wrappers) to the schema they name.
pub fn resolve(schema: &Value) -> &Value {
    let mut s = schema;
    for _ in 0..8 {
        if let Some(Value::String(r)) = s.get("$ref") {
            match r
                .strip_prefix("#/components/schemas/")
                .and_then(|n| schemas().get(n))
            {
                Some(target) => s = target,
                None => return s,
            }
        } else if let Some(Value::Array(all)) = s.get("allOf") {
            match all.as_slice() {
                [one] => s = one,
                _ => return s,
            }
        } else {
            return s;
        }
    }
    s
}

fn walk(schema: &Value, value: &Value, path: String, found: &mut Vec<String>) {
    let schema = resolve(schema);
    // Free-form objects (x-kubernetes-preserve-unknown-fields, RawExtension) accept anything.
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    walk(sub, child, child_path, found);
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    walk(sub, child, child_path, found);
                } else if properties.is_some() && additional != Some(&Value::Bool(true)) {
                    found.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    walk(sub, child, format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn remove_path(object: &mut Value, path: &str) {
    // Paths are `.a.b[3].c`; the last segment is a key (only object fields are unknown).
    let Some((parent, key)) = path.rsplit_once('.') else {
        return;
    };
    let mut cur = object;
    for seg in parent.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        let Some(next) = cur.get_mut(name) else {
            return;
        };
        cur = next;
        for idx in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Some(next) = idx.parse::<usize>().ok().and_then(|i| cur.get_mut(i)) else {
                return;
            };
            cur = next;
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(plural: &str) -> &'static Resource {
        RESOURCES.iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn every_served_kind_has_a_schema_with_its_gvk() {
        // The metrics API's kinds are not among k8s-openapi's types.
        for r in RESOURCES
            .iter()
            .filter(|r| r.group != crate::resource_metrics::GROUP)
        {
            let name = schema_name(r).unwrap_or_else(|| panic!("no schema for {}", r.kind));
            let gvk = &schemas()[name]["x-kubernetes-group-version-kind"][0];
            assert_eq!(gvk["kind"], r.kind, "{name}");
        }
        assert_eq!(
            schema_name(resource("configmaps")).unwrap(),
            "io.k8s.api.core.v1.ConfigMap"
        );
        assert_eq!(
            schema_name(resource("leases")).unwrap(),
            "io.k8s.api.coordination.v1.Lease"
        );
        assert_eq!(
            schema_name(resource("events")).unwrap(),
            "io.k8s.api.core.v1.Event"
        );
    }

    #[test]
    fn documents_are_complete() {
        let idx = index(&Catalog::default());
        assert!(idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
        assert!(idx["paths"]["apis/coordination.k8s.io/v1"].is_object());
        let doc = group_version(&Catalog::default(), "", "v1").unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "ConfigMap"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        // Every $ref resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        let components = doc["components"]["schemas"].as_object().unwrap();
        for r in refs {
            assert!(components.contains_key(&r), "dangling $ref {r}");
        }
        assert!(components.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(group_version(&Catalog::default(), "widgets.example.com", "v1").is_none());
        let apps = group_version(&Catalog::default(), "apps", "v1").unwrap();
        assert!(
            apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
                .is_object()
        );
    }

    #[test]
    fn swagger_v2_has_every_path_with_resolvable_refs() {
        let doc = v2(&Catalog::default());
        assert_eq!(doc["swagger"], "2.0");
        let create = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
        let params = create["parameters"].as_array().unwrap();
        let body = params.iter().find(|p| p["in"] == "body").unwrap();
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ConfigMap"
        );
        let ns = params.iter().find(|p| p["name"] == "namespace").unwrap();
        assert_eq!(ns["type"], "string", "parameter schemas are inlined");
        assert!(ns.get("schema").is_none());
        assert_eq!(
            create["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ConfigMap"
        );
        assert!(create.get("requestBody").is_none());
        assert!(doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"].is_object());
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("#/components/"), "a v3 ref is left");
        let definitions = doc["definitions"].as_object().unwrap();
        for piece in text.split("\"#/definitions/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(definitions.contains_key(name), "dangling ref {name}");
        }
    }

    #[test]
    fn unknown_fields_are_found_and_removed() {
        let cm = resource("configmaps");
        let mut obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labelz": {"x": "y"}, "labels": {"any-key": "v"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": "u", "colour": 1}]},
            "data": {"k": "v"},
            "extra": true,
        });
        assert_eq!(
            unknown_fields(cm, &obj),
            [
                ".extra",
                ".metadata.labelz",
                ".metadata.ownerReferences[0].colour"
            ]
        );
        let unknown = unknown_fields(cm, &obj);
        remove_fields(&mut obj, &unknown);
        assert!(unknown_fields(cm, &obj).is_empty());
        assert_eq!(obj["data"]["k"], "v");
        assert_eq!(obj["metadata"]["ownerReferences"][0]["name"], "n");
        assert!(unknown_fields(
            resource("namespaces"),
            &json!({"spec": {"finalizers": ["kubernetes"]}})
        )
        .is_empty());
    }
}
