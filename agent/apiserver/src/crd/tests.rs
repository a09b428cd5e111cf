//! Definitions, schema checks and JSONPath, without a store (the handler tests and the kubectl
//! tests drive whole definitions through the API).

use serde_json::{json, Value};

use super::*;

/// A definition of `widgets.example.com` with two versions, status and scale.
pub(crate) fn widget_definition() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size", "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Colour", "type": "string", "jsonPath": ".spec.colour", "priority": 1},
                 ],
                 "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "required": ["size"], "properties": {
                            "size": {"type": "integer", "minimum": 0, "maximum": 10},
                            "colour": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                            "port": {"x-kubernetes-int-or-string": true},
                            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "note": {"type": "string", "nullable": true},
                            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        }},
                        "status": {"type": "object", "properties": {
                            "size": {"type": "integer"},
                            "selector": {"type": "string"},
                            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                                "type": {"type": "string"}, "status": {"type": "string"}}}},
                        }},
                    },
                 }}},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            ],
        },
    })
}

fn checked_definition() -> Value {
    let mut crd = widget_definition();
    check_definition(&mut crd).unwrap();
    crd
}

fn v1() -> &'static Resource {
    resources(&checked_definition())
        .into_iter()
        .find(|r| r.version == "v1")
        .unwrap()
}

#[test]
fn definitions_get_defaults_and_status() {
    let crd = checked_definition();
    assert_eq!(crd["spec"]["names"]["singular"], "widget");
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    let established = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Established")
        .unwrap();
    assert_eq!(established["status"], "True");
    assert_eq!(established["lastTransitionTime"], "2026-01-01T00:00:00Z");
    // Checking again changes nothing: an unchanged definition is not rewritten.
    let mut again = crd.clone();
    check_definition(&mut again).unwrap();
    assert_eq!(again, crd);
}

#[test]
fn bad_definitions_are_refused_with_every_reason() {
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut crd = widget_definition();
        edit(&mut crd);
        check_definition(&mut crd).unwrap_err()
    };
    let e = refused(&|c| c["metadata"]["name"] = json!("gadgets.example.com"));
    assert!(e.contains("must be spec.names.plural"), "{e}");
    let e = refused(&|c| {
        c["spec"]["group"] = json!("apps");
        c["metadata"]["name"] = json!("widgets.apps");
    });
    assert!(
        e.contains("spec.group") && e.contains("at least one dot"),
        "{e}"
    );
    let e = refused(&|c| {
        c["spec"]["group"] = json!("rbac.authorization.k8s.io");
        c["metadata"]["name"] = json!("widgets.rbac.authorization.k8s.io");
    });
    assert!(e.contains("served by the API server itself"), "{e}");
    let e = refused(&|c| c["spec"]["versions"][1]["storage"] = json!(true));
    assert!(e.contains("exactly one version marked as storage"), "{e}");
    let e = refused(&|c| c["spec"]["versions"][0]["schema"] = Value::Null);
    assert!(
        e.contains("spec.versions[0].schema.openAPIV3Schema: Required value"),
        "{e}"
    );
    let e = refused(&|c| c["spec"]["scope"] = json!("Galaxy"));
    assert!(e.contains("spec.scope: Unsupported value"), "{e}");
    let e = refused(&|c| {
        c["spec"]["conversion"] = json!({"strategy": "Webhook"});
    });
    assert!(e.contains("conversion strategy \"None\" only"), "{e}");
    let e = refused(&|c| c["spec"]["names"]["kind"] = json!("wid get"));
    assert!(e.contains("spec.names.kind"), "{e}");
    let e = refused(&|c| c["spec"]["versions"] = json!("v1"));
    assert!(e.contains("does not match its schema"), "{e}");
    // Schemas the server could not check objects against.
    let e = refused(&|c| {
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["size"]["type"] = json!("int");
    });
    assert!(
        e.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: Unsupported value: \"int\""),
        "{e}"
    );
    let e = refused(&|c| {
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["tags"]["items"] = json!([{"type": "string"}]);
    });
    assert!(e.contains("properties[tags].items: Forbidden"), "{e}");
    let e = refused(&|c| {
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] =
            json!("size");
    });
    assert!(e.contains("expected a sequence"), "{e}");
    let e = refused(&|c| {
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["name"]["pattern"] = json!("([a-z");
    });
    assert!(e.contains("pattern: Invalid value"), "{e}");
    // Several problems: all of them are named.
    let e = refused(&|c| {
        c["spec"]["scope"] = json!("Galaxy");
        c["spec"]["versions"][1]["storage"] = json!(true);
    });
    assert!(e.contains("spec.scope") && e.contains("storage"), "{e}");
}

#[test]
fn each_served_version_is_a_resource_and_rows_are_interned() {
    let crd = checked_definition();
    let rows = resources(&crd);
    assert_eq!(rows.len(), 2);
    let v1 = rows[0];
    assert_eq!(
        (v1.group, v1.version, v1.kind, v1.plural, v1.singular),
        ("example.com", "v1", "Widget", "widgets", "widget")
    );
    assert!(v1.namespaced);
    assert_eq!(v1.short_names, ["wd"]);
    assert_eq!(v1.subresources, ["status", "scale"]);
    assert_eq!(rows[1].subresources, [] as [&str; 0]);
    let custom = v1.custom.unwrap();
    assert_eq!(custom.schema_name, "com.example.v1.Widget");
    assert_eq!(
        custom.schema["x-kubernetes-group-version-kind"][0]["kind"],
        "Widget"
    );
    assert!(custom.schema["properties"]["metadata"]["$ref"]
        .as_str()
        .unwrap()
        .ends_with("ObjectMeta"));
    assert_eq!(custom.scale.as_ref().unwrap().spec_replicas, ".spec.size");
    // The same definition read again gives the same rows, not new allocations.
    assert!(std::ptr::eq(resources(&crd)[0], v1));
    let mut unserved = crd.clone();
    unserved["spec"]["versions"][1]["served"] = json!(false);
    assert_eq!(resources(&unserved).len(), 1);
    // A changed definition is a new row.
    let mut changed = crd;
    changed["spec"]["names"]["shortNames"] = json!(["wdg"]);
    assert!(!std::ptr::eq(resources(&changed)[0], v1));
}

