//! Garbage collection on real stores: a small tmpfs filled past the kubelet's threshold with
//! real imported images and freed down to the low one, the minimum age, pinned archives,
//! uses written only with other writes, and damaged states that make it refuse.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cairn_images::{Error, GcRequest, Platform, Store};
use common::*;
use serde_json::json;

const MIN_AGE: Duration = Duration::from_secs(120);

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mounting a tmpfs (the test needs root)");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An archive of a one-layer image `name` whose layer holds `bytes` of data that does not
/// compress (so it costs about that much unpacked too).
fn filler(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let mut data = Vec::with_capacity(bytes);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ name.len() as u64;
    for b in name.bytes() {
        x = x.rotate_left(7) ^ b as u64;
    }
    while data.len() < bytes {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        data.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let layer = tar(&[E::File("filler", 0o644, &data)]);
    let platform = serde_json::to_value(Platform::host()).unwrap();
    let (files, _, _) = oci_layout(
        name,
        &[PlatformImage {
            platform,
            layers: vec![(
                layer,
                Comp::Zstd,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )],
            config: json!({"Cmd": ["true"]}),
        }],
    );
    let path = dir.join(format!("{}.oci.tar", name.replace(['/', ':'], "_")));
    fs::write(&path, tar_files(&files)).unwrap();
    path
}

fn unused_request<'a>(
    containers: &'a [Vec<PathBuf>],
    none: &'a HashSet<String>,
    now: SystemTime,
) -> GcRequest<'a> {
    GcRequest {
        bytes_to_free: u64::MAX,
        min_age: MIN_AGE,
        containers,
        in_use: none,
        now,
    }
}

fn later() -> SystemTime {
    SystemTime::now() + MIN_AGE + Duration::from_secs(60)
}

#[test]
fn a_full_small_filesystem_is_freed_down_to_the_low_threshold() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("gc-tmpfs");
    let mnt = tmp.path().join("data");
    let _tmpfs = Tmpfs::mount(&mnt, "24m");
    let store = Store::open(&mnt.join("store"), Platform::host()).unwrap();
    store
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();
    store.import_archive(&images.join("httpd.oci.tar")).unwrap();
    // A pod's container runs busybox.
    let busybox = store.resolve("cairn.local/test/busybox:latest").unwrap();
    let httpd = store.resolve("cairn.local/test/httpd:latest").unwrap();
    store.mark_used(&busybox.id);
    let containers = vec![busybox.layers.clone()];

    // More images until the filesystem is past the kubelet's high threshold (85%).
    let mut fillers = Vec::new();
    while store.fs_usage().unwrap().used_percent() < 85 {
        assert!(fillers.len() < 20, "{:?}", store.fs_usage());
        let name = format!("example.com/filler/f{}:latest", fillers.len());
        let archive = filler(tmp.path(), &name, 2 << 20);
        store.import_archive(&archive).unwrap();
        fillers.push(name);
    }
    let before = store.fs_usage().unwrap();
    let needed = before.bytes_above(80);
    assert!(needed > 0, "{before:?}");
    let none = HashSet::new();

    // Everything was stored just now: younger than the minimum age, nothing may go.
    let young = store
        .collect_garbage(&GcRequest {
            bytes_to_free: needed,
            ..unused_request(&containers, &none, SystemTime::now())
        })
        .unwrap();
    assert!(young.removed.is_empty(), "{young:?}");
    assert_eq!((young.in_use, young.recent), (1, fillers.len() + 1));
    assert_eq!(store.fs_usage().unwrap(), before);

    // Later: unused images go, never-used ones by when they were stored, until enough is free.
    let out = store
        .collect_garbage(&GcRequest {
            bytes_to_free: needed,
            ..unused_request(&containers, &none, later())
        })
        .unwrap();
    let after = store.fs_usage().unwrap();
    println!(
        "{}% used, {} images -> {}% used, removed {:?} ({} bytes)",
        before.used_percent(),
        fillers.len() + 2,
        after.used_percent(),
        out.removed.iter().map(|r| &r.names).collect::<Vec<_>>(),
        out.freed
    );
    assert!(
        after.used_percent() < 80,
        "{before:?} -> {after:?}: {out:?}"
    );
    assert!(out.freed >= needed, "{out:?}");
    assert_eq!(out.in_use, 1);
    let removed: Vec<&str> = out
        .removed
        .iter()
        .flat_map(|r| r.names.iter().map(String::as_str))
        .collect();
    assert!(!removed.contains(&"cairn.local/test/busybox:latest"));
    assert!(
        removed.len() < fillers.len(),
        "only as many as needed: {removed:?}"
    );
    // The image in use and its layers stay; what went is gone from disk.
    let kept = store.resolve("cairn.local/test/busybox:latest").unwrap();
    assert_eq!(kept.layers, busybox.layers);
    assert!(kept.layers[0].join("bin/busybox").is_file());
    for r in &out.removed {
        assert!(matches!(store.resolve(&r.id), Err(Error::NotFound(_))));
        assert!(
            !mnt.join("store/blobs/sha256").join(&r.id[7..]).exists(),
            "config of {:?} deleted",
            r.names
        );
    }
    if removed.contains(&"cairn.local/test/httpd:latest") {
        assert!(!httpd.layers[1].exists(), "httpd's own layer went");
        assert!(httpd.layers[0].is_dir(), "the base busybox runs on stayed");
    }
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.references)
        .collect();
    for name in &removed {
        assert!(!listed.iter().any(|l| l == name), "{name} still listed");
    }

    // Once nothing runs busybox, it can go too (after the minimum age since its last use).
    let all = store
        .collect_garbage(&unused_request(&[], &none, later()))
        .unwrap();
    assert!(all
        .removed
        .iter()
        .any(|r| r.names == ["cairn.local/test/busybox:latest"]));
    assert!(store.list().unwrap().is_empty());
    assert!(names(&mnt.join("store/layers")).is_empty());
    assert!(names(&mnt.join("store/blobs/sha256")).is_empty());
}

