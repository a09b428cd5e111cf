//! Boots every `qemu-*` board's real image in QEMU (TCG) and checks it as a user would:
//! init's markers on the serial console, a healthy `/readyz` through the forwarded API
//! port, the real kubectl with the kubeconfig made from host-generated secrets (seeded onto
//! the disk), a clean power-off from the power button, and a second boot that finds the data
//! partition clean and the object kubectl created still there. On armv7 the power is then
//! cut while kubectl creates objects, and the next boot must still hold every one the API
//! server acknowledged. Needs `make images` first
//! (`make test` does it) and kubectl (`make deps`).

use std::process::Command;
use std::time::{Duration, Instant};

use cairnctl::qemu::{self, Stop, Vm, VmOptions};

mod common;
use common::{built_board, damage_fat, fat_clean, free_port};

const BOOT: Duration = Duration::from_secs(420);

/// GET over HTTPS with the real curl (the node's CA is not known to the host yet).
fn https_get(port: u16, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            &format!("https://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_https(vm: &mut Vm, port: u16, path: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(body) = https_get(port, path) {
            if body.contains(want) {
                return body;
            }
        }
        assert!(
            vm.running(),
            "QEMU exited; console:\n{}",
            qemu::tail(&vm.console_text(), 40)
        );
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want:?}; console:\n{}",
            qemu::tail(&vm.console_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The real kubectl with the VM's admin kubeconfig; returns stdout, panics with the console
/// tail on failure.
fn kubectl(vm: &Vm, o: &VmOptions, args: &[&str]) -> String {
    common::kubectl(&o.kubeconfig(), args, || {
        format!("console:\n{}", qemu::tail(&vm.console_text(), 30))
    })
}

/// `GET /` on the pod's `port` through `kubectl port-forward TARGET :PORT`: the response.
fn port_forward_get(vm: &Vm, o: &VmOptions, target: &str, port: u16) -> String {
    use std::io::{BufRead, Read, Write};
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut pf = Command::new(&bin)
        .arg("--kubeconfig")
        .arg(o.kubeconfig())
        .args(["port-forward", target, &format!(":{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(pf.stdout.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("Forwarding from 127.0.0.1:"));
    let Some(line) = line else {
        let _ = pf.kill();
        panic!(
            "kubectl port-forward {target} did not start\nconsole:\n{}",
            qemu::tail(&vm.console_text(), 30)
        );
    };
    let local: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    let mut page = String::new();
    let result = std::net::TcpStream::connect(("127.0.0.1", local)).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(120)))?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        c.read_to_string(&mut page)
    });
    let _ = pf.kill();
    let _ = pf.wait();
    result.unwrap_or_else(|e| panic!("through kubectl port-forward {target}: {e}"));
    page
}

/// The board name the first boot stored in the `boot-marker` ConfigMap.
fn boot_marker(vm: &Vm, o: &VmOptions) -> String {
    let jsonpath = "jsonpath={.data.board}";
    kubectl(vm, o, &["get", "configmap", "boot-marker", "-o", jsonpath])
}

fn power_off(vm: &mut Vm) {
    vm.powerdown().unwrap();
    let stop = vm.wait(Duration::from_secs(180)).unwrap();
    let console = vm.console_text();
    assert_eq!(
        stop,
        Some(Stop::GuestShutdown),
        "no clean power-off; console:\n{}",
        qemu::tail(&console, 40)
    );
    assert!(
        console.contains("cairn-init: shutdown action=poweroff"),
        "{}",
        qemu::tail(&console, 40)
    );
}

/// What a test does to the node between and around the standard boots.
#[derive(Default)]
struct Extras {
    /// Node config written into the disk with `cairnctl config set` before the first boot,
    /// and a string cairn's console output must then contain.
    node_yaml: Option<(&'static str, &'static str)>,
    /// After the second boot: smash the data filesystem's primary superblock and the boot
    /// partition's FAT, and boot again.
    corrupt_data: bool,
    /// In the second boot: cut the power while kubectl creates objects, then boot again and
    /// find every object the API server acknowledged.
    power_cut_writes: bool,
    /// At the end: damage the data filesystem's group descriptors under a superblock that
    /// still says clean, and boot again.
    damage_group_descriptors: bool,
}

