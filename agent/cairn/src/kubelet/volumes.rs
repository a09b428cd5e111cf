//! Pod volumes on the node, under `DATA/agent/pods/<uid>/volumes/<name>`: emptyDir, hostPath,
//! configMap, secret, downwardAPI and projected (with the service-account token), plus the
//! ConfigMaps and Secrets a pod refers to, fetched once per sync.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::client::{Client, ClientError};

use super::env::{self, PodFacts};

/// The ConfigMaps and Secrets of one namespace that a pod uses (`None`: does not exist).
#[derive(Default)]
pub struct Refs {
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl Refs {
    /// Reads every ConfigMap and Secret the pod names (env, envFrom, volumes).
    pub async fn fetch(client: &Client, pod: &Value) -> Result<Refs, ClientError> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let mut names: Vec<(bool, String)> = Vec::new();
        references(pod, &mut |secret, name| {
            if !names.contains(&(secret, name.to_owned())) {
                names.push((secret, name.to_owned()));
            }
        });
        let mut refs = Refs::default();
        for (secret, name) in names {
            let plural = if secret { "secrets" } else { "configmaps" };
            let path = format!("/api/v1/namespaces/{ns}/{plural}/{name}");
            let data = match client.request(hyper::Method::GET, &path, None).await {
                Ok(object) => Some(decode(&object, secret)),
                Err(ClientError::Status { code, .. }) if code == hyper::StatusCode::NOT_FOUND => {
                    None
                }
                Err(e) => return Err(e),
            };
            if secret {
                refs.secrets.insert(name, data);
            } else {
                refs.config_maps.insert(name, data);
            }
        }
        Ok(refs)
    }
}

impl env::Source for Refs {
    fn config_map(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self.config_maps.get(name).cloned().flatten())
    }
    fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self.secrets.get(name).cloned().flatten())
    }
}

pub(super) fn decode(object: &Value, secret: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let value = if secret {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else {
            text.to_owned()
        };
        out.insert(k.clone(), value);
    }
    if secret {
        for (k, v) in object["stringData"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
    }
    if !secret {
        for (k, v) in object["binaryData"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            out.insert(k.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// Calls `found(is_secret, name)` for every ConfigMap and Secret the pod refers to.
fn references(pod: &Value, found: &mut dyn FnMut(bool, &str)) {
    let spec = &pod["spec"];
    let mut named = |secret: bool, v: &Value| {
        if let Some(n) = v.as_str() {
            found(secret, n);
        }
    };
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        named(true, &volume["secret"]["secretName"]);
        named(false, &volume["configMap"]["name"]);
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            named(true, &source["secret"]["name"]);
            named(false, &source["configMap"]["name"]);
        }
    }
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                named(true, &e["valueFrom"]["secretKeyRef"]["name"]);
                named(false, &e["valueFrom"]["configMapKeyRef"]["name"]);
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                named(true, &from["secretRef"]["name"]);
                named(false, &from["configMapRef"]["name"]);
            }
        }
    }
}

