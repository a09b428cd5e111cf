//! The small Kubernetes API objects every Cairn API endpoint answers with: `version.Info`
//! for `GET /version` and `meta/v1 Status` for every error.
//!
//! Design: plain serde types with no I/O and no Kubernetes type crate, so the health-only
//! server in `cairn` and the full `cairn-apiserver` answer identically without the device
//! binary pulling in the (large) Kubernetes types.

use serde::Serialize;
use serde_json::Value;

/// The Kubernetes API version Cairn implements (k8s-openapi feature `v1_35` in the apiserver).
pub const KUBERNETES_VERSION: (&str, &str, &str) = ("1", "35", "0");

/// Kubernetes `version.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub major: String,
    pub minor: String,
    pub git_version: String,
    pub git_commit: String,
    pub git_tree_state: String,
    pub build_date: String,
    pub go_version: String,
    pub compiler: String,
    pub platform: String,
}

impl VersionInfo {
    /// This build: `gitVersion` is `v1.35.0+cairn-<version>` (semver build metadata, like
    /// K3s' `+k3s1`). `CAIRN_GIT_COMMIT` and `CAIRN_BUILD_DATE` (RFC 3339), if set at
    /// compile time, fill `gitCommit` and `buildDate`.
    pub fn current() -> VersionInfo {
        let (major, minor, patch) = KUBERNETES_VERSION;
        VersionInfo {
            major: major.into(),
            minor: minor.into(),
            git_version: format!(
                "v{major}.{minor}.{patch}+cairn-{}",
                env!("CARGO_PKG_VERSION")
            ),
            git_commit: option_env!("CAIRN_GIT_COMMIT").unwrap_or_default().into(),
            git_tree_state: "clean".into(),
            build_date: option_env!("CAIRN_BUILD_DATE").unwrap_or_default().into(),
            go_version: String::new(),
            compiler: "rustc".into(),
            platform: format!("linux/{}", go_arch(std::env::consts::ARCH)),
        }
    }
}

/// Go's name for a Rust target architecture, as Kubernetes platforms use it.
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Kubernetes `meta/v1 Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: Value,
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    pub code: u16,
}

impl Status {
    /// A `Failure` status with HTTP `code` and Kubernetes `reason`.
    pub fn failure(code: u16, reason: &'static str, message: String) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Value::Object(Default::default()),
            status: "Failure",
            message,
            reason,
            details: None,
            code,
        }
    }

    /// The same status with `details` (`{name, kind, group}` of the object concerned).
    pub fn with_details(mut self, details: Option<Value>) -> Status {
        self.details = details;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("arm"), "arm");
        assert_eq!(go_arch("s390x"), "s390x");
    }

    #[test]
    fn version_is_kubectl_parsable() {
        let v = serde_json::to_value(VersionInfo::current()).unwrap();
        assert_eq!(v["major"], "1");
        assert!(v["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.35.0+cairn-"));
        assert!(v["platform"].as_str().unwrap().starts_with("linux/"));
    }

    #[test]
    fn failure_status_shape() {
        let s = serde_json::to_value(Status::failure(404, "NotFound", "gone".into())).unwrap();
        assert_eq!(
            s,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "gone", "reason": "NotFound", "code": 404})
        );
    }
}
