//! Node IPAM: every Node gets its own pod range, as kube-controller-manager's range
//! allocator does with `--allocate-node-cidrs`: a /24 ([`NODE_PREFIX`]) of the cluster's pod
//! range (`cairn server --cluster-cidr`, 10.42.0.0/16 by default, as in K3s) in `spec.podCIDR`
//! and `spec.podCIDRs`, never one another Node holds. The kubelet waits for it and makes the
//! node's pod bridge from it.
//!
//! The taken ranges are read from the Nodes at every reconcile (no in-memory bitmap to rebuild
//! after a restart, and a deleted Node's range is free at once). A range once given is never
//! changed, even if it lies outside a new cluster range (Kubernetes does the same: the node
//! must be deleted and registered again). The cluster range is also written on the Node as the
//! annotation [`CLUSTER_CIDR_ANNOTATION`], so a kubelet on any node knows what not to
//! masquerade. A full cluster range leaves the Node without one and records a
//! `CIDRNotAvailable` Event on it, looking again every minute.

use std::time::Duration;

use cairn_net::Ipv4Cidr;
use serde_json::{json, Value};

use crate::client::{Client, NODES};
use crate::events;
use crate::runtime::{Controller, Key, Outcome, Watched};

/// Every node's pod range is this long (254 pods, more than the kubelet's 110).
pub const NODE_PREFIX: u8 = 24;
/// K3s' default cluster range.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
/// Where a Node says which cluster range its pod range belongs to.
pub const CLUSTER_CIDR_ANNOTATION: &str = "net.cairn.dev/cluster-cidr";

pub struct NodeIpam {
    pub cluster_cidr: Ipv4Cidr,
}

impl NodeIpam {
    /// Fails when the cluster range is too small to hold a node's range.
    pub fn new(cluster_cidr: Ipv4Cidr) -> Result<NodeIpam, String> {
        if cluster_cidr.prefix() > NODE_PREFIX {
            return Err(format!(
                "the cluster range {cluster_cidr} is smaller than one node's /{NODE_PREFIX}"
            ));
        }
        Ok(NodeIpam { cluster_cidr })
    }
}

fn pod_cidr(node: &Value) -> Option<Ipv4Cidr> {
    node["spec"]["podCIDR"].as_str()?.parse().ok()
}

impl Controller for NodeIpam {
    fn name(&self) -> &'static str {
        "node-ipam-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![Watched {
            resource: NODES,
            keys: |node| {
                vec![Key::new(
                    "",
                    node["metadata"]["name"].as_str().unwrap_or(""),
                )]
            },
        }]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(mut node) = client
            .get(NODES, "", &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if node["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        let annotated = node["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION].is_string();
        if let Some(have) = node["spec"]["podCIDR"].as_str().map(str::to_owned) {
            // Given earlier (or by hand): complete podCIDRs and the annotation, change nothing.
            if node["spec"]["podCIDRs"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                && annotated
            {
                return Ok(Outcome::Done);
            }
            node["spec"]["podCIDRs"] = json!([have]);
            if !annotated && pod_cidr(&node).is_some_and(|c| self.cluster_cidr.covers(&c)) {
                node["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION] =
                    json!(self.cluster_cidr.to_string());
            }
            client
                .update(NODES, "", &node)
                .map_err(|e| format!("completing the pod range of node {}: {e}", key.name))?;
            return Ok(Outcome::Done);
        }
        let taken: Vec<Ipv4Cidr> = client
            .list(NODES, "")
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(pod_cidr)
            .collect();
        let count = self.cluster_cidr.size() >> (32 - NODE_PREFIX);
        let free = (0..count)
            .filter_map(|i| self.cluster_cidr.subnet(NODE_PREFIX, i))
            .find(|c| !taken.iter().any(|t| t.covers(c) || c.covers(t)));
        let Some(range) = free else {
            let message = format!(
                "Node {} has no pod range: all {count} /{NODE_PREFIX} ranges of the cluster range {} are taken",
                key.name, self.cluster_cidr
            );
            events::record(
                client,
                &node,
                "Warning",
                "CIDRNotAvailable",
                &message,
                self.name(),
            );
            return Ok(Outcome::After(Duration::from_secs(60)));
        };
        node["spec"]["podCIDR"] = json!(range.to_string());
        node["spec"]["podCIDRs"] = json!([range.to_string()]);
        node["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION] =
            json!(self.cluster_cidr.to_string());
        client
            .update(NODES, "", &node)
            .map_err(|e| format!("giving node {} the pod range {range}: {e}", key.name))?;
        eprintln!(
            "cairn: node-ipam-controller: node {} gets pod range {range}",
            key.name
        );
        Ok(Outcome::Done)
    }
}
