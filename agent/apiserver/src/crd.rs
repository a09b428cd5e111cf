//! CustomResourceDefinitions: checking a definition, turning it into served resources, and
//! checking custom objects against its schema.
//!
//! A definition (`apiextensions.k8s.io/v1`) is decoded with k8s-openapi's typed struct and
//! held to kube-apiserver's rules ([`check_definition`]: the name is `<plural>.<group>`, one
//! storage version, a structural schema per version, ...). Its `status` is the server's: the
//! names are accepted and the definition is `Established` as soon as it is stored, since
//! nothing here needs time to start serving it. Each served version becomes a [`Resource`]
//! row of the [`Catalog`] ([`catalog`]); custom objects are stored under
//! `/registry/<group>/<plural>/` whatever their version (conversion strategy `None`: versions
//! differ only in `apiVersion`, which reads rewrite, [`set_api_version`]).
//!
//! Objects are checked against their version's `openAPIV3Schema` ([`check_object`]) after
//! [`crate::openapi::unknown_fields`] pruned (or, with `fieldValidation=Strict`, refused)
//! fields the schema does not declare: `null`s of non-nullable fields are dropped, `default`s
//! filled in, then `type`, `required`, `enum`, bounds, lengths and `pattern` checked, every
//! failure reported by its field path as kube-apiserver words it.
//!
//! Not supported: CEL rules (`x-kubernetes-validations` are ignored), conversion webhooks
//! (refused: versions must convert as `None`), `selectableFields`, `x-kubernetes-list-type`
//! uniqueness.
//!
//! Rows are `&'static` like the built-in ones: each distinct definition version is allocated
//! once and interned ([`intern`]), so re-reading an unchanged definition reuses its row and
//! memory grows only with definitions that change (a few kB per changed version).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cairn_store::Store;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::resources::{Catalog, Resource, ALL_VERBS, RESOURCES};

/// What a definition says about one served version beyond the [`Resource`] row.
#[derive(Debug, PartialEq)]
pub struct Custom {
    /// The OpenAPI component name (`com.example.v1.Widget`).
    pub schema_name: &'static str,
    /// The version's schema as served: `metadata` is `ObjectMeta`, `apiVersion` and `kind`
    /// strings, tagged with `x-kubernetes-group-version-kind`.
    pub schema: Value,
    /// `additionalPrinterColumns` (`kubectl get`); empty: Name and Age.
    pub columns: Vec<Column>,
    /// Where the `scale` subresource reads and writes.
    pub scale: Option<ScalePaths>,
}

// serde_json numbers are never NaN, so `Value` equality is an equivalence.
impl Eq for Custom {}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date` (shown as an age).
    pub type_: String,
    pub format: String,
    pub description: String,
    /// 0: always shown; more: `-o wide` only.
    pub priority: i64,
    /// A JSONPath into the object (`.spec.replicas`).
    pub json_path: String,
}

/// The `scale` subresource's JSON paths (`.spec.replicas`, `.status.replicas`,
/// `.status.selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

const GROUP: &str = "apiextensions.k8s.io";

/// The definitions' resource row.
pub fn definitions() -> &'static Resource {
    crate::resources::find(GROUP, "v1", "customresourcedefinitions")
        .expect("customresourcedefinitions are served")
}

/// Whether `resource` is CustomResourceDefinitions (writes change the catalog).
pub fn is_definitions(resource: &Resource) -> bool {
    resource.group == GROUP && resource.kind == "CustomResourceDefinition"
}

/// The catalog of the definitions stored in `store`. A stored definition that cannot be read
/// is skipped with a message (it was checked when written).
pub fn catalog(store: &dyn Store) -> Result<Catalog, cairn_store::StoreError> {
    let page = store.list(&definitions().prefix(None), None, 0, None)?;
    let mut custom = Vec::new();
    for kv in page.items {
        match serde_json::from_slice::<Value>(&kv.value) {
            Ok(crd) => custom.extend(resources(&crd)),
            Err(e) => eprintln!(
                "cairn: apiserver: stored definition {} is not JSON: {e}",
                kv.key
            ),
        }
    }
    Ok(Catalog::with_custom(custom))
}