fn boot(board_name: &str, arch_in_version: &str, extras: Extras) {
    let (board, out) = built_board(board_name);
    let port = free_port();
    let o = VmOptions::headless(board, out, "test-run", port);
    qemu::prepare(&o).unwrap();
    if let Some((yaml, _)) = extras.node_yaml {
        cairnctl::config::set(&o.node_disk(), yaml, "test-node.yaml").unwrap();
        assert_eq!(cairnctl::config::get(&o.node_disk()).unwrap(), yaml);
    }

    // First boot: formats and grows the data partition, serves HTTPS.
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("cairn-init: start stage=1", 0, BOOT).unwrap();
    let at = vm.wait_for("cairn-init: switch_root", at, BOOT).unwrap();
    let at = vm.wait_for("cairn-init: start stage=2", at, BOOT).unwrap();
    let at = vm.wait_for("cairn-init: data formatted", at, BOOT).unwrap();
    let at = vm
        .wait_for("cairn-init: started cairn role=server", at, BOOT)
        .unwrap();
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    assert_eq!(wait_https(&mut vm, port, "/readyz", "ok").trim(), "ok");
    let version = wait_https(&mut vm, port, "/version", "gitVersion");
    assert!(
        version.contains(&format!("linux/{arch_in_version}")),
        "{version}"
    );
    let console = vm.console_text();
    assert!(!console.contains("FATAL"), "{}", qemu::tail(&console, 40));
    assert!(
        !console.contains("boot repaired"),
        "a fresh image's boot FAT needed repairs:\n{}",
        qemu::tail(&console, 40)
    );
    assert!(
        console.contains(
            "cairn: imported the cluster CA and the server token from /boot/cairn/secrets"
        ),
        "seeded secrets not imported:\n{}",
        qemu::tail(&console, 40)
    );
    // The kubeconfig made on the host before the boot works against the node.
    let namespaces = kubectl(&vm, &o, &["get", "namespaces", "-o", "name"]);
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");
    let manifest = o.run_dir.join("boot-marker.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: boot-marker\ndata:\n  board: {board_name}\n"),
    )
    .unwrap();
    let created = kubectl(&vm, &o, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        created.contains("configmap/boot-marker created"),
        "{created}"
    );
    run_test_pod(&vm, &o, arch_in_version);
    // The pod network's modules are not loaded at boot (stage 1's line); the kubelet had
    // cairn-init load them (a second line) when it made the bridge and nftables rules.
    let console = vm.console_text();
    let mut loaded = console
        .lines()
        .filter(|l| l.starts_with("cairn-init: modules loaded:"));
    let at_boot = loaded.next().unwrap_or_default();
    assert!(
        !at_boot.contains(" bridge") && !at_boot.contains(" nf_tables"),
        "the pod network's modules were loaded at boot: {at_boot}"
    );
    let later: Vec<&str> = loaded.flat_map(str::split_whitespace).collect();
    for module in ["bridge", "veth", "nf_tables", "nft_chain_nat", "nft_masq"] {
        assert!(
            later.contains(&module),
            "no later `cairn-init: modules loaded:` line with {module}:\n{}",
            qemu::tail(&console, 60)
        );
    }
    if let Some((_, want)) = extras.node_yaml {
        assert!(
            console.contains(want),
            "node config not applied: no `{want}` in\n{}",
            qemu::tail(&console, 40)
        );
    }
    power_off(&mut vm);
    drop(vm);

    // Second boot on the same disk: the data partition must be clean (no fsck repairs), and
    // the datastore on it still holds what kubectl wrote. Its superblock says so after the
    // clean power-off, so init does not even start e2fsck.
    let (mut vm, start) = reboot_expecting_data(&o, port, "clean");
    let console = vm.console_text();
    assert!(
        console[start..].contains("(superblock clean)"),
        "e2fsck ran after a clean power-off:\n{}",
        qemu::tail(&console, 30)
    );
    assert_eq!(boot_marker(&vm, &o), board_name);
    if extras.power_cut_writes {
        let acknowledged = cut_power_while_writing(&mut vm, &o);
        drop(vm);
        let start = std::fs::metadata(o.console_log()).unwrap().len() as usize;
        vm = Vm::launch(&o).unwrap();
        data_then_ready(
            &mut vm,
            port,
            start,
            &["clean", "repaired"],
            "after the power cut",
        );
        let names = kubectl(&vm, &o, &["get", "configmaps", "-o", "name"]);
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|n| !names.lines().any(|l| l == format!("configmap/{n}")))
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged before the power cut but gone after it: {missing:?} (of {})",
            acknowledged.len()
        );
    }
    power_off(&mut vm);
    drop(vm);

    if extras.corrupt_data {
        // A damaged data filesystem is repaired (from a backup superblock), never a boot loop.
        let (offset, _) = cairnctl::disk::find_partition(&o.node_disk(), "cairn-data").unwrap();
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(o.node_disk())
            .unwrap();
        f.write_all_at(&[0xa5; 1024], offset + 1024).unwrap();
        drop(f);
        // And the boot partition's FAT as a power cut during an update leaves it.
        let scratch = o.run_dir.join("boot-part.img");
        assert!(
            fat_clean(&o.node_disk(), "cairn-boot", &scratch),
            "clean before the damage"
        );
        damage_fat(&o.node_disk(), "cairn-boot");
        assert!(
            !fat_clean(&o.node_disk(), "cairn-boot", &scratch),
            "the damage is not seen"
        );
        let (mut vm, start) = reboot_expecting_data(&o, port, "repaired");
        let console = vm.console_text();
        assert!(
            console[start..].contains("ca reused"),
            "node state lost in the repair:\n{}",
            qemu::tail(&console, 30)
        );
        for want in [
            "cairn-init: boot repaired dev=",
            "out of range",
            "removed 1 FSCK*.REC",
        ] {
            assert!(
                console[start..].contains(want),
                "no `{want}`:\n{}",
                qemu::tail(&console, 40)
            );
        }
        assert_eq!(
            boot_marker(&vm, &o),
            board_name,
            "the datastore did not survive the repair"
        );
        power_off(&mut vm);
        drop(vm);
        assert!(
            fat_clean(&o.node_disk(), "cairn-boot", &scratch),
            "boot FAT still damaged"
        );
    }

    if extras.damage_group_descriptors {
        // Init trusts a clean superblock and skips e2fsck; the kernel's mount checks the group
        // descriptors and refuses one whose checksum is wrong (a flipped bit on the card), so
        // init runs `e2fsck -f` and mounts the repaired filesystem. (Garbage over the whole
        // descriptor is another story: e2fsck -p then reads the journal inode from a wrong
        // inode table and clears it, and the node's state is lost, with or without the skip.)
        let (offset, _) = cairnctl::disk::find_partition(&o.node_disk(), "cairn-data").unwrap();
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(o.node_disk())
            .unwrap();
        let mut sb = [0u8; 1024];
        f.read_exact_at(&mut sb, offset + 1024).unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
        assert_eq!(
            u16::from_le_bytes([sb[0x38], sb[0x39]]),
            0xef53,
            "ext4 magic"
        );
        assert_eq!(sb[0x3a] & 3, 1, "clean before the damage");
        let block_size = 1024u64 << u32_at(0x18);
        const RO_COMPAT_GDT_CSUM: u32 = 0x10;
        const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
        assert_ne!(
            u32_at(0x64) & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM),
            0,
            "group descriptors without checksums"
        );
        // Group 0's descriptor, right after the superblock's block; bg_checksum at 0x1e.
        let checksum_at = offset + (u64::from(u32_at(0x14)) + 1) * block_size + 0x1e;
        let mut checksum = [0u8; 2];
        f.read_exact_at(&mut checksum, checksum_at).unwrap();
        f.write_all_at(&[!checksum[0], !checksum[1]], checksum_at)
            .unwrap();
        drop(f);
        let start = std::fs::metadata(o.console_log()).unwrap().len() as usize;
        let mut vm = Vm::launch(&o).unwrap();
        let at = vm
            .wait_for(
                "although its superblock says clean: checking it",
                start,
                BOOT,
            )
            .unwrap();
        // e2fsck -f fixes a descriptor checksum and says so, yet may exit 0 ("checked").
        data_then_ready(
            &mut vm,
            port,
            at,
            &["checked", "repaired"],
            "after e2fsck -f",
        );
        assert_eq!(
            boot_marker(&vm, &o),
            board_name,
            "the datastore did not survive the repair"
        );
        power_off(&mut vm);
        drop(vm);
    }
}

