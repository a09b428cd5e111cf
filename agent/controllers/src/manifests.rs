//! Auto-deployed manifests, like K3s': every `*.yaml`, `*.yml` or `*.json` file in the
//! manifests directories (`DATA/server/manifests`, and one an image bakes in) is applied, and
//! applied again whenever it changes; objects a file no longer holds, and all objects of a
//! removed file, are deleted. `NAME.skip` next to a file disables it (nothing of it is
//! applied or deleted).
//!
//! A file may hold several YAML documents and `kind: List`s. Objects are written with
//! server-side apply as manager `cairn-manifests`, forcing conflicts (the file is the source
//! of truth), namespaced ones in their `metadata.namespace` or `default`; Namespaces and
//! CustomResourceDefinitions go first so a file can hold a CRD and its objects. What each
//! file applied is kept in the ConfigMap `kube-system/cairn-manifests` (content hash and
//! object references), so deletions survive restarts.
//!
//! A file that does not parse, or an object that is refused (unknown kind, invalid), is
//! logged with the file and document and changes nothing of that file: its previous objects
//! stay, and it is tried again at the next scan ([`INTERVAL`]) until it works.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::Digest;

use crate::client::{Client, Res};

pub const MANAGER: &str = "cairn-manifests";
/// How often the directories are scanned.
pub const INTERVAL: Duration = Duration::from_secs(10);
const STATE: &str = "cairn-manifests";
const STATE_NAMESPACE: &str = "kube-system";
const CONFIG_MAPS: Res = Res::core("configmaps");

/// An applied object: apiVersion, kind, namespace ("" when cluster-scoped), name.
type Ref = (String, String, String, String);

/// What one scan did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
    pub failed: Vec<String>,
}

/// Scans `dirs` every `interval` ([`INTERVAL`] on a node) until the runtime stops. A scan
/// only reads files and the state when the directories' listing (names, sizes, modification
/// times) changed since the last clean scan: an idle node only lists them.
pub async fn run(client: Client, dirs: Vec<PathBuf>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    let mut clean: Option<Listing> = None;
    loop {
        tick.tick().await;
        let listing = listing(&dirs);
        if clean.as_ref() == Some(&listing) {
            continue;
        }
        let (c, d) = (client.clone(), dirs.clone());
        match tokio::task::spawn_blocking(move || scan(&c, &d)).await {
            Ok(report) => {
                for line in report
                    .applied
                    .iter()
                    .chain(&report.deleted)
                    .chain(&report.failed)
                {
                    eprintln!("cairn: manifests: {line}");
                }
                // Failures are retried at every tick until they clear.
                clean = report.failed.is_empty().then_some(listing);
            }
            Err(e) => eprintln!("cairn: manifests: {e}"),
        }
    }
}

type Listing = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// Every entry of `dirs` with its size and modification time, sorted.
fn listing(dirs: &[PathBuf]) -> Listing {
    let mut out: Listing = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| {
            let meta = e.metadata().ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            (e.path(), len, meta.and_then(|m| m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// One pass over the directories.
pub fn scan(client: &Client, dirs: &[PathBuf]) -> Report {
    let mut report = Report::default();
    let (mut state, state_object) = match load_state(client) {
        Ok(s) => s,
        Err(e) => {
            report
                .failed
                .push(format!("reading {STATE_NAMESPACE}/{STATE}: {e}"));
            return report;
        }
    };
    let files = manifest_files(dirs);
    let mut changed = false;
    for (file, path) in &files {
        let Ok(bytes) = std::fs::read(path) else {
            report
                .failed
                .push(format!("{}: unreadable", path.display()));
            continue;
        };
        let hash = hex(&sha2::Sha256::digest(&bytes));
        if state.get(file).is_some_and(|(h, _)| *h == hash) {
            continue;
        }
        match apply_file(client, &bytes) {
            Ok(refs) => {
                let old = state.get(file).map(|(_, r)| r.clone()).unwrap_or_default();
                for gone in old.iter().filter(|r| !refs.contains(r)) {
                    match delete(client, gone) {
                        Ok(()) => report.deleted.push(format!(
                            "{}: deleted {}",
                            path.display(),
                            show(gone)
                        )),
                        Err(e) => report.failed.push(format!(
                            "{}: deleting {}: {e}",
                            path.display(),
                            show(gone)
                        )),
                    }
                }
                report.applied.push(format!(
                    "{}: applied {} object(s)",
                    path.display(),
                    refs.len()
                ));
                state.insert(file.clone(), (hash, refs));
                changed = true;
            }
            Err(e) => report.failed.push(format!("{}: {e}", path.display())),
        }
    }
    // Files that are gone (not merely skipped) take their objects with them.
    let skipped = skipped_files(dirs);
    let removed: Vec<String> = state
        .keys()
        .filter(|f| !files.contains_key(*f) && !skipped.contains(*f))
        .cloned()
        .collect();
    for file in removed {
        let (_, refs) = state.remove(&file).unwrap_or_default();
        for r in &refs {
            match delete(client, r) {
                Ok(()) => report
                    .deleted
                    .push(format!("{file} (removed): deleted {}", show(r))),
                Err(e) => report
                    .failed
                    .push(format!("{file} (removed): deleting {}: {e}", show(r))),
            }
        }
        changed = true;
    }
    if changed {
        if let Err(e) = save_state(client, &state, state_object) {
            report
                .failed
                .push(format!("writing {STATE_NAMESPACE}/{STATE}: {e}"));
        }
    }
    report
}

/// The manifest files of `dirs` by file name (a name in a later directory wins).
fn manifest_files(dirs: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let manifest = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
            if !manifest || name.starts_with('.') || !path.is_file() {
                continue;
            }
            if dir.join(format!("{name}.skip")).exists() {
                continue;
            }
            out.insert(name, path);
        }
    }
    out
}

fn skipped_files(dirs: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(file) = name.strip_suffix(".skip") {
                out.push(file.to_owned());
            }
        }
    }
    out
}

