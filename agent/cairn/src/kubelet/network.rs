//! The node's pod network ([`cairn_net`]), as the kubelet sees it: it waits for the Node's pod
//! range (`spec.podCIDR`, given by the server's node IPAM controller), makes the bridge and the
//! masquerade rule once it has one, and gives each pod sandbox an address.
//!
//! Until the network is up, pods with a network of their own wait with the reason
//! `NetworkNotReady` (and the cause as message) on the pod and its `PodReadyToStartContainers`
//! condition; `hostNetwork` pods run regardless. A setup that fails is tried again every 30 s.
//!
//! On a Cairn image the bridge, veth and nftables modules are not loaded at boot (they would
//! be on the boot's path to a ready API): the kubelet has cairn-init load them
//! ([`load_modules`]) just before it makes the network.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cairn_controllers::nodeipam::CLUSTER_CIDR_ANNOTATION;
use cairn_net::{Ipv4Cidr, Network};
use hyper::Method;

use crate::client::Client;

/// The image's list of the pod network's kernel modules (the board's `pod_network_modules`).
const MODULE_LIST: &str = "/etc/cairn/modules.pod-network";
/// cairn-init, which loads them (`load-modules FILE`) as it loads the boot's.
const INIT: &str = "/usr/sbin/init";

/// The pod is not started because the node's network is not up (the kubelet's reason).
pub const NOT_READY: &str = "NetworkNotReady";
/// The pod's own interface could not be made (the kubelet's event reason for sandboxes).
pub const SANDBOX_FAILED: &str = "FailedCreatePodSandBox";

enum State {
    Waiting(String),
    Ready(Arc<Network>),
}

pub struct PodNetwork {
    bridge: String,
    state_dir: PathBuf,
    state: Mutex<State>,
}

impl PodNetwork {
    /// A network on `bridge` with its allocations in `state_dir`, not set up yet.
    pub fn new(bridge: &str, state_dir: &Path) -> PodNetwork {
        PodNetwork {
            bridge: bridge.to_owned(),
            state_dir: state_dir.to_owned(),
            state: Mutex::new(State::Waiting(
                "the node's pod network is being set up".into(),
            )),
        }
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn ready(&self) -> Result<Arc<Network>, String> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Ready(net) => Ok(net.clone()),
            State::Waiting(why) => Err(why.clone()),
        }
    }

    /// Waits for the Node's pod range, then sets the network up (again after a failure),
    /// freeing the addresses of pods that went away while `cairn` was down.
    pub async fn run(self: Arc<Self>, client: Client, node_name: String) {
        let mut polls = 0u32;
        let (pod_cidr, cluster_cidr) = loop {
            match pod_range(&client, &node_name).await {
                Ok(Some(ranges)) => break ranges,
                Ok(None) => self.set(State::Waiting(format!(
                    "node {node_name} has no pod range (spec.podCIDR) yet: the server's node IPAM \
                     controller gives one (not with --disable-controller-manager)"
                ))),
                Err(e) => self.set(State::Waiting(format!("reading node {node_name}: {e}"))),
            }
            polls += 1;
            let pause = if polls < 60 { 1 } else { 10 };
            tokio::time::sleep(Duration::from_secs(pause)).await;
        };
        let config = cairn_net::Config::new(&self.bridge, pod_cidr, cluster_cidr, &self.state_dir);
        loop {
            match tokio::task::spawn_blocking(load_modules).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("cairn: kubelet: warning: {e}"),
                Err(e) => {
                    eprintln!("cairn: kubelet: warning: loading the pod network's modules: {e}")
                }
            }
            let c = config.clone();
            match tokio::task::spawn_blocking(move || Network::setup(c)).await {
                Ok(Ok(net)) => {
                    let net = Arc::new(net);
                    forget_gone_pods(&client, &node_name, &net).await;
                    eprintln!(
                        "cairn: kubelet: pod network up: bridge {} {}/{} (cluster {cluster_cidr})",
                        self.bridge,
                        net.gateway(),
                        pod_cidr.prefix()
                    );
                    self.set(State::Ready(net));
                    return;
                }
                Ok(Err(e)) => {
                    let message = format!("setting up the pod network ({}): {e}", self.bridge);
                    eprintln!("cairn: kubelet: {message} (trying again in 30 s)");
                    self.set(State::Waiting(message));
                }
                Err(e) => self.set(State::Waiting(format!("setting up the pod network: {e}"))),
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }

    /// Gives the pod namespace at `netns` its interface and address; the error is a pod
    /// reason and message.
    pub async fn attach(&self, netns: &Path, uid: &str) -> Result<Ipv4Addr, (String, String)> {
        let net = self
            .ready()
            .map_err(|why| (NOT_READY.to_owned(), format!("network is not ready: {why}")))?;
        let (netns, key) = (netns.to_owned(), uid.to_owned());
        tokio::task::spawn_blocking(move || net.attach(&netns, &key))
            .await
            .map_err(|e| (SANDBOX_FAILED.to_owned(), e.to_string()))?
            .map_err(|e| {
                (
                    SANDBOX_FAILED.to_owned(),
                    format!("setting up the pod's network: {e}"),
                )
            })
    }

    /// Deletes the pod's interface and frees its address (blocking). Before the network is up
    /// there is nothing of this process's to undo: leftovers of an earlier run are freed when
    /// it comes up.
    pub fn detach(&self, uid: &str) -> Result<(), String> {
        match self.ready() {
            Ok(net) => net.detach(uid).map_err(|e| e.to_string()),
            Err(_) => Ok(()),
        }
    }
}