/// The resources a (checked) definition serves: one per served version.
pub fn resources(crd: &Value) -> Vec<&'static Resource> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = &spec["names"];
    let (Some(kind), Some(plural)) = (names["kind"].as_str(), names["plural"].as_str()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"] != Value::Bool(true) {
            continue;
        }
        let key = serde_json::to_string(&json!([group, names, spec["scope"], version]))
            .unwrap_or_default();
        out.push(intern(key, || {
            let name = version["name"].as_str().unwrap_or("");
            let singular = names["singular"]
                .as_str()
                .map_or_else(|| kind.to_ascii_lowercase(), str::to_owned);
            let subresources = &version["subresources"];
            let has = |s: &str| subresources.get(s).is_some_and(Value::is_object);
            Resource {
                group: leak(group),
                version: leak(name),
                kind: leak(kind),
                plural: leak(plural),
                singular: leak(&singular),
                short_names: leak_list(&names["shortNames"]),
                namespaced: spec["scope"] == "Namespaced",
                verbs: ALL_VERBS,
                field_labels: &[],
                categories: leak_list(&names["categories"]),
                subresources: match (has("status"), has("scale")) {
                    (true, true) => &["status", "scale"],
                    (true, false) => &["status"],
                    (false, true) => &["scale"],
                    (false, false) => &[],
                },
                custom: Some(Box::leak(Box::new(custom_of(group, name, kind, version)))),
            }
        }));
    }
    out
}

fn custom_of(group: &str, version: &str, kind: &str, v: &Value) -> Custom {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let schema_name = leak(&format!("{}.{version}.{kind}", reversed.join(".")));
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    if !schema.is_object() {
        schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    }
    let props = schema
        .as_object_mut()
        .expect("object")
        .entry("properties")
        .or_insert_with(|| json!({}));
    props["metadata"] =
        json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
    for (field, what) in [
        (
            "apiVersion",
            "APIVersion defines the versioned schema of this representation of an object.",
        ),
        (
            "kind",
            "Kind is a string value representing the REST resource this object represents.",
        ),
    ] {
        props[field] = json!({"type": "string", "description": what});
    }
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": group, "version": version, "kind": kind}]);
    let columns = v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Column {
            name: c["name"].as_str().unwrap_or("").to_owned(),
            type_: c["type"].as_str().unwrap_or("string").to_owned(),
            format: c["format"].as_str().unwrap_or("").to_owned(),
            description: c["description"].as_str().unwrap_or("").to_owned(),
            priority: c["priority"].as_i64().unwrap_or(0),
            json_path: c["jsonPath"].as_str().unwrap_or("").to_owned(),
        })
        .collect();
    let scale = v["subresources"]["scale"].as_object().map(|s| ScalePaths {
        spec_replicas: s["specReplicasPath"]
            .as_str()
            .unwrap_or(".spec.replicas")
            .to_owned(),
        status_replicas: s["statusReplicasPath"]
            .as_str()
            .unwrap_or(".status.replicas")
            .to_owned(),
        label_selector: s
            .get("labelSelectorPath")
            .and_then(Value::as_str)
            .map(str::to_owned),
    });
    Custom {
        schema_name,
        schema,
        columns,
        scale,
    }
}

/// The row for `key`, made by `make` the first time that key is seen.
fn intern(key: String, make: impl FnOnce() -> Resource) -> &'static Resource {
    static ROWS: OnceLock<Mutex<HashMap<String, &'static Resource>>> = OnceLock::new();
    let mut rows = ROWS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    rows.entry(key)
        .or_insert_with(|| Box::leak(Box::new(make())))
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn leak_list(list: &Value) -> &'static [&'static str] {
    let items: Vec<&'static str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Box::leak(items.into_boxed_slice())
}

/// The store prefix of a definition's objects (all versions, all namespaces).
pub fn objects_prefix(crd: &Value) -> String {
    format!(
        "/registry/{}/{}/",
        crd["spec"]["group"].as_str().unwrap_or(""),
        crd["spec"]["names"]["plural"].as_str().unwrap_or("")
    )
}

/// Objects read through `resource` carry its `apiVersion` (versions convert as `None`).
pub fn set_api_version(resource: &Resource, body: &mut Value) {
    if resource.custom.is_none() {
        return;
    }
    let api_version = Value::String(resource.api_version());
    if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
        items
            .iter_mut()
            .for_each(|item| item["apiVersion"] = api_version.clone());
    } else if body.get("metadata").is_some() {
        body["apiVersion"] = api_version;
    }
}

// --- Definitions -------------------------------------------------------------------------

