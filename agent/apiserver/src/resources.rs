//! The resource table: one row per served resource. Built-in resources are rows of
//! [`RESOURCES`] (plus, where they need it, validation and defaulting in [`crate::validate`]);
//! the resources CustomResourceDefinitions declare join them in a [`Catalog`] ([`crate::crd`]).

use std::sync::Arc;

/// Every verb a plain read-write resource supports.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; "" is the core (legacy) group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The path segment (`configmaps`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// Fields a field selector may test besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` include the resource).
    pub categories: &'static [&'static str],
    /// `status` (writes to the object keep its status; `/status` writes change only it)
    /// and `scale` (an `autoscaling/v1 Scale` view of `spec.replicas`).
    pub subresources: &'static [&'static str],
    /// What a CustomResourceDefinition says about a custom resource (schema, columns,
    /// scale paths); `None` for built-in resources.
    pub custom: Option<&'static crate::crd::Custom>,
}

impl Resource {
    /// `apiVersion` of the objects (`v1`, `coordination.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind (`ConfigMapList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Store group segment: the core group is stored as `core`.
    fn store_group(&self) -> &'static str {
        if self.group.is_empty() {
            "core"
        } else {
            self.group
        }
    }

    /// The key prefix of every object of this resource, or of one namespace's.
    /// `/registry/<group>/<resource>/` or `/registry/<group>/<resource>/<namespace>/`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/registry/{}/{}/{ns}/", self.store_group(), self.plural)
            }
            _ => format!("/registry/{}/{}/", self.store_group(), self.plural),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }
}

const fn core(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        kind,
        plural,
        singular,
        short_names,
        namespaced,
        verbs: ALL_VERBS,
        field_labels: &[],
        categories: &[],
        subresources: &[],
        custom: None,
    }
}

const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];
const STATUS_APPROVAL: &[&str] = &["status", "approval"];
const POD_SUBRESOURCES: &[&str] = &[
    "status",
    "binding",
    "eviction",
    "log",
    "exec",
    "attach",
    "portforward",
];

/// A row of a named group.
const fn named(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        ..core(kind, plural, singular, short_names, namespaced)
    }
}

const ALL: &[&str] = &["all"];

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// The fields kube-apiserver lets clients select events by (`kubectl describe` uses them).
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Namespaces cannot be deleted as a collection in Kubernetes.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// metrics-server's verbs (no watch).
const METRICS_VERBS: &[&str] = &["get", "list"];

/// Every resource this server serves.
pub const RESOURCES: &[Resource] = &[
    Resource {
        verbs: NAMESPACE_VERBS,
        field_labels: &["status.phase"],
        subresources: STATUS,
        ..core("Namespace", "namespaces", "namespace", &["ns"], false)
    },
    Resource {
        field_labels: &["spec.unschedulable"],
        subresources: STATUS,
        ..core("Node", "nodes", "node", &["no"], false)
    },
    Resource {
        field_labels: POD_FIELDS,
        categories: ALL,
        subresources: POD_SUBRESOURCES,
        ..core("Pod", "pods", "pod", &["po"], true)
    },
    Resource {
        categories: ALL,
        subresources: STATUS,
        ..core("Service", "services", "service", &["svc"], true)
    },
    core("Endpoints", "endpoints", "endpoints", &["ep"], true),
    core("ConfigMap", "configmaps", "configmap", &["cm"], true),
    Resource {
        field_labels: &["type"],
        ..core("Secret", "secrets", "secret", &[], true)
    },
    Resource {
        subresources: &["token"],
        ..core(
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            &["sa"],
            true,
        )
    },
    Resource {
        field_labels: EVENT_FIELDS,
        ..core("Event", "events", "event", &["ev"], true)
    },
    Resource {
        subresources: STATUS,
        ..core(
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            &["pv"],
            false,
        )
    },
    Resource {
        subresources: STATUS,
        ..core(
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            &["pvc"],
            true,
        )
    },
    Resource {
        categories: ALL,
        subresources: STATUS_SCALE,
        ..named(
            "apps",
            "Deployment",
            "deployments",
            "deployment",
            &["deploy"],
            true,
        )
    },
    Resource {
        categories: ALL,
        field_labels: &["status.replicas"],
        subresources: STATUS_SCALE,
        ..named(
            "apps",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            &["rs"],
            true,
        )
    },
    Resource {
        categories: ALL,
        subresources: STATUS,
        ..named(
            "apps",
            "DaemonSet",
            "daemonsets",
            "daemonset",
            &["ds"],
            true,
        )
    },
    Resource {
        categories: ALL,
        subresources: STATUS_SCALE,
        ..named(
            "apps",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            &["sts"],
            true,
        )
    },
    named(
        "apps",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        &[],
        true,
    ),
    Resource {
        categories: ALL,
        field_labels: &["status.successful"],
        subresources: STATUS,
        ..named("batch", "Job", "jobs", "job", &[], true)
    },
    Resource {
        categories: ALL,
        subresources: STATUS,
        ..named("batch", "CronJob", "cronjobs", "cronjob", &["cj"], true)
    },
    Resource {
        field_labels: &["spec.signerName"],
        subresources: STATUS_APPROVAL,
        ..named(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            &["csr"],
            false,
        )
    },
    named("coordination.k8s.io", "Lease", "leases", "lease", &[], true),
    named(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        &[],
        true,
    ),
    Resource {
        subresources: STATUS,
        ..named(
            "networking.k8s.io",
            "Ingress",
            "ingresses",
            "ingress",
            &["ing"],
            true,
        )
    },
    named(
        "networking.k8s.io",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        &[],
        false,
    ),
    named(
        "storage.k8s.io",
        "StorageClass",
        "storageclasses",
        "storageclass",
        &["sc"],
        false,
    ),
    named(
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
        "role",
        &[],
        true,
    ),
    named(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        &[],
        true,
    ),
    named(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        &[],
        false,
    ),
    named(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        &[],
        false,
    ),
    Resource {
        subresources: STATUS,
        ..named(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            &["pdb"],
            true,
        )
    },
    // Served by the request parser, not the store: listed for discovery and OpenAPI.
    Resource {
        verbs: &["create"],
        ..named(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            &[],
            false,
        )
    },
    Resource {
        verbs: &["create"],
        ..named(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            &[],
            false,
        )
    },
    Resource {
        verbs: &["create"],
        ..named(
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            &[],
            false,
        )
    },
    Resource {
        verbs: &["create"],
        ..named(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
            &[],
            false,
        )
    },
    Resource {
        verbs: &["create"],
        ..named(
            "authorization.k8s.io",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            &[],
            true,
        )
    },
    named(
        "scheduling.k8s.io",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        &["pc"],
        false,
    ),
    // The resource metrics API (`kubectl top`): read from the kubelets, never stored
    // (`resource_metrics`). No schemas: k8s-openapi does not carry these types.
    Resource {
        version: "v1beta1",
        verbs: METRICS_VERBS,
        ..named(
            crate::resource_metrics::GROUP,
            "NodeMetrics",
            "nodes",
            "nodemetrics",
            &[],
            false,
        )
    },
    Resource {
        version: "v1beta1",
        verbs: METRICS_VERBS,
        ..named(
            crate::resource_metrics::GROUP,
            "PodMetrics",
            "pods",
            "podmetrics",
            &[],
            true,
        )
    },
    Resource {
        categories: &["api-extensions"],
        subresources: STATUS,
        ..named(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            &["crd", "crds"],
            false,
        )
    },
];

