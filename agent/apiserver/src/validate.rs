//! Per-kind validation and defaulting with the typed k8s-openapi structs.
//!
//! Objects travel as `serde_json::Value`; here each is also decoded into its typed struct, so
//! a body of the wrong shape (`data: [1]` in a ConfigMap, bad base64 in a Secret) is refused
//! with the decoder's message, and kind-specific defaults are applied.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking, policy, rbac};
use k8s_openapi::api::{certificates, scheduling, storage};
use k8s_openapi::ByteString;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::resources::Resource;

pub mod csr;

/// Check the object's shape and apply defaults. `Err` is a message for a 400/422 answer.
pub fn validate_and_default(resource: &Resource, object: &mut Value) -> Result<(), String> {
    if let Some(custom) = resource.custom {
        return crate::crd::check_object(custom, object);
    }
    match (resource.group, resource.kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            crate::crd::check_definition(object)?;
        }
        ("", "Namespace") => {
            check::<Namespace>(object)?;
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            // Like kube-apiserver: every namespace carries its name as a label.
            let meta = crate::meta::metadata(object);
            let labels = meta
                .entry("labels")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
            let spec = &mut object["spec"];
            if spec.get("finalizers").is_none() {
                spec["finalizers"] = serde_json::json!(["kubernetes"]);
            }
            object["status"] = serde_json::json!({"phase": "Active"});
        }
        ("", "Secret") => secret(object)?,
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            check::<certificates::v1::CertificateSigningRequest>(object)?;
            csr::validate(object)?;
        }
        (group, kind) => {
            check_shape(group, kind, object)?;
            if (group, kind) == ("batch", "Job") {
                job_defaults(object);
                match object["spec"]["completionMode"].as_str() {
                    Some("NonIndexed") => {}
                    Some("Indexed") if object["spec"]["completions"].is_null() => {
                        return Err("spec.completions: Required value: when completion mode is \
                                    Indexed"
                            .into())
                    }
                    Some("Indexed") => {}
                    other => {
                        return Err(format!(
                            "spec.completionMode: Unsupported value: {}: supported values: \
                             \"NonIndexed\", \"Indexed\"",
                            other.map_or("null".to_owned(), |o| format!("{o:?}"))
                        ))
                    }
                }
            }
            if (group, kind) == ("batch", "CronJob") {
                cron_job_defaults(object)?;
            }
            if group == "apps" {
                workload_defaults(kind, object);
            }
            if matches!(
                (group, kind),
                (
                    "apps",
                    "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
                ) | ("batch", "Job")
            ) {
                check_selector(object)?;
            }
        }
    }
    Ok(())
}

