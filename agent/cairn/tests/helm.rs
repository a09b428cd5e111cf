//! Helm (v4, installed by `make deps`; `HELM` overrides the path) and `kubectl apply
//! --server-side` against the real `cairn server`: Helm 4 writes every object with
//! server-side apply. A chart from `helm create` is installed, upgraded, rolled back and
//! uninstalled; a chart carrying a CRD installs it before its custom resource; a chart with
//! an unknown kind fails; two field managers conflict until one forces.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{kubectl_path, temp_data_dir, Kubectl, Server};

struct Helm<'a> {
    bin: String,
    kubeconfig: &'a Path,
    home: &'a Path,
}

impl Helm<'_> {
    fn try_run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .current_dir(self.home)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (`make deps` installs helm)", self.bin));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn run(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_run(args);
        assert!(ok, "helm {args:?} failed:\n{text}");
        text
    }
}

fn replicas(k: &Kubectl, name: &str) -> String {
    k.run(&["get", "deployment", name, "-o", "jsonpath={.spec.replicas}"])
}

#[test]
fn helm_charts_and_server_side_apply() {
    let dir = temp_data_dir("helm");
    let server = Server::start_with(&dir, &["--disable-agent"]);
    let kubeconfig = dir.join("admin.kubeconfig");
    let k = Kubectl {
        bin: kubectl_path(),
        config: kubeconfig.clone(),
        extra: vec!["--namespace".into(), "default".into()],
    };
    let helm = Helm {
        bin: std::env::var("HELM").unwrap_or_else(|_| "helm".into()),
        kubeconfig: &kubeconfig,
        home: &dir,
    };
    assert!(helm.run(&["version", "--short"]).starts_with("v4."));

    // A chart from `helm create`: install, upgrade, rollback, uninstall.
    helm.run(&["create", "demo"]);
    let installed = helm.run(&["install", "demo", "./demo"]);
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert_eq!(replicas(&k, "demo"), "1");
    let deployment: Value = serde_json::from_str(&k.run(&[
        "get",
        "deployment",
        "demo",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    let managers: Vec<&str> = deployment["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["helm"], "Helm 4 applies server-side");
    assert!(k
        .run(&["get", "service", "demo", "-o", "name"])
        .contains("service/demo"));
    helm.run(&["upgrade", "demo", "./demo", "--set", "replicaCount=3"]);
    assert_eq!(replicas(&k, "demo"), "3");
    helm.run(&["rollback", "demo", "1"]);
    assert_eq!(replicas(&k, "demo"), "1");
    let history = helm.run(&["history", "demo"]);
    assert!(history.contains("Rollback to 1"), "{history}");
    helm.run(&["uninstall", "demo"]);
    let (found, _, _) = k.try_run(&["get", "deployment", "demo"]);
    assert!(!found, "uninstall left the deployment");

    // A chart with a CRD and a custom resource of it.
    helm.run(&["create", "widgets"]);
    std::fs::create_dir_all(dir.join("widgets/crds")).unwrap();
    std::fs::write(dir.join("widgets/crds/widgets.yaml"), WIDGET_CRD).unwrap();
    std::fs::write(
        dir.join("widgets/templates/widget.yaml"),
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}-widget\nspec:\n  size: {{ .Values.replicaCount }}\n",
    )
    .unwrap();
    helm.run(&["install", "shop", "./widgets"]);
    assert_eq!(
        k.run(&[
            "get",
            "widget",
            "shop-widget",
            "-o",
            "jsonpath={.spec.size}"
        ]),
        "1"
    );
    helm.run(&["upgrade", "shop", "./widgets", "--set", "replicaCount=4"]);
    assert_eq!(
        k.run(&[
            "get",
            "widget",
            "shop-widget",
            "-o",
            "jsonpath={.spec.size}"
        ]),
        "4"
    );
    helm.run(&["uninstall", "shop"]);
    assert!(
        k.run(&["get", "crd", "-o", "name"])
            .contains("widgets.example.com"),
        "Helm keeps CRDs"
    );

    // An unknown kind fails the install and nothing half-installed stays. (Helm then wants
    // the protobuf form of /openapi/v2 for client-side validation, which is not served, so
    // its message names the OpenAPI download rather than the kind.)
    helm.run(&["create", "broken"]);
    std::fs::write(
        dir.join("broken/templates/gadget.yaml"),
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n",
    )
    .unwrap();
    let (ok, text) = helm.try_run(&["install", "broken", "./broken"]);
    assert!(!ok && text.contains("INSTALLATION FAILED"), "{text}");
    let (found, _, _) = k.try_run(&["get", "deployment", "broken"]);
    assert!(!found, "a failed install left objects behind");

    // kubectl apply --server-side: managers own fields; a conflict needs --force-conflicts.
    let manifest = dir.join("app.yaml");
    let app = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n    spec:\n      containers:\n      - name: app\n        image: app:1\n"
        )
    };
    std::fs::write(&manifest, app(2)).unwrap();
    let path = manifest.to_str().unwrap();
    k.run(&[
        "apply",
        "--server-side",
        "--field-manager=alice",
        "-f",
        path,
    ]);
    assert_eq!(replicas(&k, "app"), "2");
    std::fs::write(&manifest, app(5)).unwrap();
    let (ok, _, err) = k.try_run(&["apply", "--server-side", "--field-manager=bob", "-f", path]);
    assert!(
        !ok && err.contains("conflict with \"alice\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(replicas(&k, "app"), "2", "a conflict changes nothing");
    k.run(&[
        "apply",
        "--server-side",
        "--field-manager=bob",
        "--force-conflicts",
        "-f",
        path,
    ]);
    assert_eq!(replicas(&k, "app"), "5");

    server.stop();
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"#;
