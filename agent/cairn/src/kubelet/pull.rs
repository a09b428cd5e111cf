//! A container's image: from the node's image store or pulled from its registry, as the
//! container's `imagePullPolicy` says, with the pod's `imagePullSecrets` and the node's
//! registry settings (`DATA/agent/registries.yaml`).
//!
//! One deliberate difference from Kubernetes: with `Always`, a registry that cannot be
//! reached (or no longer has the image) is not fatal when the store already holds the image.
//! Edge nodes are often offline, and the air-gap images baked into the OS are tagged
//! `:latest`; the pod runs with what the node has and a `Warning` event says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use cairn_images::{Credentials, Image, PullOptions, Reference, Store};
use serde::Deserialize;
use serde_json::Value;

/// File name of the node's registry settings, under the kubelet's data directory.
pub const REGISTRIES_FILE: &str = "registries.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    IfNotPresent,
    Never,
}

impl Policy {
    /// The container's policy; when unset, Kubernetes' default: `Always` for `:latest` or
    /// untagged references, else `IfNotPresent`.
    pub fn of(container: &Value) -> Policy {
        match container["imagePullPolicy"].as_str() {
            Some("Always") => Policy::Always,
            Some("Never") => Policy::Never,
            Some("IfNotPresent") => Policy::IfNotPresent,
            _ => {
                let image = container["image"].as_str().unwrap_or_default();
                match Reference::parse(image) {
                    Ok(r) if r.digest.is_none() && r.tag.as_deref() == Some("latest") => {
                        Policy::Always
                    }
                    _ => Policy::IfNotPresent,
                }
            }
        }
    }
}

/// How to reach one registry (a key of `registries.yaml`: `host` or `host:port`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// A CA certificate file (PEM) trusted for this registry besides the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP: only for registries on a network you trust.
    #[serde(default)]
    pub plain_http: bool,
    /// Credentials for every pod (a pod's `imagePullSecrets` come first).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// The node's registry settings.
#[derive(Debug, Clone, Default)]
pub struct Registries(BTreeMap<String, RegistryConfig>);

impl Registries {
    /// Reads `dir/registries.yaml`; a missing file is no settings, a bad one an error naming
    /// the line.
    pub fn load(dir: &Path) -> Result<Registries, String> {
        let path = dir.join(REGISTRIES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml::from_str::<BTreeMap<String, RegistryConfig>>(&text)
                .map(Registries)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registries::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// What getting an image said, for the pod's events.
pub struct Outcome {
    pub image: Image,
    /// `(type, reason, message)` events to record.
    pub events: Vec<(&'static str, &'static str, String)>,
}

/// Why there is no image: the container's waiting reason and message.
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub events: Vec<(&'static str, &'static str, String)>,
    /// The registry could not be reached or no longer has the image: a copy on the node
    /// may stand in (not for refused credentials or a bad reference).
    unreachable: bool,
}

/// Finds or pulls the image of `container` for `pod`; `secrets` are the pod's
/// `imagePullSecrets`' data (already fetched, `None` for a missing one).
pub async fn image(
    store: Arc<Store>,
    registries: &Registries,
    container: &Value,
    secrets: &[BTreeMap<String, String>],
) -> Result<Outcome, Failure> {
    let name = container["image"].as_str().unwrap_or_default().to_owned();
    let policy = Policy::of(container);
    let local = {
        let (store, name) = (store.clone(), name.clone());
        tokio::task::spawn_blocking(move || store.resolve(&name))
            .await
            .map_err(|e| failure("ErrImagePull", e.to_string()))?
    };
    match (policy, local) {
        (Policy::Never, Ok(image)) | (Policy::IfNotPresent, Ok(image)) => Ok(Outcome {
            image,
            events: vec![(
                "Normal",
                "Pulled",
                format!("Container image \"{name}\" already present on machine"),
            )],
        }),
        (Policy::Never, Err(_)) => Err(failure(
            "ErrImageNeverPull",
            format!("Container image \"{name}\" is not present with pull policy of Never"),
        )),
        (Policy::Always, Ok(image)) => match pull(store, registries, &name, secrets).await {
            Ok(outcome) => Ok(outcome),
            // Offline or gone from the registry: run what the node has (see the module docs).
            Err(f) if f.unreachable => Ok(Outcome {
                image,
                events: vec![(
                    "Warning",
                    "Failed",
                    format!(
                        "Failed to pull image \"{name}\": {}; using the copy on the node",
                        f.message
                    ),
                )],
            }),
            Err(f) => Err(f),
        },
        (_, Err(_)) => pull(store, registries, &name, secrets).await,
    }
}

async fn pull(
    store: Arc<Store>,
    registries: &Registries,
    name: &str,
    secrets: &[BTreeMap<String, String>],
) -> Result<Outcome, Failure> {
    let reference =
        Reference::parse(name).map_err(|e| failure("InvalidImageName", e.to_string()))?;
    let config = registries
        .0
        .get(&reference.registry)
        .cloned()
        .unwrap_or_default();
    let credentials = secret_credentials(secrets, &reference.registry).or_else(|| {
        Some(Credentials {
            username: config.username.clone()?,
            password: config.password.clone().unwrap_or_default(),
        })
    });
    let ca_pem = match &config.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            failure(
                "ErrImagePull",
                format!(
                    "the CA of registry {}: {}: {e}",
                    reference.registry,
                    path.display()
                ),
            )
        })?),
        None => None,
    };
    let started = Instant::now();
    let pulled = {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            store.pull_with(
                &name,
                &PullOptions {
                    credentials: credentials.as_ref(),
                    ca_pem: ca_pem.as_deref(),
                    plain_http: config.plain_http,
                },
            )
        })
        .await
        .map_err(|e| failure("ErrImagePull", e.to_string()))?
    };
    let pulling = ("Normal", "Pulling", format!("Pulling image \"{name}\""));
    match pulled {
        Ok(image) => Ok(Outcome {
            events: vec![
                pulling,
                (
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{name}\" in {:.3}s. Image size: {} bytes.",
                        started.elapsed().as_secs_f64(),
                        image.size
                    ),
                ),
            ],
            image,
        }),
        Err(e) => {
            let message = format!("Failed to pull image \"{name}\": {e}");
            Err(Failure {
                reason: "ErrImagePull",
                events: vec![pulling, ("Warning", "Failed", message.clone())],
                message,
                unreachable: matches!(
                    e,
                    cairn_images::Error::Registry { .. }
                        | cairn_images::Error::NotInRegistry { .. }
                ),
            })
        }
    }
}

