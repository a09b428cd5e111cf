//! Importing archives into the image store: synthetic OCI layouts built here, the real test
//! images from `cairnctl test-images`, Docker archives written by skopeo, and bad input.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::process::Command;

use cairn_images::{Error, Platform, Store};
use common::*;
use serde_json::json;

/// The platform `Platform::host()` is not, for "other platform" content.
fn other_platform() -> serde_json::Value {
    if Platform::host().architecture == "s390x" {
        json!({"os": "linux", "architecture": "arm64"})
    } else {
        json!({"os": "linux", "architecture": "s390x"})
    }
}

fn host_platform_json() -> serde_json::Value {
    serde_json::to_value(Platform::host()).unwrap()
}

/// Two platforms; the host's image has a zstd base layer and a gzip layer that deletes a
/// file of the base by whiteout and makes a directory opaque.
fn synthetic(dir: &Path) -> (std::path::PathBuf, String, Vec<Written>) {
    let base = tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/keep", 0o644, b"kept\n"),
        E::File("etc/removed", 0o644, b"gone soon\n"),
        E::Dir("opt", 0o755),
        E::Dir("opt/dir", 0o700),
        E::File("opt/dir/old", 0o644, b"old\n"),
        E::Dir("bin", 0o755),
        E::File("bin/tool", 0o755, b"#!/bin/sh\necho tool\n"),
        E::Link("bin/alias", "tool"),
    ]);
    let top = tar(&[
        E::File("etc/.wh.removed", 0o644, b""),
        E::Dir("opt/dir", 0o700),
        E::File("opt/dir/.wh..wh..opq", 0o644, b""),
        E::File("opt/dir/new", 0o600, b"new\n"),
    ]);
    let other = tar(&[E::File("only-on-the-other-platform", 0o644, b"other\n")]);
    let images = [
        PlatformImage {
            platform: other_platform(),
            layers: vec![(
                other,
                Comp::Gzip,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )],
            config: json!({"Cmd": ["other"]}),
        },
        PlatformImage {
            platform: host_platform_json(),
            layers: vec![
                (
                    base,
                    Comp::Zstd,
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                (
                    top,
                    Comp::Gzip,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                ),
            ],
            config: json!({
                "Env": ["PATH=/bin", "GREETING=hi"], "Cmd": ["tool", "--flag"], "WorkingDir": "/opt",
                "User": "1000:1000", "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"},
            }),
        },
    ];
    let (files, index, written) = oci_layout("example.com/synthetic/app:v1", &images);
    let path = dir.join("synthetic.oci.tar");
    fs::write(&path, tar_files(&files)).unwrap();
    (path, index, written)
}

