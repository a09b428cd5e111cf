//! The Cairn node daemon: one binary, `cairn server` or `cairn agent`, that is to become a
//! small Kubernetes-compatible orchestrator in the spirit of K3s.
//!
//! **Today** both roles generate or reuse their certificates, serve `/readyz`, `/livez`,
//! `/healthz` and `/version` over HTTPS (HTTP/1.1 and HTTP/2), print the console ready marker
//! `cairn: ready uptime_ms=N init_rss_kb=M` and stop cleanly on SIGTERM or SIGINT. `cairn config
//! render` turns the node config into the `KEY=VALUE` lines PID 1 reads (docs/design.md).
//!
//! **Design.** The binary (`main.rs`, `cli.rs`, `run.rs`) parses arguments and wires things up
//! with `anyhow`; the library modules use typed errors and are laid out as the crates they will
//! become: [`pki`] owns keys and certificates, [`apiserver`] owns TLS, HTTP and routes (routing
//! is I/O-free), [`procfs`] reads what the ready marker and certificates need from `/proc`,
//! [`kubeconfig`] renders the admin kubeconfig. One current-thread tokio runtime keeps the
//! memory small; TLS is rustls with ring only (no aws-lc, no OpenSSL).
//!
//! **Limitations.** No Kubernetes API resources, storage, controllers or kubelet yet; the agent
//! does not join its server (it only checks that one is configured) and keeps its own CA under
//! `DATA/agent/tls`; certificates are checked and renewed at start-up only.

pub mod apiserver;
pub mod kubeconfig;
pub mod pki;
pub mod procfs;
