//! The Node object this process keeps in the API: who the node is (`nodeInfo`, addresses,
//! capacity, labels), that it is Ready, and on A/B nodes its update state.
//!
//! **Update state on the Node.** `status.nodeInfo.osImage` is `Cairn <version>`; the labels
//! `update.cairn.dev/slot` and `update.cairn.dev/version` say which slot runs which version
//! (selectable: `kubectl get nodes -l update.cairn.dev/version=1.2.0`); the annotations
//! `update.cairn.dev/other-slot` and `update.cairn.dev/last-update` the other slot and the last
//! update's result with its reason; the condition `OSUpdate` is `True` after a committed
//! update (or none), `Unknown` while one is pending and `False` after a failed or rolled-back
//! one, its message carrying the reason. Each finished update also leaves an Event on the Node
//! (`UpdateCommitted`, or a Warning `UpdateRolledBack`), named after the update's record, so it
//! is posted once however often `cairn` restarts.
//!
//! **From the kubelet** ([`KubeletStatus`], shared with it): `status.images` (the images the
//! node holds, largest first, at most 50 with up to 5 names each, as the kubelet reports them)
//! and the `DiskPressure` condition (see `kubelet::image_gc`). The kubelet only updates the
//! shared value; this publisher writes it with the rest, so the Node keeps one writer and
//! changes are written only when they happen.
//!
//! **Writes.** The publisher looks every [`CHECK`] seconds and writes only what changed, plus a
//! status heartbeat every [`REFRESH`], and renews the node's Lease (`kube-node-lease`) every
//! [`LEASE_RENEW`]: an idle node writes about 130 small objects an hour where a kubelet's
//! 10-second Lease would write 360, which matters on SD cards.
//!
//! Facts come from `/proc` rather than a system-information crate: four small files cover
//! what the Node needs, and the device binary stays small.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_config::Role;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{Client, ClientError};
use crate::update::{self, Record, Report};

/// How often the publisher looks for changes.
pub const CHECK: Duration = Duration::from_secs(10);
/// How often the status is written even when nothing changed (`lastHeartbeatTime`).
pub const REFRESH: Duration = Duration::from_secs(300);
/// How often the Lease is renewed; it is valid for [`LEASE_SECONDS`].
pub const LEASE_RENEW: Duration = Duration::from_secs(30);
pub const LEASE_SECONDS: u32 = 90;
/// Labels and annotations under this prefix belong to the publisher: it removes the ones it
/// no longer wants. Others on the Node are left alone.
pub const OWNED_PREFIX: &str = "update.cairn.dev/";
/// Kubernetes' default pod capacity of a node.
const MAX_PODS: u32 = 110;

/// What the Node says about the machine; gathered once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub name: String,
    pub role: Role,
    /// The image version (`/etc/cairn/release`), shown as `osImage` "Cairn VERSION".
    pub os_version: String,
    /// The Kubernetes version `kubectl get nodes` shows (`v1.35.0+cairn-<version>`).
    pub kubelet_version: String,
    pub kernel: String,
    /// Kubernetes' name of the architecture: `amd64`, `arm64`, `arm`, `s390x`.
    pub arch: String,
    pub boot_id: String,
    pub machine_id: String,
    pub addresses: Vec<Ipv4Addr>,
    pub cpus: u32,
    pub memory_kib: u64,
    /// From the node config; the well-known labels are added by [`Facts::node`].
    pub labels: BTreeMap<String, String>,
    /// SHA-256 of the node's client key (joined nodes): the identity the CSR approver checks
    /// before it lets another machine take this node's name.
    pub key_id: Option<String>,
    /// Where the kubelet serves the API server (`status.daemonEndpoints`); 0: no kubelet.
    pub kubelet_port: u16,
    /// What the kubelet reports: images and disk pressure.
    pub kubelet_status: KubeletStatus,
}

/// What the kubelet adds to the Node's status, shared between the kubelet (which updates it)
/// and the [`Publisher`] (which writes it with the rest of the Node). Clones share one value.
#[derive(Clone, Default)]
pub struct KubeletStatus(Arc<Mutex<KubeletPart>>);

