//! `GET /version`: Kubernetes `version.Info`, so `kubectl version` understands cairn.

use serde::Serialize;

/// The Kubernetes API version cairn aims to be compatible with.
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
    /// This build: `gitVersion` is `v1.35.0+cairn-<crate version>` (semver build metadata,
    /// like K3s' `+k3s1`). `CAIRN_GIT_COMMIT` and `CAIRN_BUILD_DATE` (RFC 3339), if set at
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
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}
