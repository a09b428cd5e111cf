//! CustomResourceDefinitions with the real kubectl against the real `cairn server`: a
//! definition applied, waited for and served (discovery, columns, explain, defaults, schema
//! errors, status and scale subresources, a second version, OpenAPI v2 and v3), kept across a
//! restart, and deleted with its objects.

mod common;
use common::{kubectl_path, temp_data_dir, Kubectl, Server};

const DEFINITION: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale:
          specReplicasPath: .spec.size
          statusReplicasPath: .status.size
      additionalPrinterColumns:
        - name: Size
          type: integer
          jsonPath: .spec.size
        - name: Ready
          type: string
          jsonPath: .status.conditions[?(@.type=="Ready")].status
        - name: Age
          type: date
          jsonPath: .metadata.creationTimestamp
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size:
                  type: integer
                  minimum: 0
                  maximum: 10
                  description: How many parts the widget has.
                colour:
                  type: string
                  enum: [red, blue]
                  default: red
            status:
              type: object
              properties:
                size: {type: integer}
                conditions:
                  type: array
                  items:
                    type: object
                    properties:
                      type: {type: string}
                      status: {type: string}
    - name: v1beta1
      served: true
      storage: false
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

fn widget(size: &str, extra: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: a\nspec:\n  size: {size}\n{extra}"
    )
}

#[test]
fn custom_resources_with_kubectl() {
    let bin = kubectl_path();
    let dir = temp_data_dir("crd");
    let mut server = Server::start_with(&dir, &["--disable-agent"]);
    let k = Kubectl {
        bin,
        config: dir.join("admin.kubeconfig"),
        extra: vec![
            "--namespace".into(),
            "shop".into(),
            format!("--cache-dir={}", dir.join("kube-cache").display()),
        ],
    };
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    k.run(&["create", "namespace", "shop"]);
    let crd = file("crd.yaml", DEFINITION);
    k.run(&["apply", "-f", &crd]);
    k.run(&[
        "wait",
        "--for=condition=established",
        "--timeout=30s",
        "crd/widgets.example.com",
    ]);
    let resources = k.run(&["api-resources", "--api-group=example.com"]);
    assert!(
        resources.contains("widgets") && resources.contains("wd") && resources.contains("Widget"),
        "{resources}"
    );
    let crds = k.run(&["get", "crds"]);
    assert!(crds.contains("widgets.example.com"), "{crds}");

    // Create: defaults from the schema; kubectl's columns from the definition.
    let w = file("widget.yaml", &widget("3", ""));
    k.run(&["apply", "-f", &w]);
    let colour = k.run(&["get", "wd", "a", "-o", "jsonpath={.spec.colour}"]);
    assert_eq!(colour, "red");
    let table = k.run(&["get", "widgets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    // No Ready condition yet: an empty cell, then the age.
    assert_eq!(row.len(), 3, "{table}");
    assert_eq!(&row[..2], ["a", "3"], "{table}");
    assert!(row[2].ends_with('s'), "{table}");

    // kubectl validates nothing itself: the schema's errors come from the server.
    let bad = file("bad.yaml", &widget("3", "  extra: 1\n"));
    let (ok, _, err) = k.try_run(&["apply", "-f", &bad]);
    assert!(!ok && err.contains("unknown field \"spec.extra\""), "{err}");
    let big = file("big.yaml", &widget("20", ""));
    let (ok, _, err) = k.try_run(&["apply", "-f", &big]);
    assert!(
        !ok && err.contains("spec.size in body should be less than or equal to 10"),
        "{err}"
    );
    let text = file("text.yaml", &widget("three", ""));
    let (ok, _, err) = k.try_run(&["apply", "-f", &text]);
    assert!(
        !ok && err.contains("spec.size in body must be of type integer"),
        "{err}"
    );

    // An edit through apply (a merge patch for custom resources), scale and status.
    k.run(&["apply", "-f", &file("edit.yaml", &widget("5", ""))]);
    assert_eq!(
        k.run(&["get", "wd", "a", "-o", "jsonpath={.spec.size}"]),
        "5"
    );
    k.run(&["scale", "widget", "a", "--replicas=4"]);
    assert_eq!(
        k.run(&["get", "wd", "a", "-o", "jsonpath={.spec.size}"]),
        "4"
    );
    k.run(&[
        "patch",
        "widget",
        "a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"size":4,"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let table = k.run(&["get", "widgets", "--no-headers"]);
    let row: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&row[..3], ["a", "4", "True"], "{table}");

    // The schema is in OpenAPI (kubectl explain), the other version reads the same object,
    // and the `all` category includes it.
    let explain = k.run(&["explain", "widgets.spec.size"]);
    assert!(
        explain.contains("How many parts the widget has") && explain.contains("integer"),
        "{explain}"
    );
    let beta = k.run(&[
        "get",
        "widgets.v1beta1.example.com",
        "a",
        "-o",
        "jsonpath={.apiVersion} {.spec.size}",
    ]);
    assert_eq!(beta, "example.com/v1beta1 4");
    let v2: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "--raw", "/openapi/v2"])).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["definitions"]["com.example.v1.Widget"]["properties"]["spec"]["properties"]["size"]
            ["type"],
        "integer",
        "the definition's schema is in /openapi/v2 too"
    );
    let all = k.run(&["get", "all"]);
    assert!(all.contains("widget.example.com/a"), "{all}");

    // A restart serves the stored definition again.
    server.stop();
    server = Server::start_with(&dir, &["--disable-agent"]);
    assert_eq!(
        k.run(&["get", "wd", "a", "-o", "jsonpath={.spec.size}"]),
        "4"
    );

    // Deleting the definition deletes its objects: re-created, it serves none.
    k.run(&["delete", "crd", "widgets.example.com"]);
    let (ok, _, err) = k.try_run(&["get", "widgets"]);
    assert!(
        !ok,
        "widgets still served after their definition went: {err}"
    );
    k.run(&["apply", "-f", &crd]);
    k.run(&[
        "wait",
        "--for=condition=established",
        "--timeout=30s",
        "crd/widgets.example.com",
    ]);
    let (_, out, err) = k.try_run(&["get", "widgets"]);
    assert!(
        out.trim().is_empty() && err.contains("No resources found"),
        "{out}{err}"
    );
    server.stop();
}
