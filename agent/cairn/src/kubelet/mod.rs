//! The kubelet: runs the pods the scheduler binds to this node.
//!
//! [`run`] imports the air-gap image archives, then lists and watches the pods bound to the
//! node (`spec.nodeName`) and gives each its own task ([`pod`]), which makes the sandbox,
//! runs the containers through [`cairn_runtime`] and publishes the pod's status. Containers
//! outlive a restart of `cairn`: the pod tasks find them again by their directories, and
//! containers of pods that no longer exist are removed.
//!
//! Layout under the data dir (`DATA/agent/`): `images/` (archives to import), `store/` (the
//! image store), `containers/` (one directory per container), `pods/<uid>/` (volumes and the
//! pod's `/etc` files), `logs/pods/<ns>_<name>_<uid>/<container>/<attempt>.log`, `net/` (the
//! pod addresses handed out, one file each; see [`network`]).

pub mod env;
pub mod image_gc;
pub mod network;
pub mod pod;
pub mod portforward;
pub mod probes;
pub mod pull;
pub mod server;
pub mod spdy;
pub mod stats;
pub mod status;
pub mod streams;
pub mod volumes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::sync::watch;

use crate::client::Client;

/// Where the kubelet keeps things, and how.
pub struct Config {
    /// The kubelet's HTTPS port, already bound (its number goes into the Node).
    pub listener: std::net::TcpListener,
    pub node_name: String,
    pub host_ip: String,
    /// `DATA/agent`.
    pub data_dir: PathBuf,
    /// Directories of image archives imported at start (the data dir's `images/` and those an
    /// image recipe baked in).
    pub image_dirs: Vec<PathBuf>,
    /// Image garbage collection and disk pressure thresholds.
    pub image_gc: image_gc::Policy,
    /// Where the kubelet's images and `DiskPressure` go for the Node's status.
    pub node_status: crate::node_status::KubeletStatus,
    /// The program that runs the container shim (`cairn` itself).
    pub shim: PathBuf,
    /// The cgroup v2 mount (`/sys/fs/cgroup`); pods run without limits when it is not one.
    pub cgroup_root: PathBuf,
    /// Where pod network namespaces are pinned.
    pub netns_dir: PathBuf,
    /// The pods' bridge (`cairn0`).
    pub bridge: String,
    pub log_max_bytes: u64,
    /// An agent's update endpoints, which the server reaches through this kubelet's port.
    pub updates: Option<crate::update::service::UpdateService>,
}

/// What every pod task shares.
pub struct Shared {
    pub client: Client,
    pub runtime: cairn_runtime::Runtime,
    pub images: Arc<cairn_images::Store>,
    pub node_name: String,
    pub host_ip: String,
    pub pods_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub network: Arc<network::PodNetwork>,
    /// How to reach registries (`DATA/agent/registries.yaml`).
    pub registries: pull::Registries,
    pub log_max_bytes: u64,
    /// The last usage reading, for `kubectl top`.
    pub stats: stats::Sampler,
    pub updates: Option<crate::update::service::UpdateService>,
}

/// Sets up the image store and runtime, then runs the node's pods until the process ends.
pub async fn run(client: Client, config: Config) -> Result<(), String> {
    let cgroups = cairn_runtime::cgroup::Hierarchy::at(&config.cgroup_root);
    match cgroups.as_ref().map(|h| h.missing_controllers()) {
        None => eprintln!(
            "cairn: kubelet: warning: {} is not a cgroup v2 mount: pods run without resource limits",
            config.cgroup_root.display()
        ),
        Some(Ok(missing)) if missing.is_empty() => {
            eprintln!("cairn: kubelet: cgroup v2 controllers cpu memory pids")
        }
        Some(Ok(missing)) => eprintln!(
            "cairn: kubelet: warning: the kernel offers no {} cgroup controller: those pod limits are not enforced",
            missing.join(", ")
        ),
        Some(Err(e)) => eprintln!(
            "cairn: kubelet: warning: {}: {e}",
            config.cgroup_root.join("cgroup.controllers").display()
        ),
    }
    let store_dir = config.data_dir.join("store");
    let images = tokio::task::spawn_blocking(move || {
        cairn_images::Store::open(&store_dir, cairn_images::Platform::host())
            .map_err(|e| format!("image store {}: {e}", store_dir.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let images = Arc::new(images);
    import_images(&images, &config.image_dirs).await;
    let registries = pull::Registries::load(&config.data_dir).unwrap_or_else(|e| {
        eprintln!("cairn: kubelet: warning: {e}; pulling with no registry settings");
        pull::Registries::default()
    });
    let runtime =
        cairn_runtime::Runtime::new(&config.data_dir.join("containers"), &config.shim, cgroups)
            .map_err(|e| format!("{}: {e}", config.data_dir.join("containers").display()))?;
    let shared = Arc::new(Shared {
        client,
        runtime,
        images,
        node_name: config.node_name.clone(),
        host_ip: config.host_ip.clone(),
        pods_dir: config.data_dir.join("pods"),
        logs_dir: config.data_dir.join("logs").join("pods"),
        netns_dir: config.netns_dir.clone(),
        network: Arc::new(network::PodNetwork::new(
            &config.bridge,
            &config.data_dir.join("net"),
        )),
        registries,
        log_max_bytes: config.log_max_bytes,
        stats: stats::Sampler::default(),
        updates: config.updates.clone(),
    });
    tokio::spawn(
        shared
            .network
            .clone()
            .run(shared.client.clone(), config.node_name.clone()),
    );
    tokio::spawn(image_gc::run(
        shared.clone(),
        config.image_gc.clone(),
        config.image_dirs.clone(),
        config.node_status.clone(),
    ));
    let listener = tokio::net::TcpListener::from_std(config.listener)
        .map_err(|e| format!("the kubelet's port: {e}"))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let names = vec![config.node_name.clone(), config.host_ip.clone()];
    let ca = shared.client.ca_pem().to_owned();
    let server = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, server, &ca, names).await {
            eprintln!(
                "cairn: kubelet: HTTPS endpoint: {e}; `kubectl logs` will not reach this node"
            );
        }
    });
    eprintln!(
        "cairn: kubelet: running pods of node {} (HTTPS on port {port})",
        config.node_name
    );
    watch_pods(shared).await;
    Ok(())
}

async fn import_images(store: &Arc<cairn_images::Store>, dirs: &[PathBuf]) {
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let store = store.clone();
        let d = dir.clone();
        let results = tokio::task::spawn_blocking(move || store.import_dir(&d))
            .await
            .unwrap_or_default();
        for (path, result) in results {
            match result {
                Ok(images) => {
                    for image in images {
                        eprintln!(
                            "cairn: kubelet: imported {} from {}",
                            image.reference,
                            path.display()
                        );
                    }
                }
                Err(e) => eprintln!("cairn: kubelet: importing {}: {e}", path.display()),
            }
        }
    }
}

