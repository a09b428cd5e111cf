//! The node's images and disk, as kubectl sees them: a `cairn server` with its own worker on
//! this machine (as root) lists the imported test images in the Node's `status.images` with
//! their sizes and reports `DiskPressure`; with the image GC thresholds at 1% / 0% (so it runs
//! whatever the host's disk holds) it leaves images pinned by their archives and the image a
//! pod's container runs, removes the unused one once its archive is gone, and says so in
//! Events on the Node.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{kubectl_path, mount_cgroup2, temp_data_dir, test_images, Kubectl, Server};

const BUSYBOX: &str = "cairn.local/test/busybox:latest";
const HTTPD: &str = "cairn.local/test/httpd:latest";

/// `kubectl get node NODE -o jsonpath='{.status.images}'`.
fn node_images(k: &Kubectl, node: &str) -> Vec<Value> {
    let out = k.run(&["get", "node", node, "-o", "jsonpath={.status.images}"]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn names_of(images: &[Value]) -> Vec<String> {
    images
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// Polls `done` for up to `secs` seconds (the kubelet looks at its disk every 30 s).
fn wait_until<T>(secs: u64, what: &str, mut done: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match done() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The Node's Events with `reason`, their messages.
fn node_events(k: &Kubectl, reason: &str) -> Vec<String> {
    let events: Value =
        serde_json::from_str(&k.run(&["get", "events", "-n", "default", "-o", "json"])).unwrap();
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == "Node" && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the host's filesystem under `dir` is under Kubernetes' default hard thresholds.
fn host_under_pressure(dir: &Path) -> bool {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    let free = st.blocks_available() as f64 / st.blocks() as f64;
    let inodes = st.files() as f64;
    free < 0.10 || (inodes > 0.0 && (st.files_free() as f64) < inodes * 0.05)
}

#[test]
fn node_lists_its_images_and_collects_unused_ones() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kubelet test runs containers: it needs root"
    );
    let dir = temp_data_dir("nodeimages");
    let archives = dir.join("agent/images");
    fs::create_dir_all(&archives).unwrap();
    for name in ["busybox.oci.tar", "httpd.oci.tar"] {
        fs::copy(test_images().join(name), archives.join(name)).unwrap();
    }
    let cgroups = mount_cgroup2(&dir);
    let server = Server::start_with(
        &dir,
        &[
            "--cgroup-root",
            cgroups.to_str().unwrap(),
            "--image-gc-high-threshold=1",
            "--image-gc-low-threshold=0",
            "--minimum-image-ttl-duration=0s",
        ],
    );
    server.wait_line("running pods of node", Duration::from_secs(60));
    let k = Kubectl {
        bin: kubectl_path(),
        config: dir.join("admin.kubeconfig"),
        extra: vec![],
    };

    let node = wait_until(60, "the node registered", || {
        let name = k.run(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
        (!name.is_empty()).then_some(name).ok_or_else(String::new)
    });

    // status.images: both images, digest and tag names, sizes, largest first.
    let images = wait_until(60, "both images in status.images", || {
        let images = node_images(&k, &node);
        let names = names_of(&images);
        if names.iter().any(|n| n == BUSYBOX) && names.iter().any(|n| n == HTTPD) {
            Ok(images)
        } else {
            Err(format!("{images:?}"))
        }
    });
    assert_eq!(images.len(), 2, "{images:?}");
    let sizes: Vec<u64> = images
        .iter()
        .map(|i| i["sizeBytes"].as_u64().unwrap())
        .collect();
    assert!(sizes.iter().all(|&s| s > 100_000), "{sizes:?}");
    assert!(sizes[0] >= sizes[1], "largest first: {sizes:?}");
    let names = names_of(&images);
    for repo in ["cairn.local/test/busybox", "cairn.local/test/httpd"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("{repo}@sha256:"))),
            "{repo}@sha256:... in {names:?}"
        );
    }

    // DiskPressure as the host's disk is (False on any machine with room to work).
    let object: Value =
        serde_json::from_str(&k.run(&["get", "node", &node, "-o", "json"])).unwrap();
    let conditions = object["status"]["conditions"].as_array().unwrap();
    let pressure = conditions
        .iter()
        .find(|c| c["type"] == "DiskPressure")
        .unwrap_or_else(|| panic!("no DiskPressure in {conditions:?}"));
    let expect = if host_under_pressure(&dir) {
        ("True", "KubeletHasDiskPressure")
    } else {
        ("False", "KubeletHasNoDiskPressure")
    };
    assert_eq!(
        (
            pressure["status"].as_str().unwrap(),
            pressure["reason"].as_str().unwrap()
        ),
        expect
    );

    // GC runs (the host is surely more than 1% full) but both images are pinned by their
    // archives: nothing goes, and the Node says it could not free enough.
    let failed = wait_until(60, "a FreeDiskSpaceFailed event", || {
        let events = node_events(&k, "FreeDiskSpaceFailed");
        events.first().cloned().ok_or_else(|| "none yet".to_owned())
    });
    assert!(
        failed.contains("1 pinned") || failed.contains("2 pinned"),
        "{failed}"
    );
    assert_eq!(names_of(&node_images(&k, &node)).len(), names.len());

    // A pod runs busybox; then the archives go: httpd is unused and goes, busybox stays.
    let pod = dir.join("pod.yaml");
    fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: keeper}}\nspec:\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n"
        ),
    )
    .unwrap();
    k.run(&["apply", "-f", pod.to_str().unwrap()]);
    wait_until(60, "the pod running", || {
        let phase = k.run(&["get", "pod", "keeper", "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(()).ok_or(phase)
    });
    for name in ["busybox.oci.tar", "httpd.oci.tar"] {
        fs::remove_file(archives.join(name)).unwrap();
    }
    let images = wait_until(120, "httpd gone from status.images", || {
        let images = node_images(&k, &node);
        let names = names_of(&images);
        if names.iter().any(|n| n == HTTPD) {
            Err(format!("{names:?}"))
        } else {
            Ok(images)
        }
    });
    assert!(names_of(&images).iter().any(|n| n == BUSYBOX), "{images:?}");
    let freed = node_events(&k, "FreedDiskSpace");
    println!("FreeDiskSpaceFailed: {failed}\nFreedDiskSpace: {freed:?}\nimages: {images:?}");
    assert!(
        freed
            .iter()
            .any(|m| m.contains(HTTPD) && !m.contains(BUSYBOX)),
        "{freed:?}"
    );
    server.wait_line(
        "image GC: removed 1 unused image(s)",
        Duration::from_secs(10),
    );
    // The pod's container still runs from its image.
    let phase = k.run(&["get", "pod", "keeper", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Running");
    let ls = k.run(&["exec", "keeper", "--", "ls", "/bin/busybox", "/bin/sleep"]);
    assert!(ls.contains("/bin/sleep"), "{ls}");

    k.run(&["delete", "pod", "--all", "--timeout=60s"]);
    drop(server);
    let _ = nix::mount::umount2(&cgroups, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(&dir);
}
