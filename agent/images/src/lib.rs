//! The node's OCI image store, on the data partition (`DATA/agent/store`).
//!
//! Layout under the store's root:
//!
//! | path | content |
//! |---|---|
//! | `images.json` | reference → image record, replaced atomically (temp file, fsync, rename) |
//! | `blobs/sha256/<hex>` | index, manifest and config blobs, verified by digest on the way in |
//! | `layers/<diff-id hex>/` | one unpacked layer in overlayfs format (a `lowerdir`) |
//! | `tmp/` | layers being unpacked; emptied when the store is opened |
//! | `lock` | `flock`ed by writers (imports, pulls, removals, prunes) |
//!
//! Compressed layer blobs are not kept: a layer is unpacked once, straight from the archive
//! or the network, and only a record of its blob (digest, size, media type, diff id) stays
//! in `images.json`. The uncompressed stream's sha256 is checked against the image config's
//! diff id before the layer directory is renamed to its final name, so a layer directory
//! under `layers/` is always whole and verified.
//!
//! Readers ([`Store::resolve`], [`Store::list`]) take no lock: they read `images.json`,
//! which writers only ever replace whole.
//!
//! Garbage collection ([`Store::collect_garbage`], module `gc`) removes unused images least
//! recently used first when the kubelet finds the data partition too full; when each image
//! was last used is kept in memory ([`Store::mark_used`]) and written only with other writes
//! of `images.json`, or at most as often as [`Store::flush_usage`] is asked to.

mod archive;
mod gc;
mod oci;
mod platform;
pub mod reference;
mod registry;
mod store;
mod stream;
mod unpack;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

pub use gc::{FsUsage, GcOutcome, GcRequest, RemovedImage};
pub use platform::Platform;
pub use reference::Reference;
pub use registry::{Credentials, PullOptions, SYSTEM_CA_BUNDLE};
pub use store::Store;

/// What can go wrong in the image store. Every message names the file, reference or
/// digest concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image by that reference in the store.
    #[error("image {0:?} not found in the image store")]
    NotFound(String),
    /// The image exists, but not for the node's platform.
    #[error("{reference}: no image for {wanted} (the image is for {})", .available.join(", "))]
    WrongPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },
    /// Content did not hash to its digest (a corrupted or tampered blob or layer).
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// An archive that is truncated, malformed, or not an image archive.
    #[error("{}: {}", .0.display(), .1)]
    BadArchive(PathBuf, String),
    /// A reference that does not parse.
    #[error("invalid image reference {0:?}: {1}")]
    BadReference(String, String),
    /// An image whose documents are malformed or of a kind the store does not run
    /// (an artifact rather than a container image, Docker schema 1, an unknown layer type).
    #[error("{what}: {reason}")]
    BadImage { what: String, reason: String },
    /// The registry has no such repository, tag or digest.
    #[error("{reference}: not found in registry {registry} ({detail})")]
    NotInRegistry {
        reference: String,
        registry: String,
        detail: String,
    },
    /// The registry (or its token service) refused access: no or wrong credentials.
    #[error("registry {registry}: authentication failed: {message}")]
    Unauthorized { registry: String, message: String },
    /// Reaching or talking to a registry failed (connection, TLS, an unexpected answer).
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// The store's state (`images.json`) does not parse, is missing beside unpacked layers,
    /// or does not account for what is on disk: nothing is deleted from such a store.
    #[error("{}: {reason}: the image store's state looks damaged, so nothing is deleted from it until it is repaired", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// A file system error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The container defaults an image's config carries (`config` in the OCI config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `User`: user (and group) to run as, as written (`1000`, `nobody:nogroup`).
    pub user: String,
    /// `Env`: `NAME=value` entries.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments (or command when there is no entrypoint).
    pub cmd: Vec<String>,
    /// `WorkingDir`: empty for `/`.
    pub working_dir: String,
    /// `ExposedPorts` keys (`8080/tcp`), sorted.
    pub exposed_ports: Vec<String>,
    /// `Volumes` keys (paths), sorted.
    pub volumes: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal` (`SIGTERM`, `SIGQUIT`, `15`), if set.
    pub stop_signal: Option<String>,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it is stored under (normalised: `docker.io/library/busybox:latest`).
    pub reference: String,
    /// Image ID: `sha256:` digest of the config.
    pub id: String,
    /// Repository digest: the digest of the index or manifest the image was imported or
    /// pulled as (what `name@digest` pins).
    pub digest: String,
    /// The digest of the platform's manifest (the same as `digest` without an index).
    pub manifest_digest: String,
    /// The container defaults.
    pub config: ImageConfig,
    /// The unpacked layer directories, lowest first (overlayfs' `lowerdir` wants them
    /// highest first: reverse and join with `:`).
    pub layers: Vec<PathBuf>,
    /// Distribution size: manifest, config and (compressed) layers, as registries and
    /// `status.images[].sizeBytes` count it.
    pub size: u64,
}

/// One image of [`Store::list`], with every name it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Image ID (`sha256:` config digest).
    pub id: String,
    /// References (`registry/repo:tag` or `registry/repo@sha256:...`), sorted.
    pub references: Vec<String>,
    /// `registry/repo@<repository digest>` for each repository the image is in, sorted.
    pub repo_digests: Vec<String>,
    /// Distribution size (see [`Image::size`]).
    pub size: u64,
}

impl ImageSummary {
    /// The names the kubelet reports in `status.images[].names`: repository digests, then
    /// references.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.repo_digests.clone();
        names.extend(self.references.iter().filter(|r| !r.contains('@')).cloned());
        names
    }
}

/// One image an import or pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The reference it is stored under.
    pub reference: String,
    /// Image ID (`sha256:` config digest).
    pub id: String,
    /// Repository digest (index or manifest).
    pub digest: String,
    /// Distribution size.
    pub size: u64,
    /// Layers unpacked by this import (the others were in the store already).
    pub new_layers: usize,
}
