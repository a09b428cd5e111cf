//! The node authorizer: what a node (user `system:node:<name>` in `system:nodes`) may do,
//! as Kubernetes' Node authorizer and NodeRestriction admission decide it together.
//!
//! A node may read the cluster's nodes, pods, services and endpoints; write its own Node and
//! its own Lease in `kube-node-lease`; change, evict and delete only pods bound to it; record
//! events; and read only the Secrets, ConfigMaps, claims and volumes that pods bound to it use
//! (and request tokens for their service accounts). Who a created Node, Lease or mirror pod
//! belongs to is in the body, checked by [`check_create`] once the body is parsed.
//!
//! Pods bound to a node are found by reading the pods from the store (Kubernetes keeps a graph
//! in memory instead); an edge cluster's few hundred pods make that cheap.

use std::collections::HashSet;

use cairn_store::Store;
use serde_json::Value;

use super::{Attributes, Target};
use crate::error::ApiError;

/// Group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// Prefix of node user names.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The node a user is, if it is one.
pub fn node_name(user: &crate::auth::User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The node authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed here; RBAC may still allow it. The text says why.
    NoOpinion(String),
}

const READ: &[&str] = &["get", "list", "watch"];

/// Decides what node `node` may do.
pub fn authorize(store: &dyn Store, node: &str, attrs: &Attributes) -> Result<Decision, ApiError> {
    let Target::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
    } = &attrs.target
    else {
        return Ok(Decision::NoOpinion(String::new()));
    };
    let verb = attrs.verb.as_str();
    let sub = subresource.as_deref();
    let name = name.as_deref();
    let allow = |ok: bool, why: &str| {
        Ok(if ok {
            Decision::Allow
        } else {
            Decision::NoOpinion(why.to_owned())
        })
    };
    match (group.as_str(), resource.as_str()) {
        ("", "nodes") => match verb {
            "get" | "list" | "watch" | "create" => allow(true, ""),
            "update" | "patch" | "delete" => allow(
                name == Some(node),
                "a node may only change its own Node object",
            ),
            _ => allow(false, ""),
        },
        ("coordination.k8s.io", "leases") => allow(
            namespace.as_deref() == Some("kube-node-lease")
                && (verb == "create" || name == Some(node))
                && ["get", "create", "update", "patch", "delete"].contains(&verb),
            "a node may only use its own Lease in kube-node-lease",
        ),
        ("", "pods") => match (verb, sub) {
            ("get" | "list" | "watch", None) => allow(true, ""),
            // Mirror pods: the body must bind them to this node (check_create).
            ("create", None) => allow(true, ""),
            ("update" | "patch", Some("status"))
            | ("delete", None)
            | ("create", Some("eviction")) => {
                let bound = match (namespace, name) {
                    (Some(ns), Some(n)) => pod_node(store, ns, n)?.as_deref() == Some(node),
                    _ => false,
                };
                allow(bound, "a node may only change pods bound to it")
            }
            _ => allow(false, ""),
        },
        ("" | "events.k8s.io", "events") => {
            allow(["create", "update", "patch"].contains(&verb), "")
        }
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => {
            allow(READ.contains(&verb) && sub.is_none(), "")
        }
        ("storage.k8s.io", "csidrivers" | "csinodes" | "storageclasses" | "volumeattachments")
        | ("node.k8s.io", "runtimeclasses") => allow(READ.contains(&verb), ""),
        ("certificates.k8s.io", "certificatesigningrequests") => allow(
            ["create", "get", "list", "watch"].contains(&verb) && sub.is_none(),
            "",
        ),
        ("authentication.k8s.io", "tokenreviews")
        | ("authorization.k8s.io", "subjectaccessreviews") => allow(verb == "create", ""),
        (
            "",
            kind @ ("secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes"),
        )
        | ("", kind @ "serviceaccounts") => {
            let wanted = match (kind, verb, sub) {
                ("serviceaccounts", "create", Some("token")) => true,
                ("persistentvolumeclaims", "update" | "patch", Some("status")) => true,
                ("serviceaccounts", ..) => false,
                (_, "get" | "list" | "watch", None) => true,
                _ => false,
            };
            let Some(name) = name.filter(|_| wanted) else {
                return allow(false, "");
            };
            let kind = [
                "secrets",
                "configmaps",
                "persistentvolumeclaims",
                "persistentvolumes",
                "serviceaccounts",
            ]
            .into_iter()
            .find(|k| *k == kind)
            .unwrap_or_default();
            let related = references(store, node)?.contains(&Reference {
                kind,
                namespace: if kind == "persistentvolumes" {
                    String::new()
                } else {
                    namespace.clone().unwrap_or_default()
                },
                name: name.to_owned(),
            });
            allow(
                related,
                &format!("no relationship found between node '{node}' and this object"),
            )
        }
        _ => allow(false, ""),
    }
}

