//! `GET /version`: Kubernetes `version.Info`, so `kubectl version` understands cairn.

pub use cairn_apimeta::{go_arch, VersionInfo, KUBERNETES_VERSION};
