//! Bodies are built and encoded with prost-reflect (an independent implementation) against the
//! same descriptor set, as Go's encoder writes them (non-pointer fields even when empty), and
//! decoded back to JSON.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage as _, Value};
use serde_json::json;

use super::*;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let set = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.protoset.zst"));
        DescriptorPool::decode(zstd::decode_all(&set[..]).unwrap().as_slice()).unwrap()
    })
}

/// What cairn makes of `msg`.
fn to_json(msg: &DynamicMessage) -> Json {
    let schema = find(msg.descriptor().full_name()).expect("in the tables");
    match object(schema, &msg.encode_to_vec()) {
        Ok(json) => json,
        Err(e) => panic!("{e:?}"),
    }
}

fn new(name: &str) -> DynamicMessage {
    let desc = pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the schemas"));
    DynamicMessage::new(desc)
}

fn set(msg: &mut DynamicMessage, field: &str, value: Value) {
    msg.try_set_field_by_name(field, value)
        .unwrap_or_else(|e| panic!("{field}: {e}"));
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`.
fn envelope(api_version: &str, kind: &str, object: &DynamicMessage) -> Vec<u8> {
    let mut type_meta = new("apimachinery.pkg.runtime.TypeMeta");
    set(&mut type_meta, "apiVersion", string(api_version));
    set(&mut type_meta, "kind", string(kind));
    let mut unknown = new("apimachinery.pkg.runtime.Unknown");
    set(&mut unknown, "typeMeta", Value::Message(type_meta));
    set(
        &mut unknown,
        "raw",
        Value::Bytes(object.encode_to_vec().into()),
    );
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

/// ObjectMeta as Go writes it for `kubectl create`: name set, the other strings empty, a
/// zero creationTimestamp.
fn object_meta(name: &str) -> DynamicMessage {
    let mut meta = new("apimachinery.pkg.apis.meta.v1.ObjectMeta");
    set(&mut meta, "name", string(name));
    for empty in ["generateName", "namespace", "uid", "resourceVersion"] {
        set(&mut meta, empty, string(""));
    }
    set(&mut meta, "generation", Value::I64(0));
    set(
        &mut meta,
        "creationTimestamp",
        Value::Message(new("apimachinery.pkg.apis.meta.v1.Time")),
    );
    meta
}

#[test]
fn a_namespace_decodes_without_gos_empty_fields() {
    let mut ns = new("api.core.v1.Namespace");
    set(&mut ns, "metadata", Value::Message(object_meta("team-a")));
    set(
        &mut ns,
        "spec",
        Value::Message(new("api.core.v1.NamespaceSpec")),
    );
    let json = decode(&envelope("v1", "Namespace", &ns), ("v1", "Namespace")).unwrap();
    assert_eq!(
        json,
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "generation": 0},
            "spec": {},
        })
    );
}

#[test]
fn a_deployment_keeps_zero_replicas_and_decodes_special_types() {
    let mut limits = std::collections::HashMap::new();
    let mut quantity = new("apimachinery.pkg.api.resource.Quantity");
    set(&mut quantity, "string", string("250m"));
    limits.insert(MapKey::String("cpu".into()), Value::Message(quantity));
    let mut resources = new("api.core.v1.ResourceRequirements");
    set(&mut resources, "limits", Value::Map(limits));
    let mut container = new("api.core.v1.Container");
    set(&mut container, "name", string("web"));
    set(&mut container, "image", string("nginx:1.27"));
    set(&mut container, "resources", Value::Message(resources));
    let mut pod_spec = new("api.core.v1.PodSpec");
    set(
        &mut pod_spec,
        "containers",
        Value::List(vec![Value::Message(container)]),
    );
    let mut template = new("api.core.v1.PodTemplateSpec");
    set(&mut template, "metadata", Value::Message(object_meta("")));
    set(&mut template, "spec", Value::Message(pod_spec));
    let mut max_unavailable = new("apimachinery.pkg.util.intstr.IntOrString");
    set(&mut max_unavailable, "type", Value::I64(0));
    set(&mut max_unavailable, "intVal", Value::I32(0));
    let mut max_surge = new("apimachinery.pkg.util.intstr.IntOrString");
    set(&mut max_surge, "type", Value::I64(1));
    set(&mut max_surge, "strVal", string("25%"));
    let mut rolling = new("api.apps.v1.RollingUpdateDeployment");
    set(
        &mut rolling,
        "maxUnavailable",
        Value::Message(max_unavailable),
    );
    set(&mut rolling, "maxSurge", Value::Message(max_surge));
    let mut strategy = new("api.apps.v1.DeploymentStrategy");
    set(&mut strategy, "rollingUpdate", Value::Message(rolling));
    let mut spec = new("api.apps.v1.DeploymentSpec");
    set(&mut spec, "replicas", Value::I32(0));
    set(&mut spec, "template", Value::Message(template));
    set(&mut spec, "strategy", Value::Message(strategy));
    let mut deploy = new("api.apps.v1.Deployment");
    set(&mut deploy, "metadata", Value::Message(object_meta("web")));
    set(&mut deploy, "spec", Value::Message(spec));

    let json = decode(&envelope("apps/v1", "Deployment", &deploy), ("", "")).unwrap();
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["spec"]["replicas"], 0, "{json}");
    assert_eq!(
        json["spec"]["strategy"]["rollingUpdate"],
        json!({"maxUnavailable": 0, "maxSurge": "25%"})
    );
    let container = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["resources"]["limits"]["cpu"], "250m");
    assert!(json["spec"]["template"]["metadata"]
        .get("creationTimestamp")
        .is_none());
    // The decoded object passes the typed validation of JSON bodies.
    let typed: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json).unwrap();
    assert_eq!(typed.spec.unwrap().replicas, Some(0));
}

#[test]
fn secret_bytes_are_base64_and_times_are_rfc3339() {
    let mut data = std::collections::HashMap::new();
    data.insert(
        MapKey::String("password".into()),
        Value::Bytes(b"s3cr\xffet".to_vec().into()),
    );
    let mut meta = object_meta("db");
    let mut at = new("apimachinery.pkg.apis.meta.v1.Time");
    set(&mut at, "seconds", Value::I64(1_767_323_045));
    set(&mut meta, "creationTimestamp", Value::Message(at));
    let mut secret = new("api.core.v1.Secret");
    set(&mut secret, "metadata", Value::Message(meta));
    set(&mut secret, "data", Value::Map(data));
    set(&mut secret, "type", string("Opaque"));
    let json = decode(&envelope("v1", "Secret", &secret), ("v1", "Secret")).unwrap();
    assert_eq!(json["data"]["password"], "czNjcv9ldA==");
    assert_eq!(json["type"], "Opaque");
    assert_eq!(
        json["metadata"]["creationTimestamp"],
        "2026-01-02T03:04:05Z"
    );

    let mut event = new("api.events.v1.Event");
    let mut micro = new("apimachinery.pkg.apis.meta.v1.MicroTime");
    set(&mut micro, "seconds", Value::I64(1_767_323_045));
    set(&mut micro, "nanos", Value::I32(123_456_789));
    set(&mut event, "eventTime", Value::Message(micro));
    let json = decode(&envelope("events.k8s.io/v1", "Event", &event), ("", "")).unwrap();
    assert_eq!(json["eventTime"], "2026-01-02T03:04:05.123456Z");
}

#[test]
fn delete_options_come_from_the_meta_package() {
    let mut opts = new("apimachinery.pkg.apis.meta.v1.DeleteOptions");
    set(&mut opts, "gracePeriodSeconds", Value::I64(0));
    set(&mut opts, "propagationPolicy", string("Foreground"));
    let mut pre = new("apimachinery.pkg.apis.meta.v1.Preconditions");
    set(&mut pre, "uid", string("1234"));
    set(&mut opts, "preconditions", Value::Message(pre));
    // client-go names DeleteOptions in the group of the resource being deleted.
    let json = decode(&envelope("v1", "DeleteOptions", &opts), ("", "")).unwrap();
    assert_eq!(json["gracePeriodSeconds"], 0);
    assert_eq!(json["propagationPolicy"], "Foreground");
    assert_eq!(json["preconditions"]["uid"], "1234");
    // An envelope without typeMeta falls back to what the URL expects.
    let mut body = MAGIC.to_vec();
    let mut unknown = new("apimachinery.pkg.runtime.Unknown");
    set(
        &mut unknown,
        "raw",
        Value::Bytes(opts.encode_to_vec().into()),
    );
    body.extend(unknown.encode_to_vec());
    let json = decode(&body, ("meta.k8s.io/v1", "DeleteOptions")).unwrap();
    assert_eq!(json["kind"], "DeleteOptions");
    assert_eq!(json["propagationPolicy"], "Foreground");
}

#[test]
fn inline_structs_are_flattened_as_in_json() {
    let mut ref_ = new("api.core.v1.LocalObjectReference");
    set(&mut ref_, "name", string("settings"));
    let mut cm = new("api.core.v1.ConfigMapVolumeSource");
    set(&mut cm, "localObjectReference", Value::Message(ref_));
    let mut source = new("api.core.v1.VolumeSource");
    set(&mut source, "configMap", Value::Message(cm));
    let mut volume = new("api.core.v1.Volume");
    set(&mut volume, "name", string("config"));
    set(&mut volume, "volumeSource", Value::Message(source));
    let mut exec = new("api.core.v1.ExecAction");
    set(&mut exec, "command", Value::List(vec![string("true")]));
    let mut handler = new("api.core.v1.ProbeHandler");
    set(&mut handler, "exec", Value::Message(exec));
    let mut probe = new("api.core.v1.Probe");
    set(&mut probe, "handler", Value::Message(handler));
    set(&mut probe, "periodSeconds", Value::I32(5));
    let mut term = new("api.core.v1.PodAffinityTerm");
    set(
        &mut term,
        "labelSelector",
        Value::Message(new("apimachinery.pkg.apis.meta.v1.LabelSelector")),
    );
    set(&mut term, "topologyKey", string("kubernetes.io/hostname"));

    assert_eq!(
        to_json(&volume),
        json!({"name": "config", "configMap": {"name": "settings"}})
    );
    assert_eq!(
        to_json(&probe),
        json!({"exec": {"command": ["true"]}, "periodSeconds": 5})
    );
    // A field that merely shares its type's name stays a field.
    assert_eq!(
        to_json(&term),
        json!({"labelSelector": {}, "topologyKey": "kubernetes.io/hostname"})
    );
}

#[test]
fn crd_schemas_use_their_json_names() {
    let mut props = new("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps");
    set(&mut props, "type", string("object"));
    set(
        &mut props,
        "xKubernetesPreserveUnknownFields",
        Value::Bool(true),
    );
    set(&mut props, "ref", string("#/definitions/x"));
    let mut or_bool =
        new("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool");
    set(&mut or_bool, "allows", Value::Bool(true));
    set(&mut props, "additionalProperties", Value::Message(or_bool));
    let mut default = new("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON");
    set(
        &mut default,
        "raw",
        Value::Bytes(br#"{"a":[1,2]}"#.to_vec().into()),
    );
    set(&mut props, "default", Value::Message(default));
    let json = to_json(&props);
    assert_eq!(
        json,
        json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "$ref": "#/definitions/x",
            "additionalProperties": true,
            "default": {"a": [1, 2]},
        })
    );
}

#[test]
fn go_durations_print_as_go_does() {
    for (nanos, want) in [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_000_000_000, "1s"),
        (90_000_000_000, "1m30s"),
        (7_200_000_000_000, "2h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-61_000_000_000, "-1m1s"),
    ] {
        assert_eq!(go_duration(nanos), want, "{nanos}");
    }
}

#[test]
fn bad_bodies_are_refused_with_the_reason() {
    let mut ns = new("api.core.v1.Namespace");
    set(&mut ns, "metadata", Value::Message(object_meta("x")));
    let good = envelope("v1", "Namespace", &ns);

    let err = decode(&good[4..], ("v1", "Namespace")).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");

    let err = decode(&good[..good.len() - 3], ("v1", "Namespace")).unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");

    let err = decode(&envelope("v1", "NoSuchKind", &ns), ("", "")).unwrap_err();
    assert!(
        matches!(err, ApiError::UnsupportedMediaType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("NoSuchKind"), "{err}");

    // A raw object that is not the named kind: garbage bytes inside a valid envelope.
    let mut unknown = new("apimachinery.pkg.runtime.Unknown");
    set(
        &mut unknown,
        "raw",
        Value::Bytes(vec![0x0a, 0xff, 0xff].into()),
    );
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    let err = decode(&body, ("v1", "Namespace")).unwrap_err();
    assert!(err.to_string().contains("not a valid Namespace"), "{err}");

    let mut unknown = new("apimachinery.pkg.runtime.Unknown");
    set(&mut unknown, "contentEncoding", string("gzip"));
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    let err = decode(&body, ("v1", "Namespace")).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
}

#[test]
fn every_served_kind_has_a_protobuf_schema() {
    // The metrics API is read-only: no bodies to decode.
    let writable = crate::resources::RESOURCES
        .iter()
        .filter(|r| r.group != crate::resource_metrics::GROUP);
    for r in writable {
        assert!(
            message_for(&r.api_version(), r.kind).is_some(),
            "{} {}",
            r.api_version(),
            r.kind
        );
    }
}

#[test]
fn wire_forms_go_may_write_are_read() {
    // `repeated int32 values = 3` of PodFailurePolicyOnExitCodesRequirement, unpacked (as
    // proto2 writes it) and packed (as a proto3 writer would).
    let schema = find("api.batch.v1.PodFailurePolicyOnExitCodesRequirement").unwrap();
    let unpacked = [0x18, 0x01, 0x18, 0x96, 0x01];
    let packed = [0x1a, 0x03, 0x01, 0x96, 0x01];
    for bytes in [&unpacked[..], &packed[..]] {
        assert_eq!(object(schema, bytes).unwrap()["values"], json!([1, 150]));
    }
    // A map entry without its value is the value type's zero; unknown fields are skipped.
    let cm = find("api.core.v1.ConfigMap").unwrap();
    let entry = [0x0a, 0x01, b'k'];
    let mut bytes = vec![0x12, entry.len() as u8];
    bytes.extend(entry);
    bytes.extend([0xf8, 0x07, 0x01]); // field 127, varint: not in the schema
    assert_eq!(object(cm, &bytes).unwrap(), json!({"data": {"k": ""}}));
}

#[test]
fn malformed_wire_data_is_an_error_not_a_panic() {
    let cm = find("api.core.v1.ConfigMap").unwrap();
    for (bytes, want) in [
        (&[0x12, 0x05, 0x0a][..], "truncated"),
        (&[0x12][..], "truncated varint"),
        (
            &[
                0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            "varint",
        ),
        (&[0x13][..], "wire type 3"),
        (&[0x10, 0x01][..], "wrong wire type"),
        (&[0x0a, 0x02, 0x0a, 0x01][..], "truncated"),
    ] {
        match object(cm, bytes) {
            Err(Error::Wire(e)) => assert!(e.contains(want), "{bytes:?}: {e}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    let mut name = vec![0x0a, 0x02, 0xc3, 0x28]; // metadata { name: invalid UTF-8 }
    name.splice(0..0, [0x0a, 0x04]);
    match object(cm, &name[..6]) {
        Err(Error::Wire(e)) => assert!(e.contains("UTF-8"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Nesting is bounded: a JSONSchemaProps `not` chain 100 deep.
    let props = find("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps").unwrap();
    let mut deep: Vec<u8> = Vec::new();
    for _ in 0..100 {
        let mut outer = vec![0xe2, 0x01]; // field 28 (`not`), length-delimited
        let mut len = deep.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            outer.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        outer.extend(&deep);
        deep = outer;
    }
    match object(props, &deep) {
        Err(Error::Wire(e)) => assert!(e.contains("nested deeper"), "{e}"),
        other => panic!("{other:?}"),
    }
}