/// Makes the pod's volumes under `dir`; returns each volume's path on the node.
pub async fn prepare(
    client: &Client,
    pod: &Value,
    dir: &Path,
    refs: &Refs,
    facts: &PodFacts<'_>,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        let path = dir.join(name);
        let io = |e: io::Error| format!("volume {name:?}: {e}");
        if let Some(host) = volume.get("hostPath") {
            let p = PathBuf::from(host["path"].as_str().unwrap_or("/"));
            match host["type"].as_str().unwrap_or("") {
                "DirectoryOrCreate" => fs::create_dir_all(&p).map_err(io)?,
                "FileOrCreate" if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent).map_err(io)?;
                    }
                    fs::write(&p, b"").map_err(io)?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(format!("hostPath {} is not a directory", p.display()))
                }
                "File" if !p.is_file() => {
                    return Err(format!("hostPath {} is not a file", p.display()))
                }
                _ => {}
            }
            paths.insert(name.to_owned(), p);
            continue;
        }
        if volume.get("emptyDir").is_some() {
            fs::create_dir_all(&path).map_err(io)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).map_err(io)?;
        } else if let Some(cm) = volume.get("configMap") {
            let cm_name = cm["name"].as_str().unwrap_or_default();
            let data = refs.config_maps.get(cm_name).cloned().flatten();
            let optional = cm["optional"].as_bool().unwrap_or(false);
            let Some(data) = data.or_else(|| optional.then(BTreeMap::new)) else {
                return Err(format!("configmap \"{cm_name}\" not found"));
            };
            write_files(
                &path,
                &select(&data, &cm["items"]),
                mode(&cm["defaultMode"], 0o644),
            )
            .map_err(io)?;
        } else if let Some(s) = volume.get("secret") {
            let s_name = s["secretName"].as_str().unwrap_or_default();
            let data = refs.secrets.get(s_name).cloned().flatten();
            let optional = s["optional"].as_bool().unwrap_or(false);
            let Some(data) = data.or_else(|| optional.then(BTreeMap::new)) else {
                return Err(format!("secret \"{s_name}\" not found"));
            };
            write_files(
                &path,
                &select(&data, &s["items"]),
                mode(&s["defaultMode"], 0o644),
            )
            .map_err(io)?;
        } else if let Some(d) = volume.get("downwardAPI") {
            let files = downward(&d["items"], facts)?;
            write_files(&path, &files, mode(&d["defaultMode"], 0o644)).map_err(io)?;
        } else if let Some(p) = volume.get("projected") {
            let mut files = Vec::new();
            for source in p["sources"].as_array().into_iter().flatten() {
                if let Some(t) = source.get("serviceAccountToken") {
                    let token = request_token(client, pod, t).await?;
                    files.push((t["path"].as_str().unwrap_or("token").to_owned(), token));
                } else if let Some(cm) = source.get("configMap") {
                    let data = refs
                        .config_maps
                        .get(cm["name"].as_str().unwrap_or_default())
                        .cloned()
                        .flatten();
                    match data {
                        Some(data) => files.extend(select(&data, &cm["items"])),
                        None if cm["optional"].as_bool().unwrap_or(false) => {}
                        None => return Err(format!("configmap {:?} not found", cm["name"])),
                    }
                } else if let Some(s) = source.get("secret") {
                    let data = refs
                        .secrets
                        .get(s["name"].as_str().unwrap_or_default())
                        .cloned()
                        .flatten();
                    match data {
                        Some(data) => files.extend(select(&data, &s["items"])),
                        None if s["optional"].as_bool().unwrap_or(false) => {}
                        None => return Err(format!("secret {:?} not found", s["name"])),
                    }
                } else if let Some(d) = source.get("downwardAPI") {
                    files.extend(downward(&d["items"], facts)?);
                }
            }
            write_files(&path, &files, mode(&p["defaultMode"], 0o644)).map_err(io)?;
        } else {
            return Err(format!(
                "volume {name:?}: this node does not support its type"
            ));
        }
        paths.insert(name.to_owned(), path);
    }
    Ok(paths)
}

fn mode(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

/// `items` (key → path) or every key as a file of its own name.
fn select(data: &BTreeMap<String, String>, items: &Value) -> Vec<(String, String)> {
    match items.as_array() {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                let key = i["key"].as_str()?;
                Some((
                    i["path"].as_str().unwrap_or(key).to_owned(),
                    data.get(key)?.clone(),
                ))
            })
            .collect(),
        None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn downward(items: &Value, facts: &PodFacts) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or_default().to_owned();
        if let Some(field) = item["fieldRef"]["fieldPath"].as_str() {
            let text = match field {
                "metadata.labels" | "metadata.annotations" => {
                    let key = field.trim_start_matches("metadata.");
                    facts.pod["metadata"][key]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}=\"{}\"\n", v.as_str().unwrap_or_default()))
                        .collect()
                }
                _ => env::field(facts, field)?,
            };
            files.push((path, text));
        }
    }
    Ok(files)
}

/// Writes the files of a configMap/secret/projected volume into a fresh directory, then puts
/// it in place. Paths may not leave the volume.
fn write_files(dir: &Path, files: &[(String, String)], mode: u32) -> io::Result<()> {
    let staging = dir.with_extension("new");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    for (rel, text) in files {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(io::Error::other(format!("bad path {rel:?}")));
        }
        let path = staging.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    let _ = fs::remove_dir_all(dir);
    fs::rename(&staging, dir)
}

/// A token for the pod's service account, bound to the pod (TokenRequest).
async fn request_token(client: &Client, pod: &Value, source: &Value) -> Result<String, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let mut spec = json!({
        "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3607),
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
            "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
    });
    if let Some(aud) = source["audience"].as_str() {
        spec["audiences"] = json!([aud]);
    }
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let answer = client
        .request(hyper::Method::POST, &path, Some(&body))
        .await
        .map_err(|e| format!("service account token: {e}"))?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "service account token: no token in the answer".to_owned())
}
