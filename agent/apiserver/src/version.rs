//! `GET /version`: Kubernetes `version.Info`.

use serde::Serialize;

/// The Kubernetes API version this server implements (k8s-openapi feature `v1_35`).
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
    /// This build: `v1.35.0+cairn-<crate version>`.
    pub fn current() -> VersionInfo {
        let (major, minor, patch) = KUBERNETES_VERSION;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        VersionInfo {
            major: major.into(),
            minor: minor.into(),
            git_version: format!(
                "v{major}.{minor}.{patch}+cairn-{}",
                env!("CARGO_PKG_VERSION")
            ),
            git_commit: String::new(),
            git_tree_state: "clean".into(),
            build_date: String::new(),
            go_version: String::new(),
            compiler: "rustc".into(),
            platform: format!("linux/{arch}"),
        }
    }
}
