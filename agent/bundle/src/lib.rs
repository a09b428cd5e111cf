//! Signed Cairn update bundles (`*.cairnb`).
//!
//! ```text
//! offset  size  content
//! 0       8     magic "CAIRNB\0\x01" (format 1)
//! 8       4     manifest length N, little endian, at most 1 MiB
//! 12      N     manifest, JSON (see [`Manifest`])
//! 12+N    64    ed25519 signature over bytes 0 .. 12+N
//! 76+N    ...   payloads in manifest order, each one zstd frame of `storedSize` bytes
//! ```
//!
//! The signature covers the manifest, and the manifest holds the size and sha256 of every
//! payload both as stored and unpacked, so one verified signature vouches for every byte.
//! A reader ([`Reader`]) verifies the signature and checks the manifest against the node
//! ([`Expect`]) before it returns a single payload byte, then streams each payload through
//! zstd while hashing it: memory use does not depend on the bundle's size. A local file can
//! be checked whole before anything is written ([`verify_file`]).

mod error;
mod keys;
mod read;
mod version;
mod write;

pub use error::Error;
pub use keys::{KeyId, PublicKey, SigningKey, TrustedKeys};
pub use read::{verify_file, Expect, Reader};
pub use version::compare as compare_versions;
pub use write::{write_bundle, PayloadSource};

use serde::{Deserialize, Serialize};

/// File magic: "CAIRNB", a NUL and the format number.
pub const MAGIC: [u8; 8] = *b"CAIRNB\x00\x01";
/// The format this crate reads and writes.
pub const FORMAT: u32 = 1;
/// Largest manifest accepted (a real one is about 1 KiB).
pub const MAX_MANIFEST: u32 = 1 << 20;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// What a bundle is and holds; signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The board it was built for (`board-configs/<board>.yaml`).
    pub board: String,
    /// Cairn's architecture name (`x86_64`, `aarch64`, `armv7`, `s390x`).
    pub arch: String,
    /// The Cairn version it installs.
    pub version: String,
    /// The oldest running version that may install it; `None`: any older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// Seconds since the epoch when it was made (`SOURCE_DATE_EPOCH` when set).
    pub created: u64,
    /// The signing key's id.
    pub key: KeyId,
    /// Kernel command line for the slot's boot entry, without `cairn.slot=`.
    pub cmdline: String,
    pub payloads: Vec<Payload>,
}

/// One payload: a slot's read-only root, kernel or initramfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payload {
    /// `rootfs`, `kernel` or `initrd`.
    pub name: String,
    /// Unpacked size and sha256 (hex).
    pub size: u64,
    pub sha256: String,
    /// Stored (zstd) size and sha256 (hex).
    pub stored_size: u64,
    pub stored_sha256: String,
}

impl Manifest {
    pub fn payload(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.name == name)
    }

    /// Bytes from the start of the file to the first payload.
    pub fn header_len(manifest_len: usize) -> u64 {
        (MAGIC.len() + 4 + manifest_len + SIGNATURE_LEN) as u64
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
