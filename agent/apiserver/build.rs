//! Generates the OpenAPI component schemas of every served kind at build time, on the build
//! host, from k8s-openapi's `schemars` implementations (descriptions included), and stores
//! them zstd-compressed in `$OUT_DIR/schemas.json.zst` for `src/openapi.rs` to embed. The
//! device binary thus carries ~100 KiB of compressed data instead of the schema code of
//! every Kubernetes type.
//!
//! The kinds listed here must match `src/resources.rs`; a unit test in `openapi.rs` checks
//! that every served kind has its schema.
//!
//! It also embeds Kubernetes' protobuf schemas (a `FileDescriptorSet` compiled by `protoc`
//! from the Kubernetes 1.35 `.proto` files; `make deps` installs it, see
//! `ci/install-deps.sh`) as `$OUT_DIR/kubernetes.protoset.zst`, for `src/protobuf.rs`.

use std::io::Write;

use k8s_openapi::api::{
    apps, batch, certificates, coordination, core, discovery, networking, policy, rbac,
};
use k8s_openapi::api::{scheduling, storage};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;

fn main() {
    let mut generator = SchemaSettings::openapi3().into_generator();
    fn add<T: JsonSchema>(g: &mut schemars::SchemaGenerator) {
        g.subschema_for::<T>();
    }
    let g = &mut generator;
    add::<core::v1::Namespace>(g);
    add::<core::v1::Node>(g);
    add::<core::v1::Pod>(g);
    add::<core::v1::Service>(g);
    add::<core::v1::Endpoints>(g);
    add::<core::v1::ConfigMap>(g);
    add::<core::v1::Secret>(g);
    add::<core::v1::ServiceAccount>(g);
    add::<core::v1::Event>(g);
    add::<core::v1::PersistentVolume>(g);
    add::<core::v1::PersistentVolumeClaim>(g);
    add::<apps::v1::Deployment>(g);
    add::<apps::v1::ReplicaSet>(g);
    add::<apps::v1::DaemonSet>(g);
    add::<apps::v1::StatefulSet>(g);
    add::<apps::v1::ControllerRevision>(g);
    add::<batch::v1::Job>(g);
    add::<batch::v1::CronJob>(g);
    add::<certificates::v1::CertificateSigningRequest>(g);
    add::<coordination::v1::Lease>(g);
    add::<discovery::v1::EndpointSlice>(g);
    add::<networking::v1::Ingress>(g);
    add::<networking::v1::IngressClass>(g);
    add::<storage::v1::StorageClass>(g);
    add::<rbac::v1::Role>(g);
    add::<rbac::v1::RoleBinding>(g);
    add::<rbac::v1::ClusterRole>(g);
    add::<rbac::v1::ClusterRoleBinding>(g);
    add::<policy::v1::PodDisruptionBudget>(g);
    add::<scheduling::v1::PriorityClass>(g);
    add::<k8s_openapi::api::authentication::v1::SelfSubjectReview>(g);
    add::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>(g);
    add::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>(g);
    add::<k8s_openapi::api::authorization::v1::SubjectAccessReview>(g);
    add::<k8s_openapi::api::authorization::v1::LocalSubjectAccessReview>(g);
    add::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(g);
    // What every API answers with besides objects.
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>(g);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(g);
    add::<k8s_openapi::api::autoscaling::v1::Scale>(g);

    let schemas = generator.take_definitions(true);
    let json = serde_json::to_vec(&schemas).expect("schemas serialise");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).expect("zstd");
    encoder.write_all(&json).expect("compress");
    let compressed = encoder.finish().expect("compress");
    std::fs::write(out.join("schemas.json.zst"), compressed).expect("write schemas");
    embed_protoset(&out);
    println!("cargo::rerun-if-changed=build.rs");
}

/// Where `make deps` installs the descriptor set; `CAIRN_K8S_PROTOSET` overrides it.
const PROTOSET: &str = "/usr/local/share/cairn/kubernetes-v1.35.protoset";

fn embed_protoset(out: &std::path::Path) {
    use prost::Message as _;
    println!("cargo::rerun-if-env-changed=CAIRN_K8S_PROTOSET");
    let path = std::env::var("CAIRN_K8S_PROTOSET").unwrap_or_else(|_| PROTOSET.to_owned());
    println!("cargo::rerun-if-changed={path}");
    let set = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading Kubernetes' protobuf schemas from {path}: {e}\n\
             `make deps` (ci/install-deps.sh) compiles them; set CAIRN_K8S_PROTOSET to use \
             another copy"
        )
    });
    // The tests encode their bodies against the full descriptor set.
    let compressed = zstd::encode_all(set.as_slice(), 19).expect("compress");
    std::fs::write(out.join("kubernetes.protoset.zst"), compressed).expect("write protoset");

    let set = prost_types::FileDescriptorSet::decode(set.as_slice()).expect("a FileDescriptorSet");
    let mut messages = Vec::new();
    fn collect(
        prefix: &str,
        m: &prost_types::DescriptorProto,
        out: &mut Vec<(String, prost_types::DescriptorProto)>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            collect(&name, nested, out);
        }
        out.push((name, m.clone()));
    }
    for file in &set.file {
        for m in &file.message_type {
            collect(file.package(), m, &mut messages);
        }
    }
    messages.sort_by(|a, b| a.0.cmp(&b.0));
    let index = |type_name: &str| {
        let name = type_name.trim_start_matches('.');
        messages
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .unwrap_or_else(|_| panic!("message {name} is not in the descriptor set"))
    };
    use prost_types::field_descriptor_proto::{Label, Type};
    let mut code = String::from("// Generated by build.rs from Kubernetes' protobuf schemas.\n");
    code.push_str("static MESSAGES: &[Message] = &[\n");
    for (name, m) in &messages {
        let map_entry = m.options.as_ref().is_some_and(|o| o.map_entry());
        code.push_str(&format!(
            "Message {{ name: {name:?}, map_entry: {map_entry}, fields: &["
        ));
        let mut fields = m.field.clone();
        fields.sort_by_key(|f| f.number());
        for f in &fields {
            let ty = match f.r#type() {
                Type::Double => "Ty::Double".to_owned(),
                Type::Float => "Ty::Float".to_owned(),
                Type::Int64 | Type::Int32 | Type::Enum => "Ty::Int".to_owned(),
                Type::Uint64 | Type::Uint32 => "Ty::UInt".to_owned(),
                Type::Sint64 | Type::Sint32 => "Ty::SInt".to_owned(),
                Type::Fixed64 => "Ty::Fixed64".to_owned(),
                Type::Sfixed64 => "Ty::SFixed64".to_owned(),
                Type::Fixed32 => "Ty::Fixed32".to_owned(),
                Type::Sfixed32 => "Ty::SFixed32".to_owned(),
                Type::Bool => "Ty::Bool".to_owned(),
                Type::String => "Ty::String".to_owned(),
                Type::Bytes => "Ty::Bytes".to_owned(),
                Type::Message => format!("Ty::Message({})", index(f.type_name())),
                Type::Group => panic!("{name}.{}: groups are not used by Kubernetes", f.name()),
            };
            let repeated = f.label() == Label::Repeated;
            code.push_str(&format!(
                "Field {{ number: {}, name: {:?}, ty: {ty}, repeated: {repeated} }},",
                f.number(),
                f.name()
            ));
        }
        code.push_str("] },\n");
    }
    code.push_str("];\n");
    std::fs::write(out.join("protobuf_schema.rs"), code).expect("write protobuf schema");
}