/// For a node creating `obj` (a Node, Lease or Pod): refuses objects that are not its own.
pub fn check_create(
    node: &str,
    resource: &crate::resources::Resource,
    obj: &Value,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let forbidden = |what: String| {
        Err(ApiError::Forbidden(format!(
            "{} is forbidden: node {node:?} {what}",
            resource.plural
        )))
    };
    match (resource.group, resource.plural) {
        ("", "nodes") if name != node => {
            forbidden(format!("is not allowed to create node {name:?}"))
        }
        ("coordination.k8s.io", "leases") if name != node => {
            forbidden(format!("is not allowed to create lease {name:?}"))
        }
        ("", "pods") => {
            let bound = obj["spec"]["nodeName"].as_str() == Some(node);
            let mirror = obj["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string();
            if bound && mirror {
                Ok(())
            } else {
                forbidden("can only create mirror pods bound to itself".into())
            }
        }
        _ => Ok(()),
    }
}

fn core(plural: &str) -> &'static crate::resources::Resource {
    crate::resources::find("", "v1", plural).expect("core resources are built in")
}

/// The stored object `plural` `namespace/name`, if any.
fn stored(
    store: &dyn Store,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    Ok(store
        .get(&core(plural).key(Some(namespace), name))?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// The node a stored pod is bound to.
fn pod_node(store: &dyn Store, namespace: &str, name: &str) -> Result<Option<String>, ApiError> {
    Ok(stored(store, "pods", namespace, name)?
        .and_then(|pod| pod["spec"]["nodeName"].as_str().map(str::to_owned)))
}

/// An object a pod uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Reference {
    kind: &'static str,
    namespace: String,
    name: String,
}

/// What the pods bound to `node` use: Secrets, ConfigMaps, claims (and their volumes) and
/// service accounts.
fn references(store: &dyn Store, node: &str) -> Result<HashSet<Reference>, ApiError> {
    let mut out = HashSet::new();
    let mut claims = Vec::new();
    for kv in store.list(&core("pods").prefix(None), None, 0, None)?.items {
        let pod: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if pod["spec"]["nodeName"].as_str() != Some(node) {
            continue;
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        pod_references(&pod, &mut |kind, name| {
            if kind == "persistentvolumeclaims" {
                claims.push((ns.to_owned(), name.to_owned()));
            }
            out.insert(Reference {
                kind,
                namespace: ns.to_owned(),
                name: name.to_owned(),
            });
        });
    }
    for (ns, claim) in claims {
        let volume = stored(store, "persistentvolumeclaims", &ns, &claim)?;
        if let Some(volume) = volume
            .as_ref()
            .and_then(|c| c["spec"]["volumeName"].as_str())
        {
            out.insert(Reference {
                kind: "persistentvolumes",
                namespace: String::new(),
                name: volume.to_owned(),
            });
        }
    }
    Ok(out)
}

/// Calls `found(kind, name)` for everything `pod` refers to by name.
fn pod_references(pod: &Value, found: &mut dyn FnMut(&'static str, &str)) {
    let spec = &pod["spec"];
    let mut named = |kind: &'static str, v: &Value| {
        if let Some(name) = v.as_str().filter(|n| !n.is_empty()) {
            found(kind, name);
        }
    };
    named(
        "serviceaccounts",
        spec.get("serviceAccountName").unwrap_or(&Value::Null),
    );
    for secret in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        named("secrets", &secret["name"]);
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        named("secrets", &volume["secret"]["secretName"]);
        named("configmaps", &volume["configMap"]["name"]);
        named(
            "persistentvolumeclaims",
            &volume["persistentVolumeClaim"]["claimName"],
        );
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            named("secrets", &source["secret"]["name"]);
            named("configmaps", &source["configMap"]["name"]);
        }
        for secret_ref in [
            &volume["csi"]["nodePublishSecretRef"]["name"],
            &volume["cephfs"]["secretRef"]["name"],
            &volume["rbd"]["secretRef"]["name"],
            &volume["iscsi"]["secretRef"]["name"],
            &volume["azureFile"]["secretName"],
        ] {
            named("secrets", secret_ref);
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for env in c["env"].as_array().into_iter().flatten() {
                named("secrets", &env["valueFrom"]["secretKeyRef"]["name"]);
                named("configmaps", &env["valueFrom"]["configMapKeyRef"]["name"]);
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                named("secrets", &from["secretRef"]["name"]);
                named("configmaps", &from["configMapRef"]["name"]);
            }
        }
    }
}