/// The kubelet's part of the Node's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletPart {
    /// `status.images`, in the order given (largest first).
    pub images: Vec<NodeImage>,
    /// The `DiskPressure` condition's status; `None` until the kubelet has looked.
    pub disk_pressure: Option<bool>,
}

/// One entry of `status.images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeImage {
    /// `repo@sha256:...` and `repo:tag` names.
    pub names: Vec<String>,
    pub size_bytes: u64,
}

impl KubeletStatus {
    /// A copy of the current value.
    pub fn get(&self) -> KubeletPart {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the images; true when they changed.
    pub fn set_images(&self, images: Vec<NodeImage>) -> bool {
        let mut part = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let changed = part.images != images;
        part.images = images;
        changed
    }

    pub fn set_disk_pressure(&self, pressure: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .disk_pressure = Some(pressure);
    }
}

impl PartialEq for KubeletStatus {
    fn eq(&self, other: &KubeletStatus) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.get() == other.get()
    }
}

impl Eq for KubeletStatus {}

impl std::fmt::Debug for KubeletStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Facts {
    /// This machine, as `name` in `role`.
    pub fn gather(
        name: &str,
        role: Role,
        os_version: &str,
        labels: BTreeMap<String, String>,
    ) -> Facts {
        let read = |path: &str| {
            fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let addresses = crate::procfs::node_ipv4_addrs();
        Facts {
            name: name.into(),
            role,
            os_version: os_version.into(),
            kubelet_version: cairn_apimeta::VersionInfo::current().git_version,
            kernel: read("/proc/sys/kernel/osrelease"),
            arch: cairn_apimeta::go_arch(std::env::consts::ARCH).into(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            machine_id: read("/etc/machine-id"),
            addresses,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_kib: crate::procfs::parse_mem_total_kb(&read("/proc/meminfo")).unwrap_or(0),
            labels,
            key_id: None,
            kubelet_port: 0,
            kubelet_status: KubeletStatus::default(),
        }
    }

    /// The Node as it should be: metadata (labels, annotations) and status, with `now` as the
    /// heartbeat and transition time of every condition.
    pub fn node(&self, update: Option<&Report>, now: &str) -> Value {
        let mut labels: BTreeMap<String, String> = [
            ("kubernetes.io/arch", self.arch.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/hostname", self.name.as_str()),
            ("beta.kubernetes.io/arch", self.arch.as_str()),
            ("beta.kubernetes.io/os", "linux"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if self.role == Role::Server {
            labels.insert(
                "node-role.kubernetes.io/control-plane".into(),
                "true".into(),
            );
        }
        let mut annotations: BTreeMap<String, String> = BTreeMap::new();
        if let Some(key) = &self.key_id {
            annotations.insert(
                cairn_controllers::csr::NODE_KEY_ANNOTATION.into(),
                key.clone(),
            );
        }
        if let Some(r) = update {
            labels.insert("update.cairn.dev/slot".into(), r.running.slot.clone());
            labels.insert("update.cairn.dev/version".into(), label_value(&r.version));
            annotations.insert("update.cairn.dev/other-slot".into(), r.other.describe());
            if let Some(last) = &r.last {
                annotations.insert("update.cairn.dev/last-update".into(), last.describe());
            }
        }
        labels.extend(self.labels.clone());

        let kubelet = self.kubelet_status.get();
        let mut conditions = Vec::new();
        if let Some(pressure) = kubelet.disk_pressure {
            // The kubelet's own reasons and messages; nothing in them changes with the numbers,
            // so the condition is written only when it turns.
            conditions.push(if pressure {
                condition(
                    "DiskPressure",
                    "True",
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                    now,
                )
            } else {
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                    now,
                )
            });
        }
        conditions.push(condition(
            "Ready",
            "True",
            "CairnReady",
            "cairn is posting ready status",
            now,
        ));
        if let Some(r) = update {
            let (status, reason, message) = update_condition(r.last.as_ref());
            conditions.push(condition("OSUpdate", status, reason, &message, now));
        }
        let mut addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        addresses.push(json!({"type": "Hostname", "address": self.name}));
        let resources = json!({
            "cpu": self.cpus.to_string(),
            "memory": format!("{}Ki", self.memory_kib),
            "pods": MAX_PODS.to_string(),
        });
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": conditions,
                "addresses": addresses,
                "nodeInfo": {
                    "machineID": self.machine_id,
                    "systemUUID": "",
                    "bootID": self.boot_id,
                    "kernelVersion": self.kernel,
                    "osImage": format!("Cairn {}", self.os_version),
                    "containerRuntimeVersion": "",
                    "kubeletVersion": self.kubelet_version,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": self.arch,
                },
            },
        });
        if !kubelet.images.is_empty() {
            node["status"]["images"] = kubelet
                .images
                .iter()
                .map(|i| json!({"names": i.names, "sizeBytes": i.size_bytes}))
                .collect();
        }
        if self.kubelet_port != 0 {
            node["status"]["daemonEndpoints"] =
                json!({"kubeletEndpoint": {"Port": self.kubelet_port}});
            node["status"]["nodeInfo"]["containerRuntimeVersion"] =
                json!(format!("cairn://{}", env!("CARGO_PKG_VERSION")));
        }
        node
    }
}

/// A label value from free text: at most 63 of `[A-Za-z0-9._-]`, other characters as `_`.
fn label_value(text: &str) -> String {
    let v: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// `OSUpdate`'s status, reason and message for the last update's record.
fn update_condition(last: Option<&Record>) -> (&'static str, &'static str, String) {
    let Some(rec) = last else {
        return (
            "True",
            "NoUpdate",
            "no update since the node was set up".into(),
        );
    };
    let (status, reason) = match rec.result.as_str() {
        "committed" => ("True", "UpdateCommitted"),
        "pending" => ("Unknown", "UpdatePending"),
        "failed" => ("False", "UpdateFailed"),
        "rolled-back" => ("False", "UpdateRolledBack"),
        _ => ("Unknown", "UpdateUnknown"),
    };
    (status, reason, rec.describe())
}

/// The Event a finished update leaves on the Node: named after the record's time, so posting
/// it again is a harmless `AlreadyExists`. `None` for an update still under way.
pub fn update_event(node: &str, rec: &Record, now: &str) -> Option<Value> {
    let (kind, reason) = match rec.result.as_str() {
        "committed" => ("Normal", "UpdateCommitted"),
        "rolled-back" => ("Warning", "UpdateRolledBack"),
        _ => return None,
    };
    let message = match rec.result.as_str() {
        "committed" => format!(
            "Cairn {} committed on slot {} (was {})",
            rec.to_version, rec.slot, rec.from_version
        ),
        _ => format!(
            "back on Cairn {} after the update to {} (slot {}) failed: {}",
            rec.from_version,
            rec.to_version,
            rec.slot,
            rec.reason.as_deref().unwrap_or("no reason recorded")
        ),
    };
    Some(json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{node}.update-{}", rec.at), "namespace": "default"},
        // The kubelet's convention for node events: the Node's name as its uid, which
        // `kubectl describe node` also searches by.
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "cairn", "host": node},
        "reportingComponent": "cairn",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
}

/// What must be written to turn `old` (the stored Node, if any) into `new` ([`Facts::node`]).
#[derive(Debug, PartialEq)]
pub enum Plan {
    Create(Value),
    /// The object (metadata) and/or the status subresource, each already merged with `old`.
    Update {
        object: Option<Value>,
        status: Option<Value>,
    },
}

/// Compares the stored Node with the wanted one. Conditions whose status did not change keep
/// their `lastTransitionTime`; a status that differs only in heartbeat times is written only
/// when `heartbeat` is set.
pub fn plan(old: Option<&Value>, mut new: Value, heartbeat: bool) -> Plan {
    let Some(old) = old else {
        return Plan::Create(new);
    };
    keep_transition_times(
        &old["status"]["conditions"],
        &mut new["status"]["conditions"],
    );
    // Labels and annotations others set (`kubectl label`, the node config's old labels) stay;
    // those under this publisher's prefix are exactly what it wants now.
    let mut object = None;
    let mut merged = old.clone();
    for k in ["labels", "annotations"] {
        let mut map = old["metadata"][k].as_object().cloned().unwrap_or_default();
        map.retain(|key, _| !key.starts_with(OWNED_PREFIX));
        if let Some(want) = new["metadata"][k].as_object() {
            map.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let have = &old["metadata"][k];
        let same = have.as_object().map_or(map.is_empty(), |h| *h == map);
        if !same {
            merged["metadata"][k] = Value::Object(map);
            object = Some(());
        }
    }
    let object = object.map(|()| merged);
    let status = (heartbeat
        || without_heartbeats(&old["status"]) != without_heartbeats(&new["status"]))
    .then(|| {
        let mut obj = old.clone();
        obj["status"] = new["status"].take();
        obj
    });
    Plan::Update { object, status }
}

fn keep_transition_times(old: &Value, new: &mut Value) {
    let (Some(old), Some(new)) = (old.as_array(), new.as_array_mut()) else {
        return;
    };
    for c in new.iter_mut() {
        let same = old
            .iter()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"]);
        if let Some(o) = same {
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
    }
}

fn without_heartbeats(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(conds) = s["conditions"].as_array_mut() {
        for c in conds {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
    s
}

/// The node's Lease in `kube-node-lease`, renewed at `now` (a MicroTime), merged into the
/// stored one (`old`) if there is one.
pub fn lease(node: &str, old: Option<&Value>, now: &str) -> Value {
    let mut lease = old.cloned().unwrap_or_else(|| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {},
        })
    });
    lease["spec"]["holderIdentity"] = json!(node);
    lease["spec"]["leaseDurationSeconds"] = json!(LEASE_SECONDS);
    lease["spec"]["renewTime"] = json!(now);
    lease
}

/// Now as a Kubernetes MicroTime (`2025-01-02T03:04:05.123456Z`).
fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Keeps the Node up to date through `client` until the process ends.
pub struct Publisher {
    client: Client,
    facts: Facts,
    updates: Option<update::Node>,
    last_status_write: Option<Instant>,
    last_lease: Option<Instant>,
    /// The finished update whose Event was posted (its record's `at`).
    announced: Option<u64>,
    /// The last error printed, so a lasting failure is logged once.
    last_error: Option<String>,
}

impl Publisher {
    pub fn new(client: Client, facts: Facts, updates: Option<update::Node>) -> Publisher {
        Publisher {
            client,
            facts,
            updates,
            last_status_write: None,
            last_lease: None,
            announced: None,
            last_error: None,
        }
    }

    pub async fn run(mut self) {
        loop {
            match self.sync().await {
                Ok(()) => self.last_error = None,
                Err(e) => {
                    let e = e.to_string();
                    if self.last_error.as_ref() != Some(&e) {
                        eprintln!("cairn: node {}: {e}", self.facts.name);
                        self.last_error = Some(e);
                    }
                }
            }
            tokio::time::sleep(CHECK).await;
        }
    }

    /// One round: write what changed, post the last update's Event once.
    pub async fn sync(&mut self) -> Result<(), ClientError> {
        let report = self
            .updates
            .as_ref()
            .and_then(|n| n.report(&self.facts.name).ok());
        let now = cairn_apiserver::meta::now();
        let path = format!("/api/v1/nodes/{}", self.facts.name);
        let old = match self.client.request(Method::GET, &path, None).await {
            Ok(v) => Some(v),
            Err(ClientError::Status { code, .. }) if code == hyper::StatusCode::NOT_FOUND => None,
            Err(e) => return Err(e),
        };
        // The update that cordoned this node is over (committed or rolled back): uncordon.
        let updating = report
            .as_ref()
            .and_then(|r| r.last.as_ref())
            .is_some_and(|l| l.result == "pending" || l.result == "writing");
        let old = match old {
            Some(node) if !updating => match uncordon(&self.client, &node).await? {
                Some(written) => {
                    eprintln!(
                        "cairn: node {}: uncordoned after the update",
                        self.facts.name
                    );
                    Some(written)
                }
                None => Some(node),
            },
            other => other,
        };
        let heartbeat = self
            .last_status_write
            .is_none_or(|t| t.elapsed() >= REFRESH);
        match plan(
            old.as_ref(),
            self.facts.node(report.as_ref(), &now),
            heartbeat,
        ) {
            Plan::Create(node) => {
                self.client
                    .request(Method::POST, "/api/v1/nodes", Some(&node))
                    .await?;
                eprintln!(
                    "cairn: registered node {} (Cairn {}, {})",
                    self.facts.name, self.facts.os_version, self.facts.arch
                );
                self.last_status_write = Some(Instant::now());
            }
            Plan::Update { object, status } => {
                let mut rv = None;
                if let Some(obj) = object {
                    let written = self.client.request(Method::PUT, &path, Some(&obj)).await?;
                    rv = written["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned);
                }
                if let Some(mut obj) = status {
                    if let Some(rv) = rv {
                        obj["metadata"]["resourceVersion"] = Value::String(rv);
                    }
                    let status_path = format!("{path}/status");
                    self.client
                        .request(Method::PUT, &status_path, Some(&obj))
                        .await?;
                    self.last_status_write = Some(Instant::now());
                }
            }
        }
        if self.last_lease.is_none_or(|t| t.elapsed() >= LEASE_RENEW) {
            self.renew_lease().await?;
            self.last_lease = Some(Instant::now());
        }
        if let Some(rec) = report.and_then(|r| r.last) {
            if self.announced != Some(rec.at) {
                if let Some(event) = update_event(&self.facts.name, &rec, &now) {
                    match self
                        .client
                        .request(
                            Method::POST,
                            "/api/v1/namespaces/default/events",
                            Some(&event),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(ClientError::Status { code, .. })
                            if code == hyper::StatusCode::CONFLICT => {}
                        Err(e) => return Err(e),
                    }
                    self.announced = Some(rec.at);
                }
            }
        }
        Ok(())
    }
}

impl Publisher {
    async fn renew_lease(&self) -> Result<(), ClientError> {
        let name = &self.facts.name;
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        let path = format!("{leases}/{name}");
        match self.client.request(Method::GET, &path, None).await {
            Ok(old) => {
                let lease = lease(name, Some(&old), &now_micro());
                self.client
                    .request(Method::PUT, &path, Some(&lease))
                    .await?;
            }
            Err(ClientError::Status { code, .. }) if code == hyper::StatusCode::NOT_FOUND => {
                let lease = lease(name, None, &now_micro());
                self.client
                    .request(Method::POST, leases, Some(&lease))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Set on a Node the updater cordoned, so that it uncordons that node (and no node an admin
/// cordoned) once the update is over.
pub const CORDONED_FOR_UPDATE: &str = "cairn.dev/cordoned-for-update";

/// Before an update's reboot, what `kubectl drain --ignore-daemonsets` does: cordons the Node
/// (unless it is cordoned already) and deletes the pods bound to it, each with its own grace
/// period, leaving DaemonSet pods. Returns a line for the progress output.
pub async fn drain(client: &Client, name: &str) -> Result<String, ClientError> {
    let path = format!("/api/v1/nodes/{name}");
    let mut node = client.request(Method::GET, &path, None).await?;
    let cordon = node["spec"]["unschedulable"] != true;
    if cordon {
        node["spec"]["unschedulable"] = json!(true);
        node["metadata"]["annotations"][CORDONED_FOR_UPDATE] = json!("true");
        client.request(Method::PUT, &path, Some(&node)).await?;
    }
    let (mut evicted, mut kept) = (0, 0);
    for pod in &pods_on(client, name).await? {
        let meta = &pod["metadata"];
        if of_daemon_set(pod) || !meta["deletionTimestamp"].is_null() {
            kept += 1;
            continue;
        }
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let options = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": grace,
        });
        let pod_path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            meta["namespace"].as_str().unwrap_or("default"),
            meta["name"].as_str().unwrap_or("")
        );
        match client
            .request(Method::DELETE, &pod_path, Some(&options))
            .await
        {
            Ok(_) => evicted += 1,
            Err(ClientError::Status { code, .. }) if code == hyper::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!(
        "drained node {name}: {}, {evicted} pod(s) evicted{}",
        if cordon {
            "cordoned"
        } else {
            "already cordoned"
        },
        if kept > 0 {
            format!(", {kept} DaemonSet or terminating pod(s) left")
        } else {
            String::new()
        }
    ))
}

/// The pods bound to node `name`.
async fn pods_on(client: &Client, name: &str) -> Result<Vec<Value>, ClientError> {
    let mut list = client
        .request(
            Method::GET,
            &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{name}"),
            None,
        )
        .await?;
    Ok(match list["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

fn of_daemon_set(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "DaemonSet")
}

/// [`drain`] as the last step before an update's reboot, then [`wait_stopped`]: the line to
/// log either way (a failed drain does not stop the reboot; the node's pods go down with it).
pub async fn drain_before_reboot(client: &Client, name: &str) -> String {
    let drained = match drain(client, name).await {
        Ok(done) => done,
        Err(e) => return format!("draining node {name}: {e}; rebooting anyway"),
    };
    match wait_stopped(client, name).await {
        Ok(stopped) => format!("{drained}; {stopped}"),
        Err(e) => format!("{drained}; waiting for its pods to stop: {e}; rebooting anyway"),
    }
}

/// Waits for the node's terminating pods (DaemonSet pods aside) to stop, as `kubectl drain`
/// does: until the API no longer has them (their kubelet, this node's, deletes them once
/// their containers have stopped), or for their longest grace period and 2 s more.
pub async fn wait_stopped(client: &Client, name: &str) -> Result<String, ClientError> {
    let start = tokio::time::Instant::now();
    let mut deadline = None;
    loop {
        let pods = pods_on(client, name).await?;
        let stopping: Vec<&Value> = pods
            .iter()
            .filter(|p| !of_daemon_set(p) && !p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let waited = start.elapsed().as_secs_f64();
        if stopping.is_empty() {
            return Ok(format!("its pods stopped ({waited:.1} s)"));
        }
        let longest = stopping
            .iter()
            .filter_map(|p| p["metadata"]["deletionGracePeriodSeconds"].as_u64())
            .max()
            .unwrap_or(30);
        let deadline = *deadline.get_or_insert(start + std::time::Duration::from_secs(longest + 2));
        if tokio::time::Instant::now() >= deadline {
            return Ok(format!(
                "{} pod(s) still stopping after {waited:.0} s; rebooting anyway",
                stopping.len()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Uncordons `node` (as stored) if the updater cordoned it; the Node as written, if it was.
async fn uncordon(client: &Client, node: &Value) -> Result<Option<Value>, ClientError> {
    if node["metadata"]["annotations"][CORDONED_FOR_UPDATE].is_null() {
        return Ok(None);
    }
    let mut node = node.clone();
    if let Some(a) = node["metadata"]["annotations"].as_object_mut() {
        a.remove(CORDONED_FOR_UPDATE);
    }
    if let Some(spec) = node["spec"].as_object_mut() {
        spec.remove("unschedulable");
    }
    let path = format!(
        "/api/v1/nodes/{}",
        node["metadata"]["name"].as_str().unwrap_or("")
    );
    client
        .request(Method::PUT, &path, Some(&node))
        .await
        .map(Some)
}

/// True when the Node `name` exists and its Ready condition is True: the health the trial
/// boot of a server waits for.
pub async fn node_ready(client: &Client, name: &str, os_version: &str) -> Result<(), String> {
    let node = client
        .request(Method::GET, &format!("/api/v1/nodes/{name}"), None)
        .await
        .map_err(|e| e.to_string())?;
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    match ready {
        Some(c) if c["status"] == "True" => {}
        Some(c) => {
            return Err(format!(
                "node {name} is not Ready: {}",
                c["message"].as_str().unwrap_or("")
            ))
        }
        None => return Err(format!("node {name} has no Ready condition yet")),
    }
    let image = node["status"]["nodeInfo"]["osImage"].as_str().unwrap_or("");
    let want = format!("Cairn {os_version}");
    if image != want {
        return Err(format!("node {name} reports {image:?}, not {want:?} yet"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
