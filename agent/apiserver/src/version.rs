//! `GET /version`: Kubernetes `version.Info`.

pub use cairn_apimeta::{VersionInfo, KUBERNETES_VERSION};