/// One pod task per bound pod, fed by a list-then-watch of the node's pods.
async fn watch_pods(shared: Arc<Shared>) {
    let selector = format!("spec.nodeName%3D{}", shared.node_name);
    let mut workers: HashMap<String, watch::Sender<Option<Value>>> = HashMap::new();
    let mut first = true;
    loop {
        let list = match shared
            .client
            .request(
                Method::GET,
                &format!("/api/v1/pods?fieldSelector={selector}"),
                None,
            )
            .await
        {
            Ok(list) => list,
            Err(e) => {
                eprintln!("cairn: kubelet: listing pods: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let pods: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
        let uids: Vec<String> = pods.iter().map(uid).collect();
        workers.retain(|u, tx| {
            let keep = uids.contains(u);
            if !keep {
                let _ = tx.send(None);
            }
            keep
        });
        if first {
            remove_orphans(&shared, &uids).await;
            first = false;
        }
        for pod in pods {
            update(&shared, &mut workers, Some(pod));
        }
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_owned();
        let path = format!(
            "/api/v1/pods?fieldSelector={selector}&watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={rv}"
        );
        if let Err(e) = follow(&shared, &path, &mut workers).await {
            eprintln!("cairn: kubelet: watching pods: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn update(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, watch::Sender<Option<Value>>>,
    pod: Option<Value>,
) {
    let Some(pod) = pod else { return };
    let key = uid(&pod);
    // A worker that has ended while the API still has its pod (its final deletion failed)
    // is started again: it finds the pod terminating and retries.
    match workers.get(&key).filter(|tx| !tx.is_closed()) {
        Some(tx) => {
            let _ = tx.send(Some(pod));
        }
        None => {
            let (tx, rx) = watch::channel(Some(pod));
            tokio::spawn(pod::run(shared.clone(), rx));
            workers.insert(key, tx);
        }
    }
}

/// Reads one watch until the server ends it.
async fn follow(
    shared: &Arc<Shared>,
    path: &str,
    workers: &mut HashMap<String, watch::Sender<Option<Value>>>,
) -> Result<(), String> {
    let resp = shared
        .client
        .call(Method::GET, path, &[], Empty::<Bytes>::new())
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let object = event["object"].clone();
            match event["type"].as_str() {
                Some("ADDED") | Some("MODIFIED") => update(shared, workers, Some(object)),
                Some("DELETED") => {
                    if let Some(tx) = workers.remove(&uid(&object)) {
                        let _ = tx.send(None);
                    }
                }
                Some("ERROR") => {
                    return Err(object["message"]
                        .as_str()
                        .unwrap_or("watch error")
                        .to_owned())
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Containers, namespaces and directories of pods the API no longer has (deleted while this
/// node was down).
async fn remove_orphans(shared: &Arc<Shared>, live: &[String]) {
    let shared = shared.clone();
    let live = live.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        let is_live = |name: &str| live.iter().any(|u| name.starts_with(u.as_str()));
        for id in shared.runtime.ids() {
            if !is_live(&id) {
                eprintln!("cairn: kubelet: removing container {id} of a deleted pod");
                let _ = shared.runtime.remove(&id);
            }
        }
        for entry in std::fs::read_dir(&shared.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_live(&name) {
                let logs = find_log_dir(&shared.logs_dir, &name);
                let _ = pod::cleanup(&shared, &name, &logs);
            }
        }
    })
    .await;
}

fn find_log_dir(logs: &Path, uid: &str) -> PathBuf {
    std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(uid))
        })
        .unwrap_or_else(|| logs.join(format!("unknown_{uid}")))
}