/// Checks a definition as kube-apiserver does, fills in its defaults (`singular`,
/// `listKind`, conversion `None`) and sets its `status` (names accepted, `Established`,
/// stored versions). `Err` lists every problem, a line each.
pub fn check_definition(obj: &mut Value) -> Result<(), String> {
    let crd: CustomResourceDefinition = CustomResourceDefinition::deserialize(&*obj)
        .map_err(|e| format!("the object does not match its schema: {e}"))?;
    let spec = &crd.spec;
    let names = &spec.names;
    let mut errors = Vec::new();
    let name = crd.metadata.name.as_deref().unwrap_or("");
    if name != format!("{}.{}", names.plural, spec.group) {
        errors.push(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    if !spec.group.contains('.') || crate::meta::check_name(&spec.group, false).is_err() {
        errors.push(format!(
            "spec.group: Invalid value: {:?}: should be a domain with at least one dot",
            spec.group
        ));
    } else if RESOURCES.iter().any(|r| r.group == spec.group) {
        errors.push(format!(
            "spec.group: Forbidden: {:?} is served by the API server itself",
            spec.group
        ));
    }
    for (field, value) in [
        ("plural", Some(names.plural.as_str())),
        ("singular", names.singular.as_deref()),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            if crate::meta::check_name(v, true).is_err() {
                errors.push(format!(
                    "spec.names.{field}: Invalid value: {v:?}: a lowercase RFC 1123 label is required"
                ));
            }
        }
    }
    if names.plural.is_empty() {
        errors.push("spec.names.plural: Required value".into());
    }
    if !is_kind(&names.kind) {
        errors.push(format!(
            "spec.names.kind: Invalid value: {:?}: must start with a letter and hold only letters and digits",
            names.kind
        ));
    }
    if !matches!(spec.scope.as_str(), "Namespaced" | "Cluster") {
        errors.push(format!(
            "spec.scope: Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
            spec.scope
        ));
    }
    if let Some(strategy) = spec.conversion.as_ref().map(|c| c.strategy.as_str()) {
        if strategy != "None" {
            errors.push(format!(
                "spec.conversion.strategy: Unsupported value: {strategy:?}: versions are served with conversion strategy \"None\" only"
            ));
        }
    }
    if spec.versions.is_empty() {
        errors.push("spec.versions: Required value: must have at least one version".into());
    }
    let storage: Vec<&str> = spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    if !spec.versions.is_empty() && storage.len() != 1 {
        errors.push(format!(
            "spec.versions: Invalid value: must have exactly one version marked as storage version (found {})",
            storage.len()
        ));
    }
    for (i, v) in spec.versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        if crate::meta::check_name(&v.name, true).is_err()
            || !v.name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            errors.push(format!(
                "{at}.name: Invalid value: {:?}: must be a DNS-1035 label",
                v.name
            ));
        }
        if spec.versions[..i].iter().any(|o| o.name == v.name) {
            errors.push(format!("{at}.name: Duplicate value: {:?}", v.name));
        }
        let schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        match schema {
            None => errors.push(format!(
                "{at}.schema.openAPIV3Schema: Required value: schemas are required"
            )),
            Some(s) if s.type_.as_deref() != Some("object") => errors.push(format!(
                "{at}.schema.openAPIV3Schema.type: Required value: must be object at the root"
            )),
            Some(_) => check_schema(
                &obj["spec"]["versions"][i]["schema"]["openAPIV3Schema"],
                &format!("{at}.schema.openAPIV3Schema"),
                &mut errors,
            ),
        }
        if let Some(scale) = v.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            if !scale.spec_replicas_path.starts_with(".spec.") {
                errors.push(format!(
                    "{at}.subresources.scale.specReplicasPath: Invalid value: {:?}: should be a json path under .spec",
                    scale.spec_replicas_path
                ));
            }
            if !scale.status_replicas_path.starts_with(".status.") {
                errors.push(format!(
                    "{at}.subresources.scale.statusReplicasPath: Invalid value: {:?}: should be a json path under .status",
                    scale.status_replicas_path
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }

    // Defaults and status.
    let kind = names.kind.clone();
    let singular = names
        .singular
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let list_kind = names
        .list_kind
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{kind}List"));
    obj["spec"]["names"]["singular"] = json!(singular);
    obj["spec"]["names"]["listKind"] = json!(list_kind);
    if obj["spec"].get("conversion").is_none_or(Value::is_null) {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let mut stored: Vec<String> = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    if let Some(now) = storage.first() {
        if !stored.iter().any(|s| s == now) {
            stored.push((*now).to_owned());
        }
    }
    // The definition's creation time: conditions do not change on later writes.
    let since = crate::meta::meta_str(obj, "creationTimestamp").to_owned();
    obj["status"] = json!({
        "acceptedNames": obj["spec"]["names"].clone(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since},
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// The structural rules a schema must follow for objects to be checked and pruned by it:
/// known types, object-valued `properties` and `items`, string `required` lists, a
/// compilable `pattern`, and `x-kubernetes-int-or-string` without a type of its own.
fn check_schema(schema: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        errors.push(format!("{at}: Invalid value: a schema must be an object"));
        return;
    };
    if let Some(t) = map.get("type") {
        match t.as_str() {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            _ => errors.push(format!(
                "{at}.type: Unsupported value: {t}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""
            )),
        }
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            errors.push(format!(
                "{at}.type: Forbidden: must be empty if x-kubernetes-int-or-string is true"
            ));
        }
    }
    if let Some(props) = map.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (name, sub) in props {
                    check_schema(sub, &format!("{at}.properties[{name}]"), errors);
                }
            }
            None => errors.push(format!("{at}.properties: Invalid value: must be an object")),
        }
    }
    match map.get("items") {
        None => {}
        Some(items @ Value::Object(_)) => check_schema(items, &format!("{at}.items"), errors),
        Some(_) => errors.push(format!(
            "{at}.items: Forbidden: items must be a schema object, not a list of schemas"
        )),
    }
    if let Some(Value::Object(_)) = map.get("additionalProperties") {
        check_schema(
            &map["additionalProperties"],
            &format!("{at}.additionalProperties"),
            errors,
        );
    }
    if let Some(required) = map.get("required") {
        if !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
        {
            errors.push(format!(
                "{at}.required: Invalid value: must be a list of field names"
            ));
        }
    }
    if let Some(pattern) = map.get("pattern") {
        let ok = pattern
            .as_str()
            .is_some_and(|p| regex_lite::Regex::new(p).is_ok() || !p.is_ascii());
        if !ok {
            errors.push(format!(
                "{at}.pattern: Invalid value: {pattern}: not a valid regular expression"
            ));
        }
    }
}

fn is_kind(kind: &str) -> bool {
    kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
}

// --- Custom objects ----------------------------------------------------------------------

/// Drops `null`s the schema does not allow, fills in `default`s and checks `obj` against
/// `custom`'s schema. `Err` lists every failure by field path, a line each.
pub fn check_object(custom: &Custom, obj: &mut Value) -> Result<(), String> {
    let mut errors = Vec::new();
    check(&custom.schema, obj, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn check(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<String>) {
    let root = path.is_empty();
    if !check_type(schema, value, path, errors) {
        return;
    }
    match value {
        Value::Object(map) => check_map(schema, map, path, root, errors),
        Value::Array(items) => {
            let n = items.len();
            bound(schema, "minItems", "maxItems", n, path, "items", errors);
            if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    check(sub, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count();
            bound(schema, "minLength", "maxLength", n, path, "chars", errors);
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                if matches_pattern(pattern, s) == Some(false) {
                    errors.push(format!(
                        "{path}: Invalid value: {s:?}: {path} in body should match '{pattern}'"
                    ));
                }
            }
        }
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                check_number(schema, v, path, errors);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(format!(
                "{path}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ));
        }
    }
}

fn check_map(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    root: bool,
    errors: &mut Vec<String>,
) {
    // `metadata`, `apiVersion` and `kind` are the API server's to check.
    let skip = |name: &str| root && matches!(name, "metadata" | "apiVersion" | "kind");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if skip(name) {
                continue;
            }
            let nullable = sub.get("nullable") == Some(&Value::Bool(true));
            if map.get(name) == Some(&Value::Null) && !nullable {
                map.remove(name);
            }
            if !map.contains_key(name) {
                if let Some(default) = sub.get("default") {
                    map.insert(name.clone(), default.clone());
                }
            }
        }
        for (name, child) in map.iter_mut() {
            if let Some(sub) = props.get(name).filter(|_| !skip(name)) {
                check(sub, child, &child_path(path, name), errors);
            }
        }
    } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        for (name, child) in map.iter_mut() {
            check(sub, child, &format!("{path}[{name}]"), errors);
        }
    }
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(name) && !skip(name) {
            errors.push(format!("{}: Required value", child_path(path, name)));
        }
    }
    let n = map.len();
    bound(
        schema,
        "minProperties",
        "maxProperties",
        n,
        path,
        "properties",
        errors,
    );
}