fn failure(reason: &'static str, message: String) -> Failure {
    Failure {
        events: vec![("Warning", "Failed", message.clone())],
        reason,
        message,
        unreachable: false,
    }
}

/// Credentials for `registry` from `kubernetes.io/dockerconfigjson` (or legacy
/// `kubernetes.io/dockercfg`) secrets: an entry whose key names the registry, with or
/// without a scheme and path (`https://index.docker.io/v1/` stands for Docker Hub).
fn secret_credentials(secrets: &[BTreeMap<String, String>], registry: &str) -> Option<Credentials> {
    let host_of = |key: &str| -> String {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = key.split('/').next().unwrap_or_default();
        match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
            other => other.to_owned(),
        }
    };
    for data in secrets {
        let auths: Value = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
            (Some(json), _) => serde_json::from_str::<Value>(json)
                .ok()
                .map(|v| v["auths"].clone())
                .unwrap_or_default(),
            (None, Some(json)) => serde_json::from_str(json).unwrap_or_default(),
            _ => continue,
        };
        let Some(entries) = auths.as_object() else {
            continue;
        };
        for (key, entry) in entries {
            if host_of(key) != registry {
                continue;
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Some(Credentials {
                    username: u.to_owned(),
                    password: p.to_owned(),
                });
            }
            let decoded = entry["auth"]
                .as_str()
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|b| String::from_utf8(b).ok())?;
            let (u, p) = decoded.split_once(':')?;
            return Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_policies_follow_kubernetes() {
        let p = |image: &str| Policy::of(&json!({"image": image}));
        assert_eq!(p("busybox"), Policy::Always);
        assert_eq!(p("busybox:latest"), Policy::Always);
        assert_eq!(p("busybox:1.36"), Policy::IfNotPresent);
        assert_eq!(
            p("busybox@sha256:0123456789012345678901234567890123456789012345678901234567890123"),
            Policy::IfNotPresent
        );
        assert_eq!(
            Policy::of(&json!({"image": "busybox", "imagePullPolicy": "Never"})),
            Policy::Never
        );
    }

    #[test]
    fn pull_secrets_match_their_registry() {
        let cfg = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "registry.local:5000": {"username": "u", "password": "p"},
        }});
        let secrets = vec![BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            cfg.to_string(),
        )])];
        let hub = secret_credentials(&secrets, "docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        let local = secret_credentials(&secrets, "registry.local:5000").unwrap();
        assert_eq!(local.username, "u");
        assert!(secret_credentials(&secrets, "quay.io").is_none());
    }

    #[test]
    fn registry_settings_reject_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("cairn-registries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(REGISTRIES_FILE),
            "r.local:5000:\n  plain_http: true\n  cafile: x\n",
        )
        .unwrap();
        let e = Registries::load(&dir).unwrap_err();
        assert!(e.contains("cafile"), "{e}");
        std::fs::write(
            dir.join(REGISTRIES_FILE),
            "r.local:5000:\n  plain_http: true\n",
        )
        .unwrap();
        assert!(Registries::load(&dir).unwrap().0["r.local:5000"].plain_http);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
