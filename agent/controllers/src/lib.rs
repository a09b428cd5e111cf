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
//! **Served.** [`replicaset`], [`deployment`], [`serviceaccount`], the [`scheduler`], the
//! garbage collector ([`gc`], with background, foreground and orphan propagation); [`spawn`]
//! starts them all.

pub mod client;
pub mod deployment;
pub mod events;
pub mod gc;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod scheduler;
pub mod serviceaccount;

use std::sync::Arc;

pub use client::Client;

/// Starts every controller on the current tokio runtime; they run until the runtime stops.
pub fn spawn(api: cairn_apiserver::Api) {
    let client = Client::new(api);
    let controllers: Vec<Arc<dyn runtime::Controller>> = vec![
        Arc::new(replicaset::ReplicaSets),
        Arc::new(deployment::Deployments),
        Arc::new(serviceaccount::DefaultServiceAccounts),
        Arc::new(scheduler::Scheduler),
    ];
    for controller in controllers {
        tokio::spawn(runtime::run(client.clone(), controller, runtime::RESYNC));
    }
    tokio::spawn(gc::run(client));
}

#[cfg(test)]
mod tests;