/// Whether `value` has the schema's type; reports it when not.
fn check_type(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) -> bool {
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ok = match (schema.get("type").and_then(Value::as_str), value) {
        (_, Value::Null) => schema.get("nullable") == Some(&Value::Bool(true)),
        _ if int_or_string => {
            matches!(value, Value::String(_))
                || value.as_i64().is_some()
                || value.as_u64().is_some()
        }
        (None, _) => true,
        (Some("object"), v) => v.is_object(),
        (Some("array"), v) => v.is_array(),
        (Some("string"), v) => v.is_string(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("number"), v) => v.is_number(),
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some(_), _) => true,
    };
    if !ok {
        let want = if int_or_string {
            "integer or string"
        } else {
            schema.get("type").and_then(Value::as_str).unwrap_or("")
        };
        let got = type_name(value);
        let at = if path.is_empty() { "body" } else { path };
        errors.push(format!(
            "{at}: Invalid value: \"{got}\": {at} in body must be of type {want}: \"{got}\""
        ));
    }
    ok
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `minItems`/`maxItems`-style bounds on a count.
fn bound(
    schema: &Value,
    min: &str,
    max: &str,
    n: usize,
    path: &str,
    what: &str,
    errors: &mut Vec<String>,
) {
    let n = n as u64;
    if let Some(lo) = schema.get(min).and_then(Value::as_u64).filter(|lo| n < *lo) {
        errors.push(format!(
            "{path}: Invalid value: {n}: {path} in body should have at least {lo} {what}"
        ));
    }
    if let Some(hi) = schema.get(max).and_then(Value::as_u64).filter(|hi| n > *hi) {
        errors.push(format!(
            "{path}: Too many: {n}: must have at most {hi} {what}"
        ));
    }
}