#[test]
fn images_from_an_image_directory_are_pinned_while_their_archive_is_there() {
    require_root();
    let tmp = TempDir::new("gc-pinned");
    let inbox = tmp.path().join("images");
    fs::create_dir(&inbox).unwrap();
    fs::copy(
        test_images().join("httpd.oci.tar"),
        inbox.join("httpd.oci.tar"),
    )
    .unwrap();
    let store = Store::open(&tmp.path().join("store"), Platform::host()).unwrap();
    for (_, result) in store.import_dir(&inbox) {
        result.unwrap();
    }
    let none = HashSet::new();
    let out = store
        .collect_garbage(&unused_request(&[], &none, later()))
        .unwrap();
    assert!(out.removed.is_empty());
    assert_eq!(out.pinned, 1);

    // The archive removed (or replaced): no longer pinned.
    fs::remove_file(inbox.join("httpd.oci.tar")).unwrap();
    let out = store
        .collect_garbage(&unused_request(&[], &none, later()))
        .unwrap();
    assert_eq!(out.removed.len(), 1);
    assert_eq!(out.removed[0].names, ["cairn.local/test/httpd:latest"]);
    assert!(names(&tmp.path().join("store/layers")).is_empty());
}

#[test]
fn uses_are_written_with_other_writes_only() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("gc-uses");
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    store
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();
    let busybox = store.resolve("cairn.local/test/busybox:latest").unwrap();
    let state = || -> serde_json::Value {
        serde_json::from_slice(&fs::read(root.join("images.json")).unwrap()).unwrap()
    };
    let before = fs::read(root.join("images.json")).unwrap();
    let layer = &busybox.layers[0].file_name().unwrap().to_string_lossy();
    assert!(
        state()["layerSizes"][format!("sha256:{layer}")]
            .as_u64()
            .unwrap()
            > 1 << 20,
        "the unpacked size is recorded at import"
    );

    // Starting containers changes nothing on disk.
    store.mark_used(&busybox.id);
    store.mark_used(&busybox.id);
    assert_eq!(fs::read(root.join("images.json")).unwrap(), before);
    assert!(!store.flush_usage(Duration::from_secs(3600)).unwrap());
    assert_eq!(fs::read(root.join("images.json")).unwrap(), before);

    // The next write (here an import) carries them.
    store.import_archive(&images.join("httpd.oci.tar")).unwrap();
    let used = state()["lastUsed"][&busybox.id].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - used < 60, "{used} vs {now}");
    assert!(state()["lastUsed"].get("httpd").is_none());

    // A flush writes only when there is something new.
    assert!(!store.flush_usage(Duration::ZERO).unwrap());
    store.mark_used(&busybox.id);
    assert!(store.flush_usage(Duration::ZERO).unwrap());

    // A store opened again (a restart) still knows the use: busybox, used, goes after httpd,
    // never used.
    let reopened = Store::open(&root, Platform::host()).unwrap();
    let httpd = reopened.resolve("cairn.local/test/httpd:latest").unwrap();
    let none = HashSet::new();
    let out = reopened
        .collect_garbage(&GcRequest {
            bytes_to_free: 1,
            ..unused_request(&[], &none, later())
        })
        .unwrap();
    assert_eq!(out.removed.len(), 1, "{out:?}");
    assert_eq!(out.removed[0].id, httpd.id);
}

