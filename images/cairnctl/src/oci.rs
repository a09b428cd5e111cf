//! Test container images, built from Debian's `busybox-static` so that tests need no registry
//! on the internet: `cairn.local/test/busybox:latest` (a shell and the usual tools) and
//! `cairn.local/test/httpd:latest` (busybox's HTTP server on port 8080, serving `/www`).
//!
//! Each is written as an OCI image layout in a tar archive (what `skopeo copy
//! oci-archive:...`, `ctr import` and Cairn's image store read): `oci-layout`, `index.json`
//! naming one multi-architecture image index, and `blobs/sha256/` with a manifest, a config
//! and zstd-compressed layers per platform. The layers are reproducible: fixed times
//! (`SOURCE_DATE_EPOCH`), owners and order, so the same inputs give the same digests.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::board::Arch;

/// Registry host of the test images (not a real registry: the images are preloaded).
pub const REGISTRY: &str = "cairn.local/test";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Port the httpd image serves on.
pub const HTTPD_PORT: u16 = 8080;

/// busybox applets linked in `/bin` (what tests and users reach for).
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "cp", "date", "echo", "env", "false", "grep", "head", "hostname", "httpd",
    "id", "kill", "ls", "mkdir", "mv", "nc", "ps", "pwd", "rm", "sed", "sleep", "tail", "test",
    "top", "touch", "true", "uname", "wc", "wget",
];

/// The two test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestImage {
    Busybox,
    Httpd,
}

impl TestImage {
    pub const ALL: [TestImage; 2] = [TestImage::Busybox, TestImage::Httpd];

    pub fn name(self) -> &'static str {
        match self {
            TestImage::Busybox => "busybox",
            TestImage::Httpd => "httpd",
        }
    }

    /// `cairn.local/test/<name>:latest`.
    pub fn reference(self) -> String {
        format!("{REGISTRY}/{}:latest", self.name())
    }

    fn config(self) -> Value {
        match self {
            TestImage::Busybox => json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
            TestImage::Httpd => json!({
                "Env": ["PATH=/bin"],
                "Cmd": ["httpd", "-f", "-v", "-p", HTTPD_PORT.to_string(), "-h", "/www"],
                "ExposedPorts": {format!("{HTTPD_PORT}/tcp"): {}},
            }),
        }
    }
}

/// The OCI platform of an architecture.
fn platform(arch: Arch) -> Value {
    match arch {
        Arch::X86_64 => json!({"architecture": "amd64", "os": "linux"}),
        Arch::Aarch64 => json!({"architecture": "arm64", "os": "linux"}),
        Arch::Armv7 => json!({"architecture": "arm", "os": "linux", "variant": "v7"}),
        Arch::S390x => json!({"architecture": "s390x", "os": "linux"}),
    }
}

/// A content-addressed blob.
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

impl Blob {
    fn json(media_type: &'static str, value: &Value) -> Blob {
        Blob {
            media_type,
            bytes: serde_json::to_vec(value).expect("JSON"),
        }
    }
    fn digest(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(&self.bytes)))
    }
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len()})
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tar of `entries` (path, mode, contents or symlink target), deterministic.
fn tar_layer(entries: &[Entry], epoch: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(epoch);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            Entry::File(path, mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())?;
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

enum Entry {
    Dir(&'static str, u32),
    File(String, u32, Vec<u8>),
    Link(String, String),
}

/// The layers of `image` for one platform, from its static busybox binary: each layer's
/// diff id (the digest of the uncompressed tar) and its zstd bytes.
fn layers(image: TestImage, busybox: &[u8], epoch: u64) -> Result<Vec<(String, Vec<u8>)>> {
    let mut base = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::File("bin/busybox".into(), 0o755, busybox.to_vec()),
        Entry::File(
            "etc/passwd".into(),
            0o644,
            b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
        ),
        Entry::File(
            "etc/group".into(),
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        ),
    ];
    base.extend(
        APPLETS
            .iter()
            .map(|a| Entry::Link(format!("bin/{a}"), "busybox".into())),
    );
    let mut layers = vec![tar_layer(&base, epoch)?];
    if image == TestImage::Httpd {
        let page = Entry::File(
            "www/index.html".into(),
            0o644,
            b"<h1>Cairn test httpd</h1>\n".to_vec(),
        );
        layers.push(tar_layer(&[Entry::Dir("www", 0o755), page], epoch)?);
    }
    layers
        .into_iter()
        .map(|tar| {
            let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
            let compressed = zstd::encode_all(tar.as_slice(), 19).context("compressing a layer")?;
            Ok((diff_id, compressed))
        })
        .collect()
}

/// Writes `image` as an OCI archive for the given platforms (`(arch, static busybox)`).
pub fn write_archive(
    image: TestImage,
    binaries: &[(Arch, Vec<u8>)],
    epoch: u64,
    out: &Path,
) -> Result<()> {
    let created = jiff::Timestamp::from_second(epoch as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut blobs: Vec<Blob> = Vec::new();
    let mut manifests = Vec::new();
    for (arch, busybox) in binaries {
        let (diff_ids, layers): (Vec<String>, Vec<Blob>) = layers(image, busybox, epoch)?
            .into_iter()
            .map(|(diff_id, bytes)| {
                let blob = Blob {
                    media_type: LAYER,
                    bytes,
                };
                (diff_id, blob)
            })
            .unzip();
        let mut config = platform(*arch);
        config["created"] = json!(created);
        config["config"] = image.config();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let config = Blob::json(CONFIG, &config);
        let manifest = Blob::json(
            MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": config.descriptor(),
                "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            }),
        );
        let mut descriptor = manifest.descriptor();
        descriptor["platform"] = platform(*arch);
        manifests.push(descriptor);
        blobs.push(config);
        blobs.extend(layers);
        blobs.push(manifest);
    }
    let index = Blob::json(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}),
    );
    let mut top = index.descriptor();
    top["annotations"] = json!({
        "org.opencontainers.image.ref.name": "latest",
        "io.containerd.image.name": image.reference(),
    });
    blobs.push(index);
    blobs.sort_by_key(Blob::digest);
    blobs.dedup_by_key(|b| b.digest());

    let files: Vec<(String, Vec<u8>)> = [
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            "index.json".to_owned(),
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [top]}),
            )?,
        ),
    ]
    .into_iter()
    .chain(blobs.into_iter().map(|b| {
        let digest = b.digest();
        (
            format!("blobs/sha256/{}", &digest["sha256:".len()..]),
            b.bytes,
        )
    }))
    .collect();
    let mut entries = vec![
        Entry::Dir("blobs", 0o755),
        Entry::Dir("blobs/sha256", 0o755),
    ];
    entries.extend(files.into_iter().map(|(p, d)| Entry::File(p, 0o644, d)));
    let archive = tar_layer(&entries, epoch)?;
    let tmp = out.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&archive)?;
    f.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Builds both test images for `arches` into `dir` (`<name>.oci.tar`), with busybox from