/// A Job's defaults, as kube-apiserver sets them: a selector on the Job's own uid (and the
/// labels for it on the pod template) unless `manualSelector`, one completion and one pod at a
/// time, six retries.
fn job_defaults(object: &mut Value) {
    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let spec = &mut object["spec"];
    if spec["selector"].is_null() && spec["manualSelector"] != Value::Bool(true) && !uid.is_empty()
    {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = &mut spec["template"]["metadata"]["labels"];
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[k] = json!(v);
        }
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    for (field, default) in [
        ("parallelism", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
    ] {
        if spec[field].is_null() {
            spec[field] = default;
        }
    }
}

/// kube-apiserver's defaults for the `apps` workloads (kubectl's `rollout status` reads the
/// strategy types).
fn workload_defaults(kind: &str, object: &mut Value) {
    let spec = &mut object["spec"];
    if !spec.is_object() {
        return;
    }
    let mut default = |field: &str, value: Value| {
        if spec[field].is_null() {
            spec[field] = value;
        }
    };
    match kind {
        "Deployment" => {
            default("replicas", json!(1));
            default("revisionHistoryLimit", json!(10));
            default("progressDeadlineSeconds", json!(600));
            default(
                "strategy",
                json!({"type": "RollingUpdate",
                       "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        "ReplicaSet" => default("replicas", json!(1)),
        "StatefulSet" => {
            default("replicas", json!(1));
            default("revisionHistoryLimit", json!(10));
            default("podManagementPolicy", json!("OrderedReady"));
            default(
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        "DaemonSet" => {
            default("revisionHistoryLimit", json!(10));
            default(
                "updateStrategy",
                json!({"type": "RollingUpdate",
                       "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        _ => {}
    }
}

/// A CronJob's schedule and time zone must parse; the defaults are kube-apiserver's.
fn cron_job_defaults(object: &mut Value) -> Result<(), String> {
    let spec = &mut object["spec"];
    crate::schedule::Schedule::parse(
        spec["schedule"].as_str().unwrap_or_default(),
        spec["timeZone"].as_str(),
    )?;
    for (field, default) in [
        ("concurrencyPolicy", json!("Allow")),
        ("suspend", json!(false)),
        ("successfulJobsHistoryLimit", json!(3)),
        ("failedJobsHistoryLimit", json!(1)),
    ] {
        if spec[field].is_null() {
            spec[field] = default;
        }
    }
    match spec["concurrencyPolicy"].as_str() {
        Some("Allow" | "Forbid" | "Replace") => Ok(()),
        other => Err(format!(
            "spec.concurrencyPolicy: Unsupported value: {}: supported values: \"Allow\", \"Forbid\", \"Replace\"",
            other.map_or("null".to_owned(), |o| format!("{o:?}"))
        )),
    }
}

/// A workload's `spec.selector` must select something, and select its own pod template, or
/// its controller would create pods it never sees (kube-apiserver's rule).
fn check_selector(object: &Value) -> Result<(), String> {
    let selector = &object["spec"]["selector"];
    let parsed = crate::selector::LabelSelector::from_json(selector)
        .map_err(|e| format!("spec.selector: Invalid value: {}", e.0))?;
    if parsed.0.is_empty() {
        return Err("spec.selector: Invalid value: {}: an empty selector selects every pod".into());
    }
    let template =
        json!({"metadata": {"labels": object["spec"]["template"]["metadata"]["labels"]}});
    if !parsed.matches_object(&template) {
        return Err(format!(
            "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`",
            object["spec"]["template"]["metadata"]["labels"]
        ));
    }
    Ok(())
}

/// Decodes `object` into the typed struct of `group`/`kind`: a body of the wrong shape is
/// refused with the decoder's message.
fn check_shape(group: &str, kind: &str, object: &Value) -> Result<(), String> {
    macro_rules! kinds {
        ($($g:literal, $k:literal => $t:ty;)*) => {
            match (group, kind) {
                $(($g, $k) => check::<$t>(object).map(drop),)*
                _ => Ok(()),
            }
        };
    }
    kinds! {
        "", "Node" => core::v1::Node;
        "", "Pod" => core::v1::Pod;
        "", "Service" => core::v1::Service;
        "", "Endpoints" => core::v1::Endpoints;
        "", "ConfigMap" => core::v1::ConfigMap;
        "", "ServiceAccount" => core::v1::ServiceAccount;
        "", "Event" => core::v1::Event;
        "", "PersistentVolume" => core::v1::PersistentVolume;
        "", "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim;
        "apps", "Deployment" => apps::v1::Deployment;
        "apps", "ReplicaSet" => apps::v1::ReplicaSet;
        "apps", "DaemonSet" => apps::v1::DaemonSet;
        "apps", "StatefulSet" => apps::v1::StatefulSet;
        "apps", "ControllerRevision" => apps::v1::ControllerRevision;
        "batch", "Job" => batch::v1::Job;
        "batch", "CronJob" => batch::v1::CronJob;
        "coordination.k8s.io", "Lease" => coordination::v1::Lease;
        "discovery.k8s.io", "EndpointSlice" => discovery::v1::EndpointSlice;
        "networking.k8s.io", "Ingress" => networking::v1::Ingress;
        "networking.k8s.io", "IngressClass" => networking::v1::IngressClass;
        "storage.k8s.io", "StorageClass" => storage::v1::StorageClass;
        "rbac.authorization.k8s.io", "Role" => rbac::v1::Role;
        "rbac.authorization.k8s.io", "RoleBinding" => rbac::v1::RoleBinding;
        "rbac.authorization.k8s.io", "ClusterRole" => rbac::v1::ClusterRole;
        "rbac.authorization.k8s.io", "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding;
        "policy", "PodDisruptionBudget" => policy::v1::PodDisruptionBudget;
        "scheduling.k8s.io", "PriorityClass" => scheduling::v1::PriorityClass;
    }
}

fn check<T: DeserializeOwned>(object: &Value) -> Result<T, String> {
    T::deserialize(object).map_err(|e| format!("the object does not match its schema: {e}"))
}

/// Secrets: `stringData` is merged into `data` (base64) and dropped; `type` defaults to Opaque.
fn secret(object: &mut Value) -> Result<(), String> {
    let mut secret: Secret = check(object)?;
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
        let encoded = serde_json::to_value(&secret.data).map_err(|e| e.to_string())?;
        let obj = object.as_object_mut().expect("object");
        obj.remove("stringData");
        obj.insert("data".into(), encoded);
    }
    if object.get("type").is_none_or(Value::is_null) {
        object["type"] = Value::String("Opaque".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn secret_string_data() {
        let mut s =
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hi"}});
        validate_and_default(find("", "v1", "secrets").unwrap(), &mut s).unwrap();
        assert_eq!(s["data"], json!({"a": "eA==", "b": "aGk="}));
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        let mut bad = json!({"metadata": {"name": "s"}, "data": {"a": "!!"}});
        assert!(validate_and_default(find("", "v1", "secrets").unwrap(), &mut bad).is_err());
    }

    #[test]
    fn shapes() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(validate_and_default(
            cm,
            &mut json!({"metadata": {"name": "c"}, "data": {"k": "v"}})
        )
        .is_ok());
        let err = validate_and_default(cm, &mut json!({"metadata": {"name": "c"}, "data": [1]}))
            .unwrap_err();
        assert!(err.contains("schema"), "{err}");
    }

    #[test]
    fn workload_selectors_must_select_their_template() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let with = |selector: Value, labels: Value| {
            let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": selector,
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
            validate_and_default(deploy, &mut d)
        };
        assert!(with(
            json!({"matchLabels": {"app": "a"}}),
            json!({"app": "a", "x": "y"})
        )
        .is_ok());
        let e = with(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})).unwrap_err();
        assert!(
            e.contains("`selector` does not match template `labels`"),
            "{e}"
        );
        let e = with(json!({}), json!({"app": "a"})).unwrap_err();
        assert!(e.contains("an empty selector"), "{e}");
        let e = with(
            json!({"matchExpressions": [{"key": "app", "operator": "Near"}]}),
            json!({"app": "a"}),
        )
        .unwrap_err();
        assert!(e.contains("unknown operator"), "{e}");
    }

    #[test]
    fn namespace_defaults() {
        let mut ns = json!({"metadata": {"name": "team"}});
        validate_and_default(find("", "v1", "namespaces").unwrap(), &mut ns).unwrap();
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
    }
}