#[test]
fn a_damaged_state_makes_collection_refuse() {
    require_root();
    let images = test_images();
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("garbage", |root| {
            fs::write(root.join("images.json"), b"\0\0\0\0 not json").unwrap()
        }),
        ("missing", |root| {
            fs::remove_file(root.join("images.json")).unwrap()
        }),
        ("empty", |root| {
            fs::write(root.join("images.json"), b"{}").unwrap()
        }),
        ("config gone", |root| {
            let state: serde_json::Value =
                serde_json::from_slice(&fs::read(root.join("images.json")).unwrap()).unwrap();
            let id = state["images"]["cairn.local/test/busybox:latest"]["id"]
                .as_str()
                .unwrap();
            fs::remove_file(root.join("blobs/sha256").join(&id[7..])).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let tmp = TempDir::new("gc-damaged");
        let root = tmp.path().join("store");
        let store = Store::open(&root, Platform::host()).unwrap();
        store
            .import_archive(&images.join("busybox.oci.tar"))
            .unwrap();
        store.import_archive(&images.join("httpd.oci.tar")).unwrap();
        let layers = names(&root.join("layers"));
        assert_eq!(layers.len(), 2);
        damage(&root);

        let none = HashSet::new();
        let e = store
            .collect_garbage(&unused_request(&[], &none, later()))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Damaged { path, .. } if path.ends_with("images.json")),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("nothing is deleted"), "{what}: {e}");
        assert!(store.prune().is_err(), "{what}: prune refuses too");
        assert_eq!(names(&root.join("layers")), layers, "{what}: layers kept");
        println!("{what}: {e}");
    }
}

#[test]
fn layers_no_image_references_go_first() {
    require_root();
    let images = test_images();
    let tmp = TempDir::new("gc-unreferenced");
    let root = tmp.path().join("store");
    let store = Store::open(&root, Platform::host()).unwrap();
    store
        .import_archive(&images.join("busybox.oci.tar"))
        .unwrap();
    store.import_archive(&images.join("httpd.oci.tar")).unwrap();
    let httpd = store.resolve("cairn.local/test/httpd:latest").unwrap();
    // A layer directory the state does not know (say, an import cut short) is left alone.
    let stray = root.join("layers").join("ab".repeat(32));
    fs::create_dir(&stray).unwrap();
    store.remove("cairn.local/test/httpd:latest").unwrap();
    let none = HashSet::new();
    // One byte to free: the unreferenced httpd layer is enough, no image goes.
    let out = store
        .collect_garbage(&GcRequest {
            bytes_to_free: 1,
            ..unused_request(&[], &none, later())
        })
        .unwrap();
    assert!(out.removed.is_empty(), "{out:?}");
    assert_eq!(out.unreferenced_layers, 1);
    assert_eq!(out.unknown_layers, 1);
    assert!(out.freed > 0);
    assert!(!httpd.layers[1].exists());
    assert!(httpd.layers[0].is_dir(), "busybox's base stays");
    assert!(stray.is_dir());
    store.resolve("cairn.local/test/busybox:latest").unwrap();
}
