//! Generates the OpenAPI component schemas of every served kind at build time, on the build
//! host, from k8s-openapi's `schemars` implementations (descriptions included), and stores
//! them zstd-compressed in `$OUT_DIR/schemas.json.zst` for `src/openapi.rs` to embed. The
//! device binary thus carries ~100 KiB of compressed data instead of the schema code of
//! every Kubernetes type.
//!
//! The kinds listed here must match `src/resources.rs`; a unit test in `openapi.rs` checks
//! that every served kind has its schema.

use std::io::Write;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret, ServiceAccount};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;

fn main() {
    let mut generator = SchemaSettings::openapi3().into_generator();
    fn add<T: JsonSchema>(g: &mut schemars::SchemaGenerator) {
        g.subschema_for::<T>();
    }
    add::<Namespace>(&mut generator);
    add::<ConfigMap>(&mut generator);
    add::<Secret>(&mut generator);
    add::<ServiceAccount>(&mut generator);
    add::<Event>(&mut generator);
    add::<Lease>(&mut generator);
    // What every API answers with besides objects.
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>(&mut generator);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(&mut generator);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent<Namespace>>(&mut generator);

    let schemas = generator.take_definitions(true);
    let json = serde_json::to_vec(&schemas).expect("schemas serialise");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).expect("zstd");
    encoder.write_all(&json).expect("compress");
    let compressed = encoder.finish().expect("compress");
    std::fs::write(out.join("schemas.json.zst"), compressed).expect("write schemas");
    println!("cargo::rerun-if-changed=build.rs");
}
