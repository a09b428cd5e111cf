//! Requests the API server passes on to the kubelet of the pod's node: `pods/<name>/log`
//! (`kubectl logs`) and the streams `exec`, `attach` and `portforward`, whose upgraded
//! connections (WebSocket) are passed through byte for byte. The connection to the node is
//! the caller's ([`NodeProxy`], implemented by `cairn` with the API server's kubelet-client
//! certificate); this module finds the node and the container and builds the kubelet path.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::request::{Action, Subresource};
use crate::server::ExtensionFuture;
use cairn_store::Store;

/// The kubelet port when a Node does not say (`status.daemonEndpoints`).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Opens requests to kubelets.
pub trait NodeProxy: Send + Sync {
    /// `GET https://<address>:<port><path_and_query>`; the kubelet's answer, streamed, with
    /// its status code.
    fn get(&self, address: String, port: u16, path_and_query: String) -> ExtensionFuture;

    /// Sends the request's method and upgrade headers to
    /// `https://<address>:<port><path_and_query>`. When the kubelet switches protocols,
    /// answers `101` with its headers and then joins the two upgraded connections; otherwise
    /// its answer as an error.
    fn upgrade(
        &self,
        address: String,
        port: u16,
        path_and_query: String,
        req: StreamRequest,
    ) -> ExtensionFuture;
}

/// What a stream request brings: how it asks to upgrade, and the connection once upgraded.
pub struct StreamRequest {
    pub method: hyper::Method,
    pub headers: hyper::HeaderMap,
    pub query: Option<String>,
    pub on_upgrade: hyper::upgrade::OnUpgrade,
}

/// The pod of `action`, its node's address and kubelet port.
struct Located {
    pod: Value,
    address: String,
    port: u16,
}

/// `GET pods/<name>/log`: the container's log from its node, following the query
/// (`container`, `follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`,
/// `timestamps`, `limitBytes`).
pub async fn pod_log(
    store: Arc<dyn Store>,
    proxy: Arc<dyn NodeProxy>,
    action: &Action,
    query: Option<&str>,
) -> Result<hyper::Response<crate::server::ApiBody>, ApiError> {
    let Located { pod, address, port } = locate(store, action).await?;
    let (namespace, name) = names(action);
    let container = container(&pod, query)?;
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let passed: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            matches!(
                key,
                "follow"
                    | "previous"
                    | "tailLines"
                    | "sinceSeconds"
                    | "sinceTime"
                    | "timestamps"
                    | "limitBytes"
            )
        })
        .collect();
    if !passed.is_empty() {
        path.push('?');
        path.push_str(&passed.join("&"));
    }
    proxy.get(address, port, path).await
}

/// `pods/<name>/exec`, `attach` (for a container) and `portforward`: the upgrade request
/// passed to the node's kubelet (`/exec/<ns>/<pod>/<container>?...`) with its query less
/// `container`.
pub async fn pod_stream(
    store: Arc<dyn Store>,
    proxy: Arc<dyn NodeProxy>,
    action: &Action,
    req: StreamRequest,
) -> Result<hyper::Response<crate::server::ApiBody>, ApiError> {
    let Located { pod, address, port } = locate(store, action).await?;
    let (namespace, name) = names(action);
    let query = req.query.clone();
    let mut path = match action.subresource {
        Some(Subresource::PortForward) => format!("/portForward/{namespace}/{name}"),
        Some(Subresource::Attach) => format!(
            "/attach/{namespace}/{name}/{}",
            container(&pod, query.as_deref())?
        ),
        _ => format!(
            "/exec/{namespace}/{name}/{}",
            container(&pod, query.as_deref())?
        ),
    };
    let passed: Vec<&str> = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("container="))
        .collect();
    if !passed.is_empty() {
        path.push('?');
        path.push_str(&passed.join("&"));
    }
    proxy.upgrade(address, port, path, req).await
}

fn names(action: &Action) -> (String, String) {
    (
        action.namespace.clone().unwrap_or_else(|| "default".into()),
        action.name.clone().unwrap_or_default(),
    )
}

/// The pod and where its kubelet listens; a pod not (yet) on a node is a clear refusal.
async fn locate(store: Arc<dyn Store>, action: &Action) -> Result<Located, ApiError> {
    let (namespace, name) = names(action);
    let (pod, node) = {
        let (ns, n) = (namespace.clone(), name.clone());
        tokio::task::spawn_blocking(move || -> Result<(Value, Option<Value>), ApiError> {
            let pod = stored(&*store, "pods", Some(&ns), &n)?.ok_or_else(|| {
                ApiError::NotFound(crate::error::Subject {
                    kind: "pods".into(),
                    group: String::new(),
                    name: n.clone(),
                })
            })?;
            let node = match pod["spec"]["nodeName"].as_str() {
                Some(node) => stored(&*store, "nodes", None, node)?,
                None => None,
            };
            Ok((pod, node))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
    };
    let Some(node_name) = pod["spec"]["nodeName"].as_str() else {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = node.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "pod {name} is on node {node_name}, which does not exist"
        ))
    })?;
    let (address, port) = kubelet_endpoint(&node)
        .ok_or_else(|| ApiError::BadRequest(format!("node {node_name} has no address")))?;
    Ok(Located { pod, address, port })
}

/// Where the kubelet of `node` listens: its address and `status.daemonEndpoints`' port (else
/// [`DEFAULT_KUBELET_PORT`]); `None` when the Node has no address.
pub fn kubelet_endpoint(node: &Value) -> Option<(String, u16)> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((node_address(node)?, port))
}

/// A core object from the store, as stored.
pub(crate) fn stored(
    store: &dyn Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let resource = crate::resources::find("", "v1", plural).expect("core resources are built in");
    Ok(store
        .get(&resource.key(namespace, name))?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// The container asked for, else the only one (or the `kubectl.kubernetes.io/default-container`
/// annotation's).
fn container(pod: &Value, query: Option<&str>) -> Result<String, ApiError> {
    let asked = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("container="));
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(asked) = asked.filter(|a| !a.is_empty()) {
        let asked = crate::request::decode(asked)?;
        if !names.contains(&asked.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "container {asked} is not valid for pod {name}"
            )));
        }
        return Ok(asked);
    }
    if let Some(default) =
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
    {
        return Ok(default.to_owned());
    }
    let app: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match app.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            app.join(" ")
        ))),
    }
}

/// The node's InternalIP, else its first address.
fn node_address(node: &Value) -> Option<String> {
    let addresses = node["status"]["addresses"].as_array()?;
    addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())
        .map(str::to_owned)
}
