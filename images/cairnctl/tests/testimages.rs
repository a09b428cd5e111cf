//! The test container images as real tools see them: `cairnctl test-images` builds them from
//! Debian's busybox-static, skopeo (an independent OCI implementation) copies every platform
//! of each archive, checking every digest, and the host's own platform's busybox runs.

use std::path::Path;
use std::process::Command;

mod common;
use common::repo;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (`make deps` installs skopeo)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn test_images_are_valid_oci_archives_that_run() {
    let dir = repo().join("out/test-images-test");
    let _ = std::fs::remove_dir_all(&dir);
    let built = run(Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["test-images", "--arch", "x86_64", "--arch", "aarch64", "-o"])
        .arg(&dir)
        .current_dir(repo()));
    assert_eq!(built.lines().count(), 2, "{built}");
    for name in ["busybox", "httpd"] {
        let archive = dir.join(format!("{name}.oci.tar"));
        let src = format!("oci-archive:{}", archive.display());
        // Every platform, every blob verified against its digest.
        let copy = dir.join(format!("{name}-copy"));
        run(Command::new("skopeo")
            .args(["copy", "--all", "--quiet", &src])
            .arg(format!("oci:{}:latest", copy.display())));
        for arch in ["amd64", "arm64"] {
            let inspect = run(Command::new("skopeo").args([
                "--override-arch",
                arch,
                "--override-os",
                "linux",
                "inspect",
                &src,
            ]));
            let info: serde_json::Value = serde_json::from_str(&inspect).unwrap();
            assert_eq!(info["Architecture"], arch, "{inspect}");
        }
    }
    // The host's busybox from the image itself runs.
    if std::env::consts::ARCH == "x86_64" {
        let flat = dir.join("busybox-amd64");
        run(Command::new("skopeo")
            .args(["--override-arch", "amd64", "copy", "--quiet"])
            .arg(format!(
                "oci-archive:{}",
                dir.join("busybox.oci.tar").display()
            ))
            .arg(format!("dir:{}", flat.display())));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(flat.join("manifest.json")).unwrap()).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let blob = flat.join(layer.trim_start_matches("sha256:"));
        let root = dir.join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        unpack(&blob, &root);
        let out = run(Command::new(root.join("bin/busybox")).args(["echo", "from the image"]));
        assert_eq!(out.trim(), "from the image");
        assert!(std::fs::symlink_metadata(root.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Unpacks a zstd-compressed layer with the system's tar and zstd.
fn unpack(blob: &Path, root: &Path) {
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(blob)
        .arg("-C")
        .arg(root));
}
