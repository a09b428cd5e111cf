//! Two builds of the same inputs give byte-identical artefacts. Builds the real
//! `qemu-s390x` image twice from the device binaries `make build` left (make test builds
//! them first) into two fresh output directories.

use std::path::PathBuf;

use cairnctl::{board, build, recipe};

#[test]
fn two_builds_are_byte_identical() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let b = board::load(&repo.join("board-configs"), "qemu-s390x").unwrap();
    let bin_dir = repo
        .join("target/device")
        .join(b.arch.rust_target())
        .join("release");
    assert!(
        bin_dir.join("cairn").is_file(),
        "run `make build-s390x` first (make test does)"
    );
    let digests = |n: u32| {
        let out = repo.join(format!("out/repro-{n}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let m = build::build(&build::Options {
            repo: repo.clone(),
            board: b.clone(),
            recipe: recipe::load(&repo.join("images/recipes"), "default").unwrap(),
            out: out.clone(),
            bin_dir: bin_dir.clone(),
            version: "0.0.0-repro".into(),
            epoch: 1_700_000_000,
            quiet: true,
            update_keys: repo.join("out/keys"),
            disk_archive: true,
        })
        .unwrap();
        let v: Vec<(String, String)> = m
            .artefacts
            .into_iter()
            .map(|a| (a.name, a.sha256))
            .collect();
        std::fs::remove_dir_all(&out).unwrap();
        v
    };
    let first = digests(1);
    let second = digests(2);
    assert_eq!(first.len(), 6);
    assert_eq!(first, second);
}