#[test]
fn objects_are_defaulted_and_checked_by_path() {
    let custom = v1().custom.unwrap();
    let mut ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 3, "port": "http", "note": null, "labels": {"a": "b"}, "free": {"any": [1]}}});
    check_object(custom, &mut ok).unwrap();
    assert_eq!(ok["spec"]["colour"], "red", "default filled in");
    assert!(
        ok["spec"]["note"].is_null() && ok["spec"].get("note").is_some(),
        "nullable kept"
    );

    let mut nulls = json!({"spec": {"size": 1, "colour": null}});
    check_object(custom, &mut nulls).unwrap();
    assert_eq!(
        nulls["spec"]["colour"], "red",
        "a null is dropped, then defaulted"
    );

    let failures = |obj: Value| {
        let mut obj = obj;
        check_object(custom, &mut obj).unwrap_err()
    };
    let e = failures(json!({"spec": {"size": "three"}}));
    assert_eq!(
        e,
        "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
    );
    let e = failures(json!({"spec": {"size": 11}}));
    assert_eq!(
        e,
        "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"
    );
    let e = failures(json!({"spec": {}}));
    assert_eq!(e, "spec.size: Required value");
    let e = failures(json!({"spec": {"size": 1, "colour": "green"}}));
    assert!(
        e.starts_with(
            "spec.colour: Unsupported value: \"green\": supported values: \"red\", \"blue\""
        ),
        "{e}"
    );
    let e = failures(json!({"spec": {"size": 1, "name": "ABC"}}));
    assert!(
        e.contains("spec.name in body should match '^[a-z]+$'"),
        "{e}"
    );
    let e = failures(json!({"spec": {"size": 1, "name": "abcdefghij"}}));
    assert!(
        e.contains("spec.name: Too many: 10: must have at most 8 chars"),
        "{e}"
    );
    let e = failures(json!({"spec": {"size": 1, "tags": ["a", "b", "c"]}}));
    assert!(e.contains("spec.tags: Too many: 3"), "{e}");
    let e = failures(json!({"spec": {"size": 1, "tags": [1]}}));
    assert!(e.contains("spec.tags[0]: Invalid value"), "{e}");
    let e = failures(json!({"spec": {"size": 1, "labels": {"a": 1}}}));
    assert!(e.contains("spec.labels[a]"), "{e}");
    let e = failures(json!({"spec": {"size": 1, "port": 1.5}}));
    assert!(e.contains("must be of type integer or string"), "{e}");
    let e = failures(json!({"spec": "big"}));
    assert!(e.starts_with("spec: Invalid value: \"string\""), "{e}");
    // Every failure is reported, not only the first.
    let e = failures(json!({"spec": {"size": -1, "colour": "green"}}));
    assert!(e.contains("spec.size") && e.contains("spec.colour"), "{e}");
}

#[test]
fn json_paths_of_printer_columns() {
    let obj = json!({"spec": {"size": 3, "list": [{"n": 1}, {"n": 2}]},
        "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
    assert_eq!(json_path(&obj, ".spec.size"), [&json!(3)]);
    assert_eq!(json_path(&obj, "{.spec.size}"), [&json!(3)]);
    assert_eq!(json_path(&obj, ".spec.list[1].n"), [&json!(2)]);
    assert_eq!(json_path(&obj, ".spec.list[-1].n"), [&json!(2)]);
    assert_eq!(json_path(&obj, ".spec.list[*].n"), [&json!(1), &json!(2)]);
    assert_eq!(
        json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
        [&json!("True")]
    );
    assert_eq!(
        json_path(&obj, ".status.conditions[?(@.type!='Ready')].type"),
        [&json!("Synced")]
    );
    assert!(json_path(&obj, ".spec.missing").is_empty());
    assert!(json_path(&obj, ".spec.list[9]").is_empty());
    assert!(
        json_path(&obj, "spec").is_empty(),
        "a path starts with a dot"
    );
    assert!(
        json_path(&obj, ".spec.list[0").is_empty(),
        "an open bracket is nothing"
    );
}

#[test]
fn reads_carry_the_requested_version() {
    let crd = checked_definition();
    let beta = resources(&crd)
        .into_iter()
        .find(|r| r.version == "v1beta1")
        .unwrap();
    let mut list = json!({"items": [{"apiVersion": "example.com/v1", "metadata": {}}]});
    set_api_version(beta, &mut list);
    assert_eq!(list["items"][0]["apiVersion"], "example.com/v1beta1");
    let mut one = json!({"apiVersion": "example.com/v1", "metadata": {}});
    set_api_version(beta, &mut one);
    assert_eq!(one["apiVersion"], "example.com/v1beta1");
    assert_eq!(objects_prefix(&crd), "/registry/example.com/widgets/");
}
