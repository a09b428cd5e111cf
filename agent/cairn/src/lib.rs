//! The Cairn node daemon: one binary, `cairn server` or `cairn agent`, that is to become a
//! small Kubernetes-compatible orchestrator in the spirit of K3s.
//!
//! **Today** `cairn server` serves the Kubernetes API of [`cairn_apiserver`] over HTTPS,
//! backed by SQLite in `DATA/server/db/state.db`, with the cluster CA, serving and admin
//! certificates it makes on first start ([`pki`]), the server join token
//! `DATA/server/node-token` ([`token`]) and bootstrap tokens (`cairn token`, through
//! [`client`]), and runs the controllers and scheduler of `cairn_controllers`. `cairn agent`
//! joins a server with a join token ([`join`]: CA pin, then a node certificate through a
//! CertificateSigningRequest) and keeps its Node and Lease ([`node_status`]); until the
//! kubelet exists it serves only health and version ([`health`]). Both print the console
//! ready marker `cairn: ready uptime_ms=N init_rss_kb=M` and stop cleanly on SIGTERM or
//! SIGINT. `cairn config render` turns the node config into the `KEY=VALUE` lines PID 1 reads
//! (docs/design.md). [`update`] installs signed A/B bundles (`cairn update apply`) and, at
//! start, commits a healthy trial boot or records a rollback. A server that is also a worker
//! (no `--disable-agent`) joins itself over loopback the same way and also keeps its update
//! state on its Node.
//!
//! **Design.** The binary (`main.rs`, `cli.rs`, `run.rs`, `token_cmd.rs`) parses arguments and
//! wires things up with `anyhow`; the library modules use typed errors: [`pki`] owns keys,
//! certificates and the TLS configuration, [`token`] the join-token format, [`client`] a
//! kubeconfig-driven HTTPS client, [`procfs`] reads what the ready marker and certificates need
//! from `/proc`, [`kubeconfig`] renders the admin kubeconfig. One current-thread tokio runtime
//! keeps the memory small (handlers run on its blocking pool); TLS is rustls with ring only (no
//! aws-lc, no OpenSSL).
//!
//! A joined worker runs the [`kubelet`]: the pods bound to it, in containers of
//! `cairn_runtime` from images of `cairn_images`.
//!
//! **Limitations.** Pods have a network namespace with loopback only (no bridge and pod
//! addresses yet) unless `hostNetwork`; no probes, logs/exec through the API or registry
//! pulls by the kubelet yet. Node certificates are renewed only when the node starts.

/// Manifests an image recipe bakes into the read-only root.
pub const BAKED_MANIFESTS: &str = "/usr/lib/cairn/manifests";
/// Container image archives an image recipe bakes into the read-only root; the kubelet imports
/// them at start, like those in `DATA/agent/images/`.
pub const BAKED_IMAGES: &str = "/usr/lib/cairn/images";

pub mod client;
pub mod health;
pub mod join;
pub mod kubeconfig;
pub mod kubelet;
pub mod node_status;
pub mod nodeproxy;
pub mod pki;
pub mod procfs;
pub mod seed;
pub mod token;
pub mod update;
