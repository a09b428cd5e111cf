//! OCI platforms (`linux/arm64`, `linux/arm/v7`) and how a node picks its manifest from a
//! multi-architecture index.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform: what an image index says each manifest runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture, in Go's names (`amd64`, `arm64`, `arm`, `s390x`).
    pub architecture: String,
    /// CPU variant (`v7` for 32-bit ARM), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A Linux platform.
    pub fn linux(architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The platform this binary runs on: `x86_64` is `amd64`, `aarch64` is `arm64`, `arm`
    /// is `arm` variant `v7` (the 32-bit ARM boards Cairn supports), `s390x` is `s390x`.
    pub fn host() -> Platform {
        match std::env::consts::ARCH {
            "x86_64" => Platform::linux("amd64", None),
            "aarch64" => Platform::linux("arm64", None),
            "arm" => Platform::linux("arm", Some("v7")),
            "x86" => Platform::linux("386", None),
            "powerpc64" => Platform::linux("ppc64", None),
            other => Platform::linux(other, None),
        }
    }

    /// How well an image for `candidate` runs here: `None` when it does not, else a rank
    /// (0 is an exact match; higher is an older compatible variant such as arm/v6 on v7).
    pub fn rank(&self, candidate: &Platform) -> Option<u8> {
        if !self.os.eq_ignore_ascii_case(&candidate.os) {
            return None;
        }
        let (arch, variant) = normalise(&self.architecture, self.variant.as_deref());
        let (c_arch, c_variant) = normalise(&candidate.architecture, candidate.variant.as_deref());
        if arch != c_arch {
            return None;
        }
        if variant == c_variant {
            return Some(0);
        }
        // 32-bit ARM runs older variants: v7 runs v6 and v5 images, v8 (aarch32) runs v7 too.
        let arm_level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u8>().ok());
        if arch == "arm" {
            if let (Some(have), Some(want)) = (arm_level(&variant), arm_level(&c_variant)) {
                if want < have {
                    return Some(have - want);
                }
            }
        }
        None
    }
}

/// Architecture aliases and default variants the way containerd normalises them.
fn normalise(arch: &str, variant: Option<&str>) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.unwrap_or("").to_ascii_lowercase();
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant.is_empty() {
                "v1".into()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant.is_empty() || variant == "8" {
                "v8".into()
            } else {
                variant
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        "i386" | "i486" | "i586" | "i686" | "386" => ("386".into(), variant),
        _ => (arch, variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_platform_is_a_go_name() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64");
        #[cfg(target_arch = "arm")]
        assert_eq!(host.to_string(), "linux/arm/v7");
        #[cfg(target_arch = "s390x")]
        assert_eq!(host.to_string(), "linux/s390x");
    }

    #[test]
    fn matching() {
        let amd64 = Platform::linux("amd64", None);
        let arm64 = Platform::linux("arm64", None);
        let armv7 = Platform::linux("arm", Some("v7"));
        assert_eq!(amd64.rank(&Platform::linux("amd64", None)), Some(0));
        assert_eq!(amd64.rank(&arm64), None);
        assert_eq!(
            amd64.rank(&Platform {
                os: "windows".into(),
                ..amd64.clone()
            }),
            None
        );
        assert_eq!(arm64.rank(&Platform::linux("arm64", Some("v8"))), Some(0));
        assert_eq!(arm64.rank(&armv7), None);
        assert_eq!(armv7.rank(&Platform::linux("arm", None)), Some(0));
        assert_eq!(armv7.rank(&Platform::linux("arm", Some("v6"))), Some(1));
        assert_eq!(armv7.rank(&Platform::linux("arm", Some("v5"))), Some(2));
        assert_eq!(Platform::linux("arm", Some("v6")).rank(&armv7), None);
        assert_eq!(armv7.rank(&Platform::linux("unknown", None)), None);
        assert_eq!(
            Platform::linux("s390x", None).rank(&Platform::linux("s390x", None)),
            Some(0)
        );
        assert_eq!(armv7.to_string(), "linux/arm/v7");
    }
}
