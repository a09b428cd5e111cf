//! Helpers for the image store tests: temporary directories, tar and OCI archive builders,
//! the real test images.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cairn-images-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Unpacking keeps owners and makes device nodes and trusted.* xattrs: root only.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the image store tests unpack layers with owners, whiteout devices and trusted.* xattrs: run them as root"
    );
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry of a test tar.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Link(&'a str, &'a str),
}

pub fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Zstd => zstd::encode_all(data, 3).unwrap(),
        Comp::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        }
    }
}

/// One platform's image: its layers (uncompressed tar, compression, media type) and the
/// `config` section of its config.
pub struct PlatformImage {
    pub platform: Value,
    pub layers: Vec<(Vec<u8>, Comp, &'static str)>,
    pub config: Value,
}

/// Digests of what `oci_layout` wrote for one platform.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: String,
    pub config: String,
    pub diff_ids: Vec<String>,
    pub layer_digests: Vec<String>,
}

/// An OCI layout's files, its index digest, and what was written per platform.
pub type Layout = (Vec<(String, Vec<u8>)>, String, Vec<Written>);

/// The files of an OCI layout with one multi-platform index named `name`.
pub fn oci_layout(name: &str, images: &[PlatformImage]) -> Layout {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut descriptors = Vec::new();
    let mut written = Vec::new();
    for image in images {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for (tar, comp, media_type) in &image.layers {
            let blob = compress(tar, *comp);
            diff_ids.push(sha256(tar));
            layer_digests.push(sha256(&blob));
            layer_descs.push(
                json!({"mediaType": media_type, "digest": sha256(&blob), "size": blob.len()}),
            );
            blobs.push(blob);
        }
        let mut config = image.platform.clone();
        config["config"] = image.config.clone();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": layer_descs,
        }))
        .unwrap();
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest), "size": manifest.len(), "platform": image.platform,
        }));
        written.push(Written {
            manifest: sha256(&manifest),
            config: sha256(&config),
            diff_ids,
            layer_digests,
        });
        blobs.push(config);
        blobs.push(manifest);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descriptors,
    }))
    .unwrap();
    let index_digest = sha256(&index);
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
        }],
    });
    blobs.push(index);
    let mut files = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), serde_json::to_vec(&top).unwrap()),
    ];
    for blob in blobs {
        let name = format!("blobs/sha256/{}", &sha256(&blob)[7..]);
        if !files.iter().any(|(n, _)| *n == name) {
            files.push((name, blob));
        }
    }
    (files, index_digest, written)
}

/// A tar of named files.
pub fn tar_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<E<'_>> = files
        .iter()
        .map(|(n, d)| E::File(n.as_str(), 0o644, d.as_slice()))
        .collect();
    tar(&entries)
}

/// The `--arch` name cairnctl uses for this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "arm" => "armv7",
        other => other,
    }
}

/// The directory with `busybox.oci.tar` and `httpd.oci.tar`: `$CAIRN_TEST_IMAGES` (what
/// `make unit-test` builds), else built once here with `cairnctl test-images`.
pub fn test_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CAIRN_TEST_IMAGES") {
            let dir = PathBuf::from(dir);
            if dir.join("busybox.oci.tar").is_file() && dir.join("httpd.oci.tar").is_file() {
                return dir;
            }
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cairn-images-test-images");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args(["run", "-q", "-p", "cairnctl", "--", "test-images", "-o"])
            .arg(&dir)
            .args(["--arch", host_arch()])
            .status()
            .expect("running cairnctl test-images");
        assert!(status.success(), "cairnctl test-images failed: {status}");
        dir
    })
    .clone()
}

/// `lgetxattr`, `None` when absent.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
