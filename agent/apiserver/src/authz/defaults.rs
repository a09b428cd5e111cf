//! The ClusterRoles and ClusterRoleBindings every cluster starts with, named and shaped as
//! Kubernetes' bootstrap policy so charts and habits that expect them work: `cluster-admin`
//! (bound to `system:masters`), the user-facing `admin`, `edit` and `view` (aggregated from
//! `system:aggregate-to-*`, so a chart's own `aggregate-to-*` roles extend them), discovery,
//! basic-user and public-info for every authenticated user, `system:monitoring` and the
//! node bootstrapper for join tokens.
//!
//! Objects carry `rbac.authorization.kubernetes.io/autoupdate: "true"`; while they do, each
//! start puts their rules back as shipped. Setting it to `"false"` keeps local changes.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::handlers::Api;
use crate::request::Verb;
use crate::resources;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// While `"true"` (or absent), each start restores the shipped rules.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&[&str]]) -> Value {
    let verbs: Vec<&str> = verbs.iter().flat_map(|v| v.iter().copied()).collect();
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

fn metadata(name: &str, aggregate_to: &[&str]) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for role in aggregate_to {
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{role}")] = json!("true");
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, aggregate_to: &[&str], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, aggregate_to),
        "rules": rules,
    })
}

fn aggregated(name: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, &[]),
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}
        ]},
        "rules": [],
    })
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": metadata(name, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let core = &[""];
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &[&["*"]]), urls(&["*"], &["*"])],
        ),
        aggregated("admin"),
        aggregated("edit"),
        aggregated("view"),
        cluster_role(
            "system:aggregate-to-view",
            &["view", "edit", "admin"],
            vec![
                rule(
                    core,
                    &[
                        "pods",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "replicationcontrollers/status",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                        "serviceaccounts",
                        "events",
                        "limitranges",
                        "resourcequotas",
                        "resourcequotas/status",
                        "bindings",
                        "namespaces",
                        "namespaces/status",
                    ],
                    &[READ],
                ),
                rule(
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                    &[READ],
                ),
                rule(
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                    &[READ],
                ),
                rule(
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                    &[READ],
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    &[READ],
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                    &[READ],
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], &[READ]),
                rule(&["events.k8s.io"], &["events"], &[READ]),
            ],
        ),
        // What metrics-server (and so K3s) installs: `kubectl top` for `view` and above.
        cluster_role(
            "system:aggregated-metrics-reader",
            &["view", "edit", "admin"],
            vec![rule(
                &[crate::resource_metrics::GROUP],
                &["pods", "nodes"],
                &[READ],
            )],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &["edit", "admin"],
            vec![
                rule(
                    core,
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                    &[READ, WRITE],
                ),
                rule(core, &["pods/eviction"], &[&["create"]]),
                rule(
                    core,
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                    &[READ, WRITE],
                ),
                rule(core, &["serviceaccounts"], &[&["impersonate"]]),
                rule(core, &["serviceaccounts/token"], &[&["create"]]),
                rule(
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                    &[WRITE],
                ),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], &[WRITE]),
                rule(&["batch"], &["cronjobs", "jobs"], &[WRITE]),
                rule(&["policy"], &["poddisruptionbudgets"], &[WRITE]),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    &[WRITE],
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], &[WRITE]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-admin",
            &["admin"],
            vec![
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                    &[READ, WRITE],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &[&["create"]],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &[&["create"]],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &[&["create"]],
                ),
            ],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &[&["create", "get", "list", "watch"]],
            )],
        ),
        // What the CSR approver asks before approving a node's client certificate: a first
        // certificate (`nodeclient`, bootstrap tokens) or a renewal of its own
        // (`selfnodeclient`, the node itself).
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &[&["create"]],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &[&["create"]],
            )],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &[super::MASTERS]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &["system:monitoring"],
        ),
        binding(
            "cairn:node-bootstrapper",
            "system:node-bootstrapper",
            &["system:bootstrappers"],
        ),
        binding(
            "cairn:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &["system:bootstrappers"],
        ),
        binding(
            "cairn:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &["system:nodes"],
        ),
    ]
}

/// Creates the default ClusterRoles and bindings that are missing and puts back the shipped
/// content of those still marked for auto-update. Returns the names written.
pub fn ensure(api: &Api) -> Result<Vec<String>, ApiError> {
    let mut written = Vec::new();
    for (plural, objects) in [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ] {
        let resource = resources::find("rbac.authorization.k8s.io", "v1", plural)
            .expect("RBAC resources are built in");
        for wanted in objects {
            let name = wanted["metadata"]["name"].as_str().unwrap_or_default();
            let key = resource.key(None, name);
            let current = match api.store.get(&key)? {
                Some(kv) => Some(crate::handlers::decode_object(&kv)?),
                None => None,
            };
            let verb = match &current {
                None => Verb::Create,
                Some(obj) => {
                    let auto = obj["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("false");
                    // An aggregated role's rules are the aggregation controller's to write.
                    let aggregated = wanted.get("aggregationRule").is_some();
                    let fields: &[&str] = if aggregated {
                        &["aggregationRule"]
                    } else {
                        &["rules", "aggregationRule", "roleRef", "subjects"]
                    };
                    let same = fields.iter().all(|f| {
                        wanted.get(*f).unwrap_or(&Value::Null)
                            == obj.get(*f).unwrap_or(&Value::Null)
                    });
                    if !auto || same {
                        continue;
                    }
                    Verb::Update
                }
            };
            let mut body = wanted.clone();
            if let Some(obj) = &current {
                body["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
                if wanted.get("aggregationRule").is_some() {
                    body["rules"] = obj["rules"].clone();
                }
            }
            let mut action = crate::bootstrap::action(verb, resource, None);
            if verb == Verb::Update {
                action.name = Some(name.to_owned());
            }
            match api.handle(&action, body.to_string().as_bytes()) {
                Ok(_) => written.push(name.to_owned()),
                Err(ApiError::AlreadyExists(_) | ApiError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}