/// The Node's `spec.podCIDR` and the cluster range of its annotation (without one: the pod
/// range itself, so only traffic between this node's pods goes unmasqueraded).
async fn pod_range(client: &Client, node: &str) -> Result<Option<(Ipv4Cidr, Ipv4Cidr)>, String> {
    let node = match client
        .request(Method::GET, &format!("/api/v1/nodes/{node}"), None)
        .await
    {
        Ok(n) => n,
        Err(crate::client::ClientError::Status { code, .. })
            if code == hyper::StatusCode::NOT_FOUND =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(text) = node["spec"]["podCIDR"].as_str() else {
        return Ok(None);
    };
    let pod: Ipv4Cidr = text
        .parse()
        .map_err(|e| format!("the node's spec.podCIDR: {e}"))?;
    let cluster = node["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION]
        .as_str()
        .and_then(|c| c.parse::<Ipv4Cidr>().ok())
        .filter(|c| c.covers(&pod))
        .unwrap_or(pod);
    Ok(Some((pod, cluster)))
}

/// Frees the addresses of pods no longer bound to this node.
async fn forget_gone_pods(client: &Client, node: &str, net: &Arc<Network>) {
    let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
    let live: Vec<String> = match client.request(Method::GET, &path, None).await {
        Ok(list) => list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
            .collect(),
        Err(e) => {
            eprintln!("cairn: kubelet: listing pods to free stale addresses: {e}");
            return;
        }
    };
    let net = net.clone();
    let freed =
        tokio::task::spawn_blocking(move || net.retain(|key| live.iter().any(|u| u == key))).await;
    match freed {
        Ok(Ok(freed)) => {
            for (ip, uid) in freed {
                eprintln!("cairn: kubelet: freed {ip} of pod {uid}, which is gone");
            }
        }
        Ok(Err(e)) => eprintln!("cairn: kubelet: freeing addresses of gone pods: {e}"),
        Err(e) => eprintln!("cairn: kubelet: freeing addresses of gone pods: {e}"),
    }
}

/// Has cairn-init load the pod network's kernel modules (those not loaded yet, with their
/// dependencies; it reports on the console). Nothing to do off a Cairn image (no list).
fn load_modules() -> Result<(), String> {
    if !Path::new(MODULE_LIST).exists() {
        return Ok(());
    }
    let status = std::process::Command::new(INIT)
        .args(["load-modules", MODULE_LIST])
        .status()
        .map_err(|e| format!("running {INIT} load-modules {MODULE_LIST}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{INIT} load-modules {MODULE_LIST}: {status}: not every module of the pod network \
             loaded (its warnings are above)"
        ))
    }
}