/// Cuts the power (kills QEMU) while the real kubectl creates ConfigMaps one after another,
/// after the API server has acknowledged `CUT_AFTER` of them: the datastore's writes are in
/// flight at the cut. Returns the names kubectl reported created.
fn cut_power_while_writing(vm: &mut Vm, o: &VmOptions) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    const CUT_AFTER: usize = 25;
    let manifest = o.run_dir.join("power-cut.yaml");
    let docs: Vec<String> = (0..200)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cut-{i:03}\ndata:\n  n: \"{i}\"\n"))
        .collect();
    std::fs::write(&manifest, docs.join("---\n")).unwrap();
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(o.kubeconfig())
        .args(["create", "-f"])
        .arg(&manifest)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(name) = line
            .strip_prefix("configmap/")
            .and_then(|l| l.strip_suffix(" created"))
        {
            acknowledged.push(name.to_owned());
            if acknowledged.len() == CUT_AFTER {
                vm.kill();
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        acknowledged.len(),
        CUT_AFTER,
        "kubectl stopped before the cut; console:\n{}",
        qemu::tail(&vm.console_text(), 30)
    );
    acknowledged
}

/// Polls `kubectl get ... -o jsonpath=...` until `done` holds for its output.
fn wait_kubectl(vm: &Vm, o: &VmOptions, args: &[&str], what: &str, done: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let out = kubectl(vm, o, args);
        if done(&out) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {out}\nconsole:\n{}",
            qemu::tail(&vm.console_text(), 40)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `kubectl ARGS` until it succeeds and `done` is content with its output, which it returns
/// (`kubectl top` fails while there is nothing to show yet).
fn kubectl_until(
    vm: &Vm,
    o: &VmOptions,
    args: &[&str],
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(o.kubeconfig())
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stdout}{}\nconsole:\n{}",
            String::from_utf8_lossy(&out.stderr),
            qemu::tail(&vm.console_text(), 40)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Workloads on the node's own worker, from the preloaded test image, as a user runs them:
/// a Deployment whose logs and `kubectl exec -- uname -m` show the node's architecture,
/// scaled to 3, each pod with an address of the node's pod range from which it fetches a
/// page from an httpd pod (the host fetches it too, through `kubectl port-forward`), and
/// deleted; `kubectl top` of the node and the pods; a memory hog OOM-killed and reported;
/// and afterwards
/// no container or cgroup left of them (seen by a pod with the node's directories mounted).
fn run_test_pod(vm: &Vm, o: &VmOptions, go_arch: &str) {
    let uname = match go_arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "armv7l",
        other => other,
    };
    let manifest = o.run_dir.join("workloads.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: hello
        image: cairn.local/test/busybox:latest
        command: [sh, -c, 'echo hello from $(uname -m); exec sleep 3600']
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: cairn.local/test/busybox:latest
    command: [sh, -c, 'a=0123456789abcdef; while :; do a=$a$a; done']
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: httpd, image: cairn.local/test/httpd:latest}
"#,
    )
    .unwrap();
    kubectl(vm, o, &["apply", "-f", manifest.to_str().unwrap()]);
    let running =
        |out: &str, n: usize| out.split_whitespace().filter(|p| *p == "Running").count() == n;
    let phases = [
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ];
    wait_kubectl(vm, o, &phases, "the deployment's pod", |out| {
        running(out, 1)
    });
    wait_kubectl(vm, o, &["logs", "deploy/hello"], "its log", |out| {
        !out.is_empty()
    });
    assert_eq!(
        kubectl(vm, o, &["logs", "deploy/hello"]).trim(),
        format!("hello from {uname}")
    );
    assert_eq!(
        kubectl(vm, o, &["exec", "deploy/hello", "--", "uname", "-m"]).trim(),
        uname
    );

    kubectl(vm, o, &["scale", "deploy/hello", "--replicas=3"]);
    wait_kubectl(vm, o, &phases, "3 running replicas", |out| running(out, 3));

    // The pod network: an address of the node's range for every pod (the node's modules
    // loaded, its bridge and masquerade rule made), one pod reaching another across the bridge.
    let range = kubectl(
        vm,
        o,
        &["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"],
    );
    let prefix = range
        .trim()
        .strip_suffix("0/24")
        .unwrap_or_else(|| panic!("podCIDR {range:?}"));
    let web_phase = ["get", "pod", "web", "-o", "jsonpath={.status.phase}"];
    wait_kubectl(vm, o, &web_phase, "the httpd pod", |out| out == "Running");
    let web_ip = kubectl(
        vm,
        o,
        &["get", "pod", "web", "-o", "jsonpath={.status.podIP}"],
    );
    let ips = [
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ];
    let hello_ips = kubectl(vm, o, &ips);
    let mut all: Vec<&str> = hello_ips
        .split_whitespace()
        .chain([web_ip.as_str()])
        .collect();
    assert!(
        all.iter().all(|ip| ip.starts_with(prefix)),
        "pod IPs {all:?} not all in {range}"
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "4 pods, 4 addresses: {hello_ips} {web_ip}");
    let fetch = format!(
        "i=0; while [ $i -lt 30 ]; do wget -q -O- http://{web_ip}:8080/ && exit 0; i=$((i+1)); sleep 1; done; exit 1"
    );
    assert_eq!(
        kubectl(vm, o, &["exec", "deploy/hello", "--", "sh", "-c", &fetch]),
        "<h1>Cairn test httpd</h1>\n"
    );
    // The same page on the host, through `kubectl port-forward` (the API server, the
    // kubelet, the pod's loopback).
    assert!(
        port_forward_get(vm, o, "pod/web", 8080).contains("<h1>Cairn test httpd</h1>"),
        "the page through port-forward"
    );

    // `kubectl top`: the node and the running pods, the pods' memory from their cgroups (the
    // guest's cgroup v2 has the memory controller). A first reading takes the kubelet a
    // second, and an emulated guest may be slow to answer: retried.
    let node = kubectl(
        vm,
        o,
        &["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"],
    );
    let top_node = kubectl_until(vm, o, &["top", "node", "--no-headers"], "top node", |out| {
        out.split_whitespace().next() == Some(node.trim())
    });
    let cells: Vec<&str> = top_node.split_whitespace().collect();
    assert!(
        cells.len() == 5 && cells[3].ends_with("Mi") && cells[3] != "0Mi",
        "the node's memory: {top_node}"
    );
    kubectl_until(vm, o, &["top", "pod", "--no-headers"], "top pod", |out| {
        out.lines().any(|l| l.starts_with("web "))
    });
    let web_metrics = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web";
    let web: serde_json::Value = serde_json::from_str(&kubectl_until(
        vm,
        o,
        &["get", "--raw", web_metrics],
        "the httpd pod's metrics",
        |out| out.contains("\"memory\""),
    ))
    .unwrap();
    let memory = web["containers"][0]["usage"]["memory"].as_str();
    assert!(
        memory.is_some_and(|m| m != "0"),
        "the httpd's working set: {web}"
    );

    wait_kubectl(
        vm,
        o,
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ],
        "the memory hog's OOM kill",
        |out| !out.is_empty(),
    );
    let reason = kubectl(
        vm,
        o,
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ],
    );
    assert_eq!(reason, "OOMKilled");

    kubectl(
        vm,
        o,
        &[
            "delete",
            "deploy/hello",
            "pod/hog",
            "pod/web",
            "--wait=false",
        ],
    );
    wait_kubectl(
        vm,
        o,
        &["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"],
        "the pods to go",
        |out| out.trim().is_empty(),
    );

    // Only the inspecting pod's own container and cgroup are left on the node.
    let inspect = o.run_dir.join("inspect.yaml");
    std::fs::write(
        &inspect,
        r#"apiVersion: v1
kind: Pod
metadata: {name: inspect}
spec:
  restartPolicy: Never
  containers:
  - name: inspect
    image: cairn.local/test/busybox:latest
    # Deleted pods are cleaned up after they leave the API: allow the kubelet a minute.
    command: [sh, -c, 'for i in $(seq 60); do n="$(ls /node/containers | wc -l) $(ls -d /node/cgroup/pod* | wc -l)"; [ "$n" = "1 1" ] && break; sleep 1; done; echo $n $(grep -c -e "^    client-key-data: " -e "^    server: https://" /node/cairn.yaml) > /dev/termination-log']
    volumeMounts:
    - {name: containers, mountPath: /node/containers, readOnly: true}
    - {name: cgroup, mountPath: /node/cgroup, readOnly: true}
    - {name: kubeconfig, mountPath: /node/cairn.yaml, readOnly: true}
  volumes:
  - name: containers
    hostPath: {path: /var/lib/cairn/agent/containers}
  - name: cgroup
    hostPath: {path: /sys/fs/cgroup/kubepods}
  - name: kubeconfig
    hostPath: {path: /etc/cairn/cairn.yaml, type: File}
"#,
    )
    .unwrap();
    kubectl(vm, o, &["apply", "-f", inspect.to_str().unwrap()]);
    let message = "jsonpath={.status.containerStatuses[0].state.terminated.message}";
    wait_kubectl(
        vm,
        o,
        &["get", "pod", "inspect", "-o", message],
        "the inspecting pod",
        |out| !out.is_empty(),
    );
    assert_eq!(
        kubectl(vm, o, &["get", "pod", "inspect", "-o", message]).trim(),
        "1 1 2",
        "containers and pod cgroups on the node besides the inspecting pod's own, and the \
         admin kubeconfig's server and key lines in /etc/cairn/cairn.yaml"
    );
    kubectl(vm, o, &["delete", "pod", "inspect", "--wait=false"]);
}

