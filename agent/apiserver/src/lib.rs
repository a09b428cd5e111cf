//! The Cairn Kubernetes-compatible API server (library).
//!
//! **Purpose.** Serve the Kubernetes REST API for the resources Cairn supports, backed by the
//! [`cairn_store`] revision log, so the real `kubectl` (and later controllers and kubelets)
//! work against a Cairn node. `cairn server` serves it over HTTPS; its tests drive it with the
//! real kubectl (`agent/cairn/tests/kubectl.rs`).
//!
//! **Design.** Firecracker style, in three layers:
//! - [`request`] turns method, path, query and headers into a typed [`request::ApiRequest`]
//!   (a [`request::Action`]: verb, resource, namespace, name, options) without I/O;
//! - [`handlers`] execute actions against an `Arc<dyn Store>` (synchronously, on the blocking
//!   pool) and return JSON; watches stream newline-delimited `WatchEvent`s;
//! - [`server`] owns sockets, TLS, bodies and content types, and asks [`auth`] who is calling
//!   (client certificates, bootstrap tokens; anonymous only for health and version).
//!
//! Every error is an [`error::ApiError`] and reaches the client as a Kubernetes `Status`.
//! Resources are rows of a [`resources::Catalog`] (the built-in [`resources::RESOURCES`] and
//! those of stored CustomResourceDefinitions); objects are stored as JSON under
//! `/registry/<group>/<resource>/[<namespace>/]<name>` (`core` for the core group), without
//! `metadata.resourceVersion`, which is the store revision of the key and filled in on reads.
//! Objects are handled as `serde_json::Value`; the typed k8s-openapi structs (Kubernetes 1.35)
//! validate shapes and apply defaults ([`validate`]) and [`table`] prints kubectl columns.
//!
//! **Served.** The resources of [`resources::RESOURCES`]: core/v1 namespaces, nodes, pods,
//! services, endpoints, configmaps, secrets, serviceaccounts, events, persistentvolumes and
//! claims; apps/v1 deployments, replicasets, daemonsets, statefulsets, controllerrevisions;
//! batch/v1 jobs and cronjobs; leases, endpointslices, ingresses and ingressclasses,
//! storageclasses, RBAC roles and bindings, poddisruptionbudgets and priorityclasses,
//! customresourcedefinitions and the custom resources they define ([`crd`]: every served
//! version, schema defaults and checks, printer columns, `status`/`scale`). For each:
//! get, list (label selectors `= == != in notin exists !exists`, field selectors on
//! `metadata.name`/`metadata.namespace` and the resource's own field labels, `limit`/`continue`
//! at a fixed revision), watch (from a resourceVersion, bookmarks, `sendInitialEvents`, 410
//! ERROR when compacted), create (`generateName`, name rules, namespace must exist), update
//! with optimistic concurrency, patch (JSON, merge, strategic-as-merge), delete,
//! deletecollection, `dryRun=All`, `fieldValidation`; the `status` subresource (writes to the
//! object keep its status, `/status` writes change only the status) and `scale` for
//! deployments, replicasets and statefulsets; discovery (classic and aggregated v2),
//! `/openapi/v3` and `/openapi/v2` (JSON), `/version`, health endpoints, `/metrics` ([`metrics`]); `Table` answers
//! with kubectl's columns. The resource metrics API `metrics.k8s.io/v1beta1` (`kubectl top`)
//! is answered from the nodes' kubelets ([`resource_metrics`]).
//!
//! **Limitations.** Strategic merge patches merge lists by the keys [`openapi`] knows
//! (`handlers::strategic`). Server-side apply ([`handlers`]`::apply`: field managers,
//! conflicts, `force`) records only appliers' fields: plain updates and patches add no
//! `Update` entry to `managedFields`. No YAML bodies except apply's; protobuf bodies
//! (kubectl's typed commands) are read ([`protobuf`]) but answers are always JSON, and
//! `/openapi/v2` is served as JSON only. Finalizers hold a deletion (`deletionTimestamp` set,
//! the object goes with its last finalizer); a deleted namespace is `Terminating` until its
//! contents (and their finalizers) are gone. Deleting a pod a node runs is graceful: it stays
//! `Terminating` until its kubelet has stopped it and deletes it with grace 0 (or its Node is
//! deleted), so `kubectl delete pod` waits for the containers to stop. Lists
//! honour `resourceVersion` and `resourceVersionMatch` (`Exact` reads the past revision;
//! otherwise the current state); pages of a list without selectors say how many objects
//! follow (`remainingItemCount`).
//! Watches end after 30 minutes by default. A body over 3 MiB gets `413` without the rest
//! being read: an HTTP/1.1 client still sending a much larger body may see the connection
//! closed (broken pipe) before it reads the answer (bodies just over the limit get the
//! `Status`).

pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod crd;
pub mod csr;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod meta;
pub mod metrics;
pub mod nodeproxy;
pub mod openapi;
pub mod protobuf;
pub mod request;
pub mod resource_metrics;
pub mod resources;
pub mod schedule;
pub mod selector;
pub mod server;
pub mod serviceaccount;
pub mod table;
pub mod validate;
pub mod version;

pub use error::{ApiError, Status};
pub use handlers::{Api, Reply};
pub use server::{serve, serve_https, Extension, ExtensionFuture, Peer, RequestBody, Server};