#[test]
fn two_platform_layout_with_whiteouts() {
    require_root();
    let tmp = TempDir::new("synthetic");
    let (archive, index_digest, written) = synthetic(tmp.path());
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    let imported = store.import_archive(&archive).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "example.com/synthetic/app:v1");
    assert_eq!(imported[0].new_layers, 2);
    let (other, host) = (&written[0], &written[1]);

    let image = store.resolve("example.com/synthetic/app:v1").unwrap();
    assert_eq!(image.id, host.config);
    assert_eq!(image.digest, index_digest, "the repo digest is the index's");
    assert_eq!(image.manifest_digest, host.manifest);
    assert_eq!(image.config.env, ["PATH=/bin", "GREETING=hi"]);
    assert_eq!(image.config.cmd, ["tool", "--flag"]);
    assert!(image.config.entrypoint.is_empty());
    assert_eq!(image.config.working_dir, "/opt");
    assert_eq!(image.config.user, "1000:1000");
    assert_eq!(image.config.exposed_ports, ["80/tcp"]);
    assert_eq!(image.config.labels["a"], "b");
    assert_eq!(image.layers.len(), 2);
    for (layer, diff_id) in image.layers.iter().zip(&host.diff_ids) {
        assert_eq!(
            layer,
            &root.join("layers").join(&diff_id[7..]),
            "lowest layer first"
        );
    }
    let (base, top) = (&image.layers[0], &image.layers[1]);
    assert_eq!(fs::read(base.join("etc/removed")).unwrap(), b"gone soon\n");
    assert_eq!(
        fs::metadata(base.join("bin/tool")).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_link(base.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(base.join("opt/dir")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(base.join("etc/keep")).unwrap().mtime(),
        1_700_000_000
    );
    // Whiteout: a 0:0 character device in the upper layer, no .wh. file.
    let wh = fs::symlink_metadata(top.join("etc/removed")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout is a character device"
    );
    assert_eq!(wh.rdev(), 0);
    assert!(!top.join("etc/.wh.removed").exists());
    // Opaque directory: the xattr, its own new file, nothing of the lower one.
    assert_eq!(
        xattr(&top.join("opt/dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&base.join("opt/dir"), "trusted.overlay.opaque"), None);
    assert_eq!(names(&top.join("opt/dir")), ["new"]);
    assert_eq!(
        fs::metadata(top.join("opt/dir/new")).unwrap().mode() & 0o777,
        0o600
    );

    // The other platform: neither its layer nor its manifest or config was stored.
    assert!(!root.join("layers").join(&other.diff_ids[0][7..]).exists());
    for d in [&other.manifest, &other.config] {
        assert!(
            !root.join("blobs/sha256").join(&d[7..]).exists(),
            "{d} not stored"
        );
    }
    // Compressed layer blobs are not kept; index, manifest and config are.
    let mut blobs = names(&root.join("blobs/sha256"));
    let mut want: Vec<String> = [&index_digest, &host.manifest, &host.config]
        .iter()
        .map(|d| d[7..].to_owned())
        .collect();
    blobs.sort();
    want.sort();
    assert_eq!(blobs, want);
    assert_eq!(names(&root.join("layers")).len(), 2);
    assert!(names(&root.join("tmp")).is_empty());

    // Found by digest reference and by ID; listed once with its names.
    let by_digest = store
        .resolve(&format!("example.com/synthetic/app@{index_digest}"))
        .unwrap();
    assert_eq!(by_digest.id, image.id);
    assert_eq!(
        store.resolve(&image.id).unwrap().reference,
        "example.com/synthetic/app:v1"
    );
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].references, ["example.com/synthetic/app:v1"]);
    assert_eq!(
        list[0].repo_digests,
        [format!("example.com/synthetic/app@{index_digest}")]
    );
    assert_eq!(list[0].size, image.size);
    assert!(image.size > 0);

    // Importing again unpacks nothing and changes nothing; a reopened store sees the image.
    let again = store.import_archive(&archive).unwrap();
    assert_eq!(again[0].new_layers, 0);
    let reopened = Store::open(&root, Platform::host()).unwrap();
    assert_eq!(
        reopened
            .resolve("example.com/synthetic/app:v1")
            .unwrap()
            .layers,
        image.layers
    );
}

#[test]
fn real_test_images() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("real");
    let store = Store::open(&tmp.path().join("store"), Platform::host()).unwrap();
    for name in ["busybox", "httpd"] {
        let imported = store
            .import_archive(&images.join(format!("{name}.oci.tar")))
            .unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(
            imported[0].reference,
            format!("cairn.local/test/{name}:latest")
        );
    }
    let busybox = store.resolve("cairn.local/test/busybox:latest").unwrap();
    assert_eq!(busybox.config.cmd, ["sh"]);
    assert_eq!(busybox.config.env, ["PATH=/bin"]);
    let bin = busybox.layers[0].join("bin/busybox");
    let meta = fs::metadata(&bin).unwrap();
    assert!(
        meta.is_file() && meta.mode() & 0o111 == 0o111,
        "bin/busybox is executable"
    );
    assert!(meta.len() > 500_000, "the real static busybox");
    assert_eq!(
        fs::read_link(busybox.layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // It runs (on this machine's own architecture).
    let out = Command::new(&bin).args(["echo", "hello"]).output().unwrap();
    assert_eq!(out.stdout, b"hello\n");

    let httpd = store.resolve("cairn.local/test/httpd:latest").unwrap();
    assert_eq!(httpd.config.exposed_ports, ["8080/tcp"]);
    assert_eq!(httpd.layers.len(), 2);
    assert_eq!(
        httpd.layers[0], busybox.layers[0],
        "the base layer is shared, unpacked once"
    );
    assert!(httpd.layers[1].join("www/index.html").is_file());
    assert_eq!(store.list().unwrap().len(), 2);
}

/// skopeo 1.9 cannot put zstd layers into a Docker archive: it first recompresses the
/// host's image with gzip into an OCI archive, then writes the Docker archive from that.
fn skopeo_docker_archive(
    oci: &Path,
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let gz = dir.join("gzip.oci.tar");
    let docker = dir.join("docker.tar");
    let run = |args: &[&str]| {
        let out = Command::new("skopeo")
            .args(args)
            .output()
            .expect("skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let host = Platform::host();
    let mut platform = vec!["--override-arch", host.architecture.as_str()];
    if let Some(v) = &host.variant {
        platform.extend(["--override-variant", v.as_str()]);
    }
    let src = format!("oci-archive:{}", oci.display());
    let mut args = platform.clone();
    args.extend(["copy", "-q", "--dest-compress-format", "gzip", &src]);
    let gz_dst = format!("oci-archive:{}:{name}", gz.display());
    args.push(&gz_dst);
    run(&args);
    let mut args = platform.clone();
    let gz_src = format!("oci-archive:{}", gz.display());
    let docker_dst = format!("docker-archive:{}:{name}", docker.display());
    args.extend(["copy", "-q", &gz_src, &docker_dst]);
    run(&args);
    (gz, docker)
}

#[test]
fn docker_archive_from_skopeo_and_whole_archive_compression() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("docker");
    let name = "cairn.local/test/busybox:latest";
    let (gz_oci, docker) = skopeo_docker_archive(&images.join("busybox.oci.tar"), tmp.path(), name);

    let reference = Store::open(&tmp.path().join("ref"), Platform::host()).unwrap();
    let oci = reference
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();

    let store = Store::open(&tmp.path().join("store"), Platform::host()).unwrap();
    let imported = store.import_archive(&docker).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, name);
    assert_eq!(
        imported[0].id, oci[0].id,
        "the same config, so the same image ID"
    );
    let image = store.resolve("cairn.local/test/busybox").unwrap();
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.layers[0].join("bin/busybox").is_file());
    assert_eq!(
        image.layers,
        vec![tmp.path().join("store/layers").join(
            reference.resolve(name).unwrap().layers[0]
                .file_name()
                .unwrap()
        )]
    );
    // The manifest the store wrote for it is a blob like any other.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            tmp.path()
                .join("store/blobs/sha256")
                .join(&image.digest[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config"]["digest"], image.id);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );

    // Whole-archive compression: a .tar.zst Docker archive and a .tar.gz OCI archive (with
    // gzip layers) through import_dir.
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    fs::write(
        inbox.join("busybox-docker.tar.zst"),
        compress(&fs::read(&docker).unwrap(), Comp::Zstd),
    )
    .unwrap();
    fs::write(
        inbox.join("busybox-oci.tar.gz"),
        compress(&fs::read(&gz_oci).unwrap(), Comp::Gzip),
    )
    .unwrap();
    let fresh = Store::open(&tmp.path().join("fresh"), Platform::host()).unwrap();
    let results = fresh.import_dir(&inbox);
    assert_eq!(results.len(), 2);
    for (path, result) in &results {
        let imported = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(imported[0].reference, name);
        assert_eq!(imported[0].id, oci[0].id);
    }
    assert!(fresh.resolve(name).unwrap().layers[0]
        .join("bin/busybox")
        .is_file());
}

#[test]
fn import_dir_skips_what_it_imported() {
    require_root();
    let tmp = TempDir::new("dir");
    let inbox = tmp.path().join("images");
    fs::create_dir(&inbox).unwrap();
    let (archive, _, _) = synthetic(tmp.path());
    fs::copy(&archive, inbox.join("a.oci.tar")).unwrap();
    fs::write(
        inbox.join("broken.tar"),
        b"not a tar at all, just text that is long enough",
    )
    .unwrap();
    fs::write(inbox.join("notes.txt"), b"ignored").unwrap();
    fs::write(inbox.join(".hidden.tar"), b"ignored").unwrap();
    let store = Store::open(&tmp.path().join("store"), Platform::host()).unwrap();

    let first = store.import_dir(&inbox);
    let files: Vec<String> = first
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["a.oci.tar", "broken.tar"]);
    assert_eq!(
        first[0].1.as_ref().unwrap()[0].reference,
        "example.com/synthetic/app:v1"
    );
    assert!(
        matches!(&first[1].1, Err(Error::BadArchive(p, _)) if p.ends_with("broken.tar")),
        "{:?}",
        first[1].1
    );

    // Next boot: the imported file is skipped, the failed one is tried again.
    let reopened = Store::open(&tmp.path().join("store"), Platform::host()).unwrap();
    let second = reopened.import_dir(&inbox);
    assert_eq!(second.len(), 1);
    assert!(second[0].0.ends_with("broken.tar"));
    // A replaced file (new mtime) is imported again.
    let f = fs::File::options()
        .write(true)
        .open(inbox.join("a.oci.tar"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let third = reopened.import_dir(&inbox);
    assert_eq!(third.len(), 2);
    assert!(third[0].1.is_ok());
}

/// Files of the store that matter for "unchanged": names and image records.
fn snapshot(
    root: &Path,
    store: &Store,
) -> (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<cairn_images::ImageSummary>,
) {
    (
        names(&root.join("layers")),
        names(&root.join("blobs/sha256")),
        names(&root.join("tmp")),
        store.list().unwrap(),
    )
}

/// The offset of the header of a plain tar's last file entry: a cut there leaves whole
/// entries only.
fn tar_entry_boundary(archive: &[u8]) -> usize {
    let mut boundary = None;
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            boundary = Some(entry.raw_header_position() as usize);
        }
    }
    let boundary = boundary.expect("a file entry");
    assert!(boundary > 0 && boundary % 512 == 0);
    boundary
}

#[test]
fn bad_input_leaves_the_store_unchanged() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("bad");
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    store
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();
    let before = snapshot(&root, &store);
    let still_fine = || {
        let image = store.resolve("cairn.local/test/busybox:latest").unwrap();
        assert!(image.layers[0].join("bin/busybox").is_file());
        assert_eq!(snapshot(&root, &store), before, "the store is as it was");
    };

    // Truncated: the httpd archive cut in half.
    let httpd = fs::read(images.join("httpd.oci.tar")).unwrap();
    let cut = tmp.path().join("cut.oci.tar");
    fs::write(&cut, &httpd[..httpd.len() / 2]).unwrap();
    match store.import_archive(&cut) {
        Err(e @ Error::BadArchive(..)) => {
            assert!(
                e.to_string().contains("cut.oci.tar") && e.to_string().contains("truncated"),
                "{e}"
            )
        }
        other => panic!("truncated: {other:?}"),
    }
    still_fine();
    // Cut between two entries (the case above, depending on the archive's layout): the
    // entries read whole, only the end-of-archive marker and what followed are missing.
    let boundary = tar_entry_boundary(&httpd);
    fs::write(&cut, &httpd[..boundary]).unwrap();
    match store.import_archive(&cut) {
        Err(e @ Error::BadArchive(..)) => assert!(e.to_string().contains("truncated"), "{e}"),
        other => panic!("cut between entries: {other:?}"),
    }
    still_fine();
    // Also compressed and truncated.
    let cut_zst = tmp.path().join("cut.tar.zst");
    let zst = compress(&httpd, Comp::Zstd);
    fs::write(&cut_zst, &zst[..zst.len() / 2]).unwrap();
    assert!(matches!(
        store.import_archive(&cut_zst),
        Err(Error::BadArchive(..))
    ));
    still_fine();

    // Tampered: a synthetic image whose gzip layer has one byte changed after the layout
    // was written (the blob keeps its name), and one whose config was edited.
    let (archive, _, written) = synthetic(tmp.path());
    let host = &written[1];
    let mut files = untar(&fs::read(&archive).unwrap());
    let layer_name = format!("blobs/sha256/{}", &host.layer_digests[1][7..]);
    let layer = files.iter_mut().find(|(n, _)| *n == layer_name).unwrap();
    // A byte of the gzip trailer's CRC: decoding fails, and the digest is what is reported.
    let crc = layer.1.len() - 6;
    layer.1[crc] ^= 0xff;
    let tampered = tmp.path().join("tampered-layer.oci.tar");
    fs::write(&tampered, tar_files(&files)).unwrap();
    match store.import_archive(&tampered) {
        Err(Error::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(expected, host.layer_digests[1]);
            assert_ne!(actual, expected);
            assert!(
                what.contains(&layer_name) && what.contains("tampered-layer.oci.tar"),
                "{what}"
            );
        }
        other => panic!("tampered layer: {other:?}"),
    }
    still_fine();
    let mut files = untar(&fs::read(&archive).unwrap());
    let config_name = format!("blobs/sha256/{}", &host.config[7..]);
    let config = files.iter_mut().find(|(n, _)| *n == config_name).unwrap();
    config.1 = String::from_utf8(config.1.clone())
        .unwrap()
        .replace("--flag", "--flaG")
        .into_bytes();
    let tampered = tmp.path().join("tampered-config.oci.tar");
    fs::write(&tampered, tar_files(&files)).unwrap();
    match store.import_archive(&tampered) {
        Err(e @ Error::DigestMismatch { .. }) => {
            assert!(e.to_string().contains(&host.config), "{e}")
        }
        other => panic!("tampered config: {other:?}"),
    }
    still_fine();

    // Another architecture only: the error names what the index has.
    let images_other = [
        PlatformImage {
            platform: other_platform(),
            layers: vec![(
                tar(&[E::File("x", 0o644, b"x")]),
                Comp::Zstd,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )],
            config: json!({}),
        },
        PlatformImage {
            platform: json!({"os": "linux", "architecture": "riscv64"}),
            layers: vec![(
                tar(&[E::File("y", 0o644, b"y")]),
                Comp::Zstd,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )],
            config: json!({}),
        },
    ];
    let (files, _, _) = oci_layout("example.com/foreign:1", &images_other);
    let foreign = tmp.path().join("foreign.oci.tar");
    fs::write(&foreign, tar_files(&files)).unwrap();
    match store.import_archive(&foreign) {
        Err(e @ Error::WrongPlatform { .. }) => {
            let Error::WrongPlatform {
                reference,
                wanted,
                available,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(reference, "example.com/foreign:1");
            assert_eq!(wanted, &Platform::host().to_string());
            let other = format!(
                "linux/{}",
                other_platform()["architecture"].as_str().unwrap()
            );
            assert_eq!(available, &[other.clone(), "linux/riscv64".to_owned()]);
            assert!(
                e.to_string().contains(&other) && e.to_string().contains("linux/riscv64"),
                "{e}"
            );
        }
        other => panic!("foreign: {other:?}"),
    }
    still_fine();

    // Not an image archive at all, a missing file, an unknown reference, a bad one.
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, tar(&[E::File("hello.txt", 0o644, b"hi")])).unwrap();
    let e = store.import_archive(&junk).unwrap_err();
    assert!(
        matches!(e, Error::BadArchive(..)) && e.to_string().contains("index.json"),
        "{e}"
    );
    let e = store
        .import_archive(&tmp.path().join("absent.tar"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("absent.tar"),
        "{e}"
    );
    match store.resolve("cairn.local/test/nothing:latest") {
        Err(e @ Error::NotFound(_)) => assert!(
            e.to_string().contains("cairn.local/test/nothing:latest"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.remove("cairn.local/test/nothing"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.resolve("Not A Reference"),
        Err(Error::BadReference(..))
    ));
    still_fine();
}

/// The files of a tar, in order.
fn untar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

#[test]
fn remove_and_prune_keep_shared_layers() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("prune");
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    store
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();
    store.import_archive(&images.join("httpd.oci.tar")).unwrap();
    let busybox = store.resolve("cairn.local/test/busybox:latest").unwrap();
    let httpd = store.resolve("cairn.local/test/httpd:latest").unwrap();
    assert_eq!(store.prune().unwrap(), 0, "nothing unreferenced yet");

    store.remove("cairn.local/test/httpd").unwrap();
    assert!(matches!(
        store.resolve("cairn.local/test/httpd:latest"),
        Err(Error::NotFound(_))
    ));
    assert!(httpd.layers[1].is_dir(), "removal alone deletes nothing");
    let freed = store.prune().unwrap();
    assert!(freed > 0);
    assert!(!httpd.layers[1].exists(), "httpd's own layer is gone");
    assert!(
        busybox.layers[0].join("bin/busybox").is_file(),
        "the shared base layer stays"
    );
    for d in [&httpd.id, &httpd.digest, &httpd.manifest_digest] {
        assert!(
            !root.join("blobs/sha256").join(&d[7..]).exists(),
            "{d} pruned"
        );
    }
    assert_eq!(
        store
            .resolve("cairn.local/test/busybox:latest")
            .unwrap()
            .layers,
        busybox.layers
    );
    assert_eq!(store.prune().unwrap(), 0);

    // Removing by image ID removes every name of it.
    store.remove(&busybox.id).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(store.prune().unwrap() > 0);
    assert!(names(&root.join("layers")).is_empty());
    assert!(names(&root.join("blobs/sha256")).is_empty());
}

#[test]
fn concurrent_imports_and_resolves() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("concurrent");
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    let (synthetic_archive, _, _) = synthetic(tmp.path());
    store.import_archive(&synthetic_archive).unwrap();
    std::thread::scope(|s| {
        // Two stores on one root (as two callers would open it) importing at once.
        let a = s.spawn(|| store.import_archive(&images.join("busybox.oci.tar")));
        let other = Store::open(&root, Platform::host()).unwrap();
        let httpd = images.join("httpd.oci.tar");
        let b = s.spawn(move || other.import_archive(&httpd));
        // Meanwhile a pod resolves what is already there.
        for _ in 0..50 {
            assert!(store
                .resolve("example.com/synthetic/app:v1")
                .unwrap()
                .layers[0]
                .is_dir());
        }
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let list = store.list().unwrap();
    assert_eq!(list.len(), 3, "no import lost the other's record: {list:?}");
    assert!(names(&root.join("tmp")).is_empty());
}