/// Boots the node's disk again and checks the `cairn-init: data <state>` marker, then
/// health; returns the VM and the console offset where this boot began.
fn reboot_expecting_data(o: &VmOptions, port: u16, state: &str) -> (Vm, usize) {
    let start = std::fs::metadata(o.console_log()).unwrap().len() as usize;
    let mut vm = Vm::launch(o).unwrap();
    data_then_ready(&mut vm, port, start, &[state], "on this boot");
    (vm, start)
}

/// Waits for the boot's `cairn-init: data <state>` marker after `from`, asserts that the
/// state is one of `states`, then waits for `cairn: ready` and a healthy `/readyz`.
fn data_then_ready(vm: &mut Vm, port: u16, from: usize, states: &[&str], when: &str) {
    let at = vm.wait_for("cairn-init: data ", from, BOOT).unwrap();
    let line = vm.console_text()[at..]
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    assert!(
        states.iter().any(|state| line.starts_with(state)),
        "{when}: expected `data` to be one of {states:?}, got `data {line}`"
    );
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    wait_https(vm, port, "/readyz", "ok");
}

#[test]
fn qemu_x86_64_boots_serves_and_powers_off_and_checks_bad_descriptors() {
    let yaml =
        "# written by the boot test\nhostname: edge-x86\nrole: server\nnetwork:\n  mode: dhcp\n";
    boot(
        "qemu-x86_64",
        "amd64",
        Extras {
            node_yaml: Some((yaml, "serving names edge-x86")),
            damage_group_descriptors: true,
            ..Extras::default()
        },
    );
}

