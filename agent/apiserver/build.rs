//! Generates the OpenAPI component schemas of every served kind at build time, on the build
//! host, from k8s-openapi's `schemars` implementations (descriptions included), and stores
//! them zstd-compressed in `$OUT_DIR/schemas.json.zst` for `src/openapi.rs` to embed. The
//! device binary thus carries ~100 KiB of compressed data instead of the schema code of
//! every Kubernetes type.
//!
//! The kinds listed here must match `src/resources.rs`; a unit test in `openapi.rs` checks
//! that every served kind has its schema.

use std::io::Write;

use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking, policy, rbac};
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
    println!("cargo::rerun-if-changed=build.rs");
}