fn check_number(schema: &Value, v: f64, path: &str, errors: &mut Vec<String>) {
    let flag = |f: &str| schema.get(f) == Some(&Value::Bool(true));
    if let Some(lo) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMinimum");
        if v < lo || (exclusive && v == lo) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body should be {rel} {lo}"
            ));
        }
    }
    if let Some(hi) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMaximum");
        if v > hi || (exclusive && v == hi) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body should be {rel} {hi}"
            ));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 && (v / m).fract() != 0.0 {
            errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body should be a multiple of {m}"
            ));
        }
    }
}

/// Whether `s` matches `pattern`; `None` when the pattern is beyond the regex engine (it is
/// then not enforced rather than refusing valid objects).
fn matches_pattern(pattern: &str, s: &str) -> Option<bool> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<regex_lite::Regex>>>> = OnceLock::new();
    let mut cache = COMPILED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(pattern.to_owned())
        .or_insert_with(|| regex_lite::Regex::new(pattern).ok())
        .as_ref()
        .map(|re| re.is_match(s))
}

// --- JSONPath ----------------------------------------------------------------------------

/// The values at a printer column's or scale subresource's path: `.a.b`, `.a[0]`, `.a[*].b`,
/// `.conditions[?(@.type=="Ready")].status` (the forms definitions use). Braces around the
/// expression (`{.spec.x}`) are accepted.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut current = vec![obj];
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = bracket_end(r) else {
                return Vec::new();
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            current = current.into_iter().flat_map(|v| index(v, inner)).collect();
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            current = current.into_iter().filter_map(|v| v.get(field)).collect();
        } else {
            return Vec::new();
        }
    }
    current
}

/// Where the `]` closing a bracket expression is (quotes may hold `]`).
fn bracket_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn index<'a>(v: &'a Value, inner: &str) -> Vec<&'a Value> {
    let items = || v.as_array().into_iter().flatten();
    if inner == "*" {
        return match v {
            Value::Object(m) => m.values().collect(),
            _ => items().collect(),
        };
    }
    if let Ok(i) = inner.parse::<i64>() {
        let list = v.as_array().map_or(&[][..], Vec::as_slice);
        let i = if i < 0 { list.len() as i64 + i } else { i };
        return usize::try_from(i)
            .ok()
            .and_then(|i| list.get(i))
            .into_iter()
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        // `@.field=="value"` (or `!=`), the filters definitions' columns use.
        let (field, negate, want) = match (filter.split_once("!="), filter.split_once("==")) {
            (Some((f, w)), _) => (f, true, w),
            (None, Some((f, w))) => (f, false, w),
            _ => return Vec::new(),
        };
        let field = field.trim().trim_start_matches('@');
        let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
        return items()
            .filter(|item| {
                let got = json_path(item, field);
                let equal = got.first().is_some_and(|g| match g {
                    Value::String(s) => s == want,
                    Value::Number(n) => n.as_f64().is_some() && want.parse().ok() == n.as_f64(),
                    Value::Bool(b) => want.parse() == Ok(*b),
                    _ => false,
                });
                equal != negate
            })
            .collect();
    }
    let key = inner.trim_matches(|c| c == '"' || c == '\'');
    v.get(key).into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests;