/// The built-in resource served at `group`/`version`/`plural` (custom resources: [`Catalog::find`]).
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Everything served at one moment: the built-in resources and the custom resources of the
/// CustomResourceDefinitions stored then. Requests take a snapshot (`Arc<Catalog>`); a
/// definition's write swaps in a new one ([`crate::Api`]).
#[derive(Debug, Default)]
pub struct Catalog {
    custom: Vec<&'static Resource>,
}

impl Catalog {
    /// The built-in resources only.
    pub fn builtin() -> Arc<Catalog> {
        Arc::new(Catalog::default())
    }

    /// The built-in resources and `custom` (custom resources never shadow built-in ones).
    pub fn with_custom(custom: Vec<&'static Resource>) -> Catalog {
        let custom = custom
            .into_iter()
            .filter(|c| !RESOURCES.iter().any(|r| r.group == c.group))
            .collect();
        Catalog { custom }
    }

    /// Every served resource, built-in ones first.
    pub fn iter(&self) -> impl Iterator<Item = &'static Resource> + '_ {
        RESOURCES.iter().chain(self.custom.iter().copied())
    }

    /// The custom resources.
    pub fn custom(&self) -> &[&'static Resource] {
        &self.custom
    }

    /// The resource served at `group`/`version`/`plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The group/versions served, in discovery order: `("", "v1")` first.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for r in self.iter() {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }

    /// The resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'static Resource> + 'a {
        self.iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert_eq!(
            cm.key(Some("default"), "a"),
            "/registry/core/configmaps/default/a"
        );
        assert_eq!(cm.prefix(None), "/registry/core/configmaps/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system"),
            "/registry/core/namespaces/kube-system"
        );
        let lease = find("coordination.k8s.io", "v1", "leases").unwrap();
        assert_eq!(lease.api_version(), "coordination.k8s.io/v1");
        assert_eq!(lease.list_kind(), "LeaseList");
        assert_eq!(
            lease.key(Some("kube-node-lease"), "n1"),
            "/registry/coordination.k8s.io/leases/kube-node-lease/n1"
        );
        assert!(find("", "v1", "widgets").is_none());
        assert!(find("apps", "v1", "deployments").is_some());
        let gvs = Catalog::default().group_versions();
        assert_eq!(gvs[0], ("", "v1"), "the core group comes first");
        assert!(gvs.contains(&("rbac.authorization.k8s.io", "v1")));
        assert!(gvs.contains(&("coordination.k8s.io", "v1")));
    }
}
