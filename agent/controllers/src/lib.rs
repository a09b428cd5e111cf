//! Cairn's controllers: what makes the objects the API server stores come true.
//!
//! **Purpose.** `kubectl create deployment` must end in pods; a deleted owner must take its
//! dependents along; every namespace needs its default service account. These controllers
//! do that inside `cairn server`, as kube-controller-manager does for Kubernetes.
//!
//! **Design.** Each controller is a small [`runtime::Controller`]: it names the resources it
//! watches and reconciles one `namespace/name` key at a time, reading fresh state through the
//! in-process [`client::Client`] (the API server's own handlers, so validation and optimistic
//! concurrency apply) and moving it one step. [`runtime::run`] feeds it keys from the
//! datastore's watch. Controllers hold no caches; they are re-entrant and safe to run against
//! any state, which their tests do against the in-memory store and SQLite.
//!
//! **Served.** [`replicaset`], [`deployment`], [`job`], [`cronjob`], [`daemonset`], [`statefulset`], [`nodelifecycle`] (unknown nodes tainted, their pods evicted), [`nodeipam`]
//! (every Node's pod range), ClusterRole
//! [`aggregation`], [`serviceaccount`], [`endpoints`] (and
//! EndpointSlices), the [`scheduler`], auto-deployed [`manifests`], the
//! garbage collector ([`gc`], with background, foreground and orphan propagation); [`spawn`]
//! starts them all.

pub mod aggregation;
pub mod client;
pub mod cronjob;
pub mod csr;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod manifests;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod revisions;
pub mod runtime;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;

use std::sync::Arc;

pub use client::Client;

/// Which parts run (K3s' `--disable-controller-manager` and `--disable-scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub controllers: bool,
    pub scheduler: bool,
    /// The cluster's pod range, from which the node IPAM controller gives every Node its own
    /// (`None`: Nodes get none, and pods on them no network).
    pub cluster_cidr: Option<cairn_net::Ipv4Cidr>,
}

/// Starts the controllers and the scheduler `parts` names on the current tokio runtime; they
/// run until the runtime stops.
/// `signer`: the cluster CA, for the CSR signer (none: requests are approved but not signed).
pub fn spawn(api: cairn_apiserver::Api, parts: Parts, signer: Option<Arc<dyn csr::Signer>>) {
    let client = Client::new(api);
    let mut controllers: Vec<Arc<dyn runtime::Controller>> = Vec::new();
    if parts.controllers {
        controllers.push(Arc::new(csr::Approver));
        if let Some(signer) = signer {
            controllers.push(Arc::new(csr::Signing(signer)));
        }
        controllers.push(Arc::new(replicaset::ReplicaSets));
        controllers.push(Arc::new(deployment::Deployments));
        controllers.push(Arc::new(serviceaccount::DefaultServiceAccounts));
        controllers.push(Arc::new(endpoints::Endpoints));
        controllers.push(Arc::new(job::Jobs));
        controllers.push(Arc::new(cronjob::CronJobs));
        controllers.push(Arc::new(daemonset::DaemonSets));
        controllers.push(Arc::new(statefulset::StatefulSets));
        controllers.push(Arc::new(aggregation::ClusterRoleAggregation));
        match parts.cluster_cidr.map(nodeipam::NodeIpam::new) {
            Some(Ok(ipam)) => controllers.push(Arc::new(ipam)),
            Some(Err(e)) => eprintln!("cairn: node-ipam-controller: {e}; Nodes get no pod range"),
            None => {}
        }
        controllers.push(Arc::new(nodelifecycle::NodeLifecycle {
            grace: nodelifecycle::grace_from_env(),
        }));
        tokio::spawn(gc::run(client.clone()));
        tokio::spawn(events::run_expiry(client.clone()));
    }
    if parts.scheduler {
        controllers.push(Arc::new(scheduler::Scheduler));
    }
    for controller in controllers {
        tokio::spawn(runtime::run(client.clone(), controller, runtime::RESYNC));
    }
}

#[cfg(test)]
mod tests;