#[test]
fn qemu_aarch64_boots_serves_and_powers_off_and_repairs_data_and_boot() {
    boot(
        "qemu-aarch64",
        "arm64",
        Extras {
            corrupt_data: true,
            ..Extras::default()
        },
    );
}

#[test]
fn qemu_armv7_boots_serves_keeps_writes_through_a_power_cut_and_powers_off() {
    boot(
        "qemu-armv7",
        "arm",
        Extras {
            power_cut_writes: true,
            ..Extras::default()
        },
    );
}

#[test]
fn qemu_s390x_boots_serves_and_powers_off_with_static_network() {
    // QEMU's user network forwards the API port to 10.0.2.15, so a static node config
    // with that address must be as reachable as DHCP.
    let yaml = "hostname: edge-s390x\nnetwork:\n  mode: static\n  address: 10.0.2.15/24\n  gateway: 10.0.2.2\n  dns: [10.0.2.3]\n";
    let want = "network iface=eth0 mode=static address=10.0.2.15/24 gateway=10.0.2.2";
    boot(
        "qemu-s390x",
        "s390x",
        Extras {
            node_yaml: Some((yaml, want)),
            ..Extras::default()
        },
    );
}

/// An image built from the `hello` recipe: the server applies the manifests the recipe baked
/// into the read-only root at its first start, and the controllers act on them (the
/// Deployment's ReplicaSet makes its pods, the Service gets its endpoints object).
#[test]
fn qemu_x86_64_applies_manifests_baked_by_a_recipe() {
    let board_name = "qemu-x86_64";
    let (board, _) = built_board(board_name);
    let repo = common::repo();
    let out = repo.join("out").join(board_name).join("recipe-hello");
    let built = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args([
            "build", "--board", board_name, "--recipe", "hello", "--quiet",
        ])
        .args(["--no-disk-archive", "--out"])
        .arg(&out)
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cairnctl build --recipe hello: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let port = free_port();
    let o = VmOptions::headless(board, out, "test-run", port);
    qemu::prepare(&o).unwrap();
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("cairn: ready", 0, BOOT).unwrap();
    wait_https(&mut vm, port, "/readyz", "ok");
    vm.wait_for("cairn: manifests: ", at, BOOT).unwrap();

    // Applied objects carry the manager's field ownership; poll until the controllers have
    // acted on the Deployment (the first scan runs right after start).
    let deadline = Instant::now() + Duration::from_secs(120);
    let pods = loop {
        let pods = kubectl(
            &vm,
            &o,
            &[
                "get",
                "pods",
                "-n",
                "hello",
                "-l",
                "app=hello",
                "-o",
                "name",
            ],
        );
        if pods.lines().count() == 2 || Instant::now() > deadline {
            break pods;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(
        pods.lines().count(),
        2,
        "pods of the baked Deployment: {pods}"
    );
    let page = kubectl(
        &vm,
        &o,
        &[
            "get",
            "configmap",
            "hello-page",
            "-n",
            "hello",
            "-o",
            "jsonpath={.data.index\\.html}",
        ],
    );
    assert!(page.contains("Hello from Cairn"), "{page}");
    let managers = kubectl(
        &vm,
        &o,
        &[
            "get",
            "deployment",
            "hello",
            "-n",
            "hello",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    );
    assert!(managers.contains("cairn-manifests"), "{managers}");
    let service = kubectl(
        &vm,
        &o,
        &["get", "service", "hello", "-n", "hello", "-o", "name"],
    );
    assert_eq!(service.trim(), "service/hello");
    let console = vm.console_text();
    assert!(
        console.contains("/usr/lib/cairn/manifests/hello.yaml"),
        "the baked file is not named in the log:\n{}",
        qemu::tail(&console, 40)
    );
    power_off(&mut vm);
}

/// The image's kernel modules lost the signatures Debian appended (the kernel would hash and
/// check each one as it loads it; docs/decisions.md): none of the root's `.ko` files ends in
/// the signature marker, and they are there to check.
#[test]
fn qemu_x86_64_modules_carry_no_signatures() {
    let (_, out) = built_board("qemu-x86_64");
    let dir = std::env::temp_dir().join(format!("cairn-modules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&dir)
        .arg(out.join("rootfs.squashfs"))
        .arg("usr/lib/modules")
        .status()
        .expect("unsquashfs (`make deps` installs squashfs-tools)");
    assert!(status.success());
    let modules: Vec<_> = cairnctl::rootfs::walk(&dir)
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ko"))
        .collect();
    assert!(modules.len() >= 10, "modules in the root: {modules:?}");
    for m in &modules {
        let bytes = std::fs::read(m).unwrap();
        assert!(
            !bytes.ends_with(b"~Module signature appended~\n"),
            "{} is still signed",
            m.display()
        );
        assert!(bytes.starts_with(b"\x7fELF"), "{} is not ELF", m.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