/// Debian's `busybox-static` of each architecture. Returns the files written.
pub fn build(dir: &Path, arches: &[Arch], epoch: u64) -> Result<Vec<PathBuf>> {
    let wanted: Vec<(String, String)> = arches
        .iter()
        .map(|a| ("busybox-static".to_owned(), a.debian().to_owned()))
        .collect();
    let versions = crate::debs::candidates(&wanted)?;
    let mut binaries = Vec::new();
    for (arch, version) in arches.iter().zip(&versions) {
        let deb = crate::debs::fetch("busybox-static", arch.debian(), version)?;
        let root = dir.join(format!(".busybox-{}", arch.debian()));
        let _ = std::fs::remove_dir_all(&root);
        crate::debs::extract(&deb, &root)?;
        let path = root.join("bin/busybox");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::remove_dir_all(&root)?;
        binaries.push((*arch, bytes));
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for image in TestImage::ALL {
        let out = dir.join(format!("{}.oci.tar", image.name()));
        write_archive(image, &binaries, epoch, &out)?;
        written.push(out);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read as _;

    /// Every file of a tar archive.
    fn untar(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>, String)> {
        let mut out = BTreeMap::new();
        let mut archive = tar::Archive::new(bytes);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.insert(path, (kind, data, link));
        }
        out
    }

    #[test]
    fn archives_are_valid_multi_platform_layouts() {
        let dir = std::env::temp_dir().join(format!("cairn-oci-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binaries = vec![
            (Arch::X86_64, b"\x7fELF amd64 busybox".to_vec()),
            (Arch::Armv7, b"\x7fELF armhf busybox".to_vec()),
        ];
        let out = dir.join("httpd.oci.tar");
        write_archive(TestImage::Httpd, &binaries, 1_700_000_000, &out).unwrap();
        let files = untar(&std::fs::read(&out).unwrap());
        let blob = |digest: &str| -> Vec<u8> {
            let hexd = digest.strip_prefix("sha256:").unwrap();
            let data = files[&format!("blobs/sha256/{hexd}")].1.clone();
            assert_eq!(
                hex(&Sha256::digest(&data)),
                hexd,
                "blob content matches its name"
            );
            data
        };
        let json_of = |digest: &str| -> Value { serde_json::from_slice(&blob(digest)).unwrap() };
        assert_eq!(files["oci-layout"].1, br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: Value = serde_json::from_slice(&files["index.json"].1).unwrap();
        let top = &index["manifests"][0];
        assert_eq!(
            top["annotations"]["io.containerd.image.name"],
            "cairn.local/test/httpd:latest"
        );
        let image_index = json_of(top["digest"].as_str().unwrap());
        let platforms = image_index["manifests"].as_array().unwrap();
        assert_eq!(platforms.len(), 2);
        assert_eq!(platforms[1]["platform"]["variant"], "v7");
        for (p, (arch, busybox)) in platforms.iter().zip(&binaries) {
            let manifest = json_of(p["digest"].as_str().unwrap());
            let config = json_of(manifest["config"]["digest"].as_str().unwrap());
            assert_eq!(config["architecture"], platform(*arch)["architecture"]);
            assert_eq!(config["config"]["Cmd"][0], "httpd");
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 2);
            let base =
                zstd::decode_all(blob(layers[0]["digest"].as_str().unwrap()).as_slice()).unwrap();
            assert_eq!(
                config["rootfs"]["diff_ids"][0],
                format!("sha256:{}", hex(&Sha256::digest(&base)))
            );
            let base = untar(&base);
            assert_eq!(&base["bin/busybox"].1, busybox);
            assert_eq!(base["bin/sh"].0, tar::EntryType::Symlink);
            assert_eq!(base["bin/sh"].2, "busybox");
            let www = untar(
                &zstd::decode_all(blob(layers[1]["digest"].as_str().unwrap()).as_slice()).unwrap(),
            );
            assert!(String::from_utf8_lossy(&www["www/index.html"].1).contains("Cairn"));
        }
        // Reproducible: the same inputs give the same archive.
        let again = dir.join("again.oci.tar");
        write_archive(TestImage::Httpd, &binaries, 1_700_000_000, &again).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