/// The objects of a manifest file: every YAML document, `List`s flattened.
pub fn parse(bytes: &[u8]) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_slice(bytes).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        match value {
            Value::Null => {}
            Value::Object(_)
                if value["kind"] == "List"
                    || value["kind"]
                        .as_str()
                        .is_some_and(|k| k.ends_with("List") && value["items"].is_array()) =>
            {
                out.extend(value["items"].as_array().cloned().unwrap_or_default());
            }
            Value::Object(_) => out.push(value),
            _ => return Err(format!("document {}: not an object", i + 1)),
        }
    }
    Ok(out)
}

/// Applies a file's objects (namespaces and CRDs first); their references, or the first
/// failure.
fn apply_file(client: &Client, bytes: &[u8]) -> Result<Vec<Ref>, String> {
    let mut objects = parse(bytes)?;
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    };
    objects.sort_by_key(rank);
    let mut refs = Vec::new();
    for object in &objects {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(format!(
                "an object without apiVersion, kind or metadata.name ({kind} {name:?})"
            ));
        }
        let Some((res, namespaced)) = client.resource_of(api_version, kind) else {
            return Err(format!(
                "{kind} {name}: no such kind served in {api_version}"
            ));
        };
        let namespace = if namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
        } else {
            ""
        };
        let mut object = object.clone();
        if namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        client
            .apply(res, namespace, &object, MANAGER)
            .map_err(|e| format!("{kind} {name}: {e}"))?;
        refs.push((
            api_version.to_owned(),
            kind.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        ));
    }
    Ok(refs)
}

fn delete(client: &Client, r: &Ref) -> Result<(), String> {
    let (api_version, kind, namespace, name) = r;
    let Some((res, _)) = client.resource_of(api_version, kind) else {
        // Its kind is gone (a deleted CRD took the objects along).
        return Ok(());
    };
    client
        .delete(res, namespace, name, None)
        .map_err(|e| e.to_string())
}

fn show(r: &Ref) -> String {
    if r.2.is_empty() {
        format!("{} {}", r.1, r.3)
    } else {
        format!("{} {}/{}", r.1, r.2, r.3)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type State = BTreeMap<String, (String, Vec<Ref>)>;

fn load_state(client: &Client) -> Result<(State, Option<Value>), String> {
    let Some(cm) = client
        .get(CONFIG_MAPS, STATE_NAMESPACE, STATE)
        .map_err(|e| e.to_string())?
    else {
        return Ok((State::new(), None));
    };
    let mut state = State::new();
    for (file, text) in cm["data"].as_object().into_iter().flatten() {
        let entry: Value = serde_json::from_str(text.as_str().unwrap_or("")).unwrap_or_default();
        let refs = entry["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let r = r.as_array()?;
                let s = |i: usize| r.get(i).and_then(Value::as_str).map(str::to_owned);
                Some((s(0)?, s(1)?, s(2)?, s(3)?))
            })
            .collect();
        let hash = entry["sha256"].as_str().unwrap_or("").to_owned();
        state.insert(file.clone(), (hash, refs));
    }
    Ok((state, Some(cm)))
}

fn save_state(client: &Client, state: &State, existing: Option<Value>) -> Result<(), String> {
    let data: serde_json::Map<String, Value> = state
        .iter()
        .map(|(file, (hash, refs))| {
            let objects: Vec<Value> = refs.iter().map(|r| json!([r.0, r.1, r.2, r.3])).collect();
            (
                file.clone(),
                json!(json!({"sha256": hash, "objects": objects}).to_string()),
            )
        })
        .collect();
    match existing {
        Some(mut cm) => {
            cm["data"] = Value::Object(data);
            client.update(CONFIG_MAPS, STATE_NAMESPACE, &cm).map(drop)
        }
        None => {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": STATE, "namespace": STATE_NAMESPACE}, "data": data});
            client.create(CONFIG_MAPS, STATE_NAMESPACE, &cm).map(drop)
        }
    }
    .map_err(|e| e.to_string())
}
