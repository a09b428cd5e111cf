//! Network boot of the `pxe-x86_64` board in QEMU, as a gateway meets it: the NIC's iPXE
//! (QEMU's ROM) gets its script from QEMU's DHCP, then the kernel, the initramfs carrying the
//! root, and the device's own node config chosen by its MAC address, over HTTP from the real
//! `cairnctl pxe serve` on the host, or over QEMU's built-in TFTP. The node runs from RAM with
//! no disk at all, serves the API to the real kubectl under the name its config gives, runs a
//! pod, and powers off cleanly. An unknown device gets the default config, or is refused
//! once the default is removed. Needs `make image BOARD=pxe-x86_64` (make test does it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairnctl::qemu::{self, Stop, Vm, VmOptions};

mod common;
use common::{cairnctl, free_port};

const BOOT: Duration = Duration::from_secs(300);
const BOARD: &str = "pxe-x86_64";
const BOARD_ARM64: &str = "pxe-aarch64";

/// A copy of `board`'s network-boot directory (hard links) for one test to change.
fn serve_dir_of(board_name: &str, run: &str) -> (cairnctl::board::Board, PathBuf) {
    let repo = common::repo();
    let board = cairnctl::board::load(&repo.join("board-configs"), board_name).unwrap();
    let built = repo.join("out").join(board_name);
    assert!(
        built.join(cairnctl::pxe::SCRIPT).is_file(),
        "{}/boot.ipxe is missing: run `make image BOARD={board_name}` (make test does)",
        built.display()
    );
    let dir = built.join(run).join("srv");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    let files = cairnctl::pxe::SERVED.iter().chain(&["nodes/default.cpio"]);
    for f in files.filter(|f| built.join(f).is_file()) {
        std::fs::hard_link(built.join(f), dir.join(f)).unwrap();
    }
    (board, dir)
}

fn serve_dir(run: &str) -> (cairnctl::board::Board, PathBuf) {
    serve_dir_of(BOARD, run)
}

struct Server(Child, PathBuf);

impl Server {
    /// `cairnctl pxe serve DIR` on a loopback port (the guest reaches it as 10.0.2.2).
    fn start(dir: &Path, port: u16) -> Server {
        let log = dir.with_file_name("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .args(["pxe", "serve", "--listen", "127.0.0.1", "--tftp-port", "0"])
            .args(["--http-port", &port.to_string()])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pxe serve never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        Server(child, log)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(vm: &Vm, o: &VmOptions, args: &[&str]) -> String {
    common::vm_kubectl(vm, o, args)
}

fn kubectl_until(vm: &Vm, o: &VmOptions, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    common::vm_kubectl_until(vm, o, args, Duration::from_secs(180), done)
}

#[test]
fn pxe_x86_64_boots_diskless_over_http_with_the_config_of_its_mac() {
    let (board, dir) = serve_dir("test-http");
    let mac = "52:54:00:c0:ff:ee";
    let port = free_port();
    let mut o = VmOptions::headless(board, dir.clone(), "run", port);
    o.mac = Some(mac.into());
    let secrets = o.secrets.clone().unwrap();
    cairnctl::secrets::ensure(&secrets).unwrap();
    let yaml = dir.with_file_name("gw-7.yaml");
    std::fs::write(
        &yaml,
        "hostname: gw-7\nrole: server\nnetwork:\n  mode: dhcp\n",
    )
    .unwrap();
    let added = cairnctl(&[
        "pxe",
        "add",
        dir.to_str().unwrap(),
        "--mac",
        mac,
        yaml.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(
        added.trim_end().ends_with("nodes/52-54-00-c0-ff-ee.cpio"),
        "{added}"
    );
    let listed = cairnctl(&["pxe", "list", dir.to_str().unwrap()]);
    assert_eq!(listed, "52:54:00:c0:ff:ee\ndefault\n");

    let http = free_port();
    let server = Server::start(&dir, http);
    o.boot_url = Some(format!("http://10.0.2.2:{http}/boot.ipxe"));
    qemu::prepare(&o).unwrap();
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("Cairn: booting", 0, BOOT).unwrap();
    let at = vm
        .wait_for("cairn-init: root ram dev=/dev/loop", at, BOOT)
        .unwrap();
    let at = vm
        .wait_for("cairn-init: seed from the network boot", at, BOOT)
        .unwrap();
    let at = vm.wait_for("node state is kept in RAM", at, BOOT).unwrap();
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    let log = server.log();
    for want in [
        "GET /boot.ipxe: 200",
        "GET /vmlinuz: 200",
        "GET /initrd.img: 200",
        "GET /nodes/52-54-00-c0-ff-ee.cpio: 200",
    ] {
        assert!(log.contains(want), "pxe serve log lacks {want:?}:\n{log}");
    }
    assert!(!log.contains("default.cpio"), "{log}");

    // The node is named by its own config and runs pods from RAM.
    kubectl_until(&vm, &o, &["get", "nodes", "-o", "name"], |s| {
        s.contains("node/gw-7")
    });
    let os = kubectl(
        &vm,
        &o,
        &[
            "get",
            "node",
            "gw-7",
            "-o",
            "jsonpath={.status.nodeInfo.osImage}",
        ],
    );
    assert!(os.starts_with("Cairn "), "{os}");
    kubectl(
        &vm,
        &o,
        &[
            "run",
            "hello",
            "--image=cairn.local/test/busybox:latest",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "echo diskless $(uname -m)",
        ],
    );
    kubectl_until(
        &vm,
        &o,
        &["get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
        |s| s == "Succeeded",
    );
    let logs = kubectl(&vm, &o, &["logs", "hello"]);
    assert_eq!(logs.trim(), "diskless x86_64");

    vm.powerdown().unwrap();
    let stop = vm.wait(Duration::from_secs(120)).unwrap();
    assert_eq!(
        stop,
        Some(Stop::GuestShutdown),
        "no clean power-off; console:\n{}",
        qemu::tail(&vm.console_text(), 30)
    );
    assert!(vm
        .console_text()
        .contains("cairn-init: shutdown action=poweroff"));
}

/// ARM64: UEFI's PXE loads the network GRUB over QEMU's TFTP, GRUB the kernel, the root and
/// this device's config; the node comes up under its configured name and powers off.
#[test]
fn pxe_aarch64_boots_diskless_through_uefi_pxe_and_grub_with_the_config_of_its_mac() {
    let (board, dir) = serve_dir_of(BOARD_ARM64, "test-grub");
    let mac = "52:54:00:a6:40:01";
    let mut o = VmOptions::headless(board, dir.clone(), "run", free_port());
    o.mac = Some(mac.into());
    let secrets = o.secrets.clone().unwrap();
    cairnctl::secrets::ensure(&secrets).unwrap();
    let yaml = dir.with_file_name("gw-arm.yaml");
    std::fs::write(&yaml, "hostname: gw-arm\nrole: server\n").unwrap();
    cairnctl(&[
        "pxe",
        "add",
        dir.to_str().unwrap(),
        "--mac",
        mac,
        yaml.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    qemu::prepare(&o).unwrap();
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("Cairn: booting", 0, BOOT).unwrap();
    let console = vm.console_text();
    assert!(
        !console[..at].contains("trying the default"),
        "GRUB did not find the device's own config:\n{}",
        qemu::tail(&console, 20)
    );
    let at = vm
        .wait_for("cairn-init: root ram dev=/dev/loop", at, BOOT)
        .unwrap();
    let at = vm
        .wait_for("cairn-init: seed from the network boot", at, BOOT)
        .unwrap();
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    kubectl_until(&vm, &o, &["get", "nodes", "-o", "name"], |s| {
        s.contains("node/gw-arm")
    });
    let arch = kubectl(
        &vm,
        &o,
        &[
            "get",
            "node",
            "gw-arm",
            "-o",
            "jsonpath={.status.nodeInfo.architecture}",
        ],
    );
    assert_eq!(arch, "arm64");
    vm.powerdown().unwrap();
    let stop = vm.wait(Duration::from_secs(120)).unwrap();
    assert_eq!(
        stop,
        Some(Stop::GuestShutdown),
        "no clean power-off; console:\n{}",
        qemu::tail(&vm.console_text(), 30)
    );
}

#[test]
fn pxe_x86_64_unknown_device_gets_the_default_with_its_local_disk_or_is_refused_over_tftp() {
    let (board, dir) = serve_dir("test-tftp");
    let mut o = VmOptions::headless(board, dir.clone(), "run", free_port());
    o.mac = Some("52:54:00:0b:ad:01".into());
    o.secrets = None;

    // With a default: the device boots it, over QEMU's TFTP server. It has a local disk
    // with a blank partition named cairn-data, which init formats and keeps the node's
    // state on.
    let disk = dir.with_file_name("local-disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", disk.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let table = b"label: gpt\nname=cairn-data\n";
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table).unwrap();
    assert!(sfdisk.wait().unwrap().success());
    o.data_disk = Some(disk);
    qemu::prepare(&o).unwrap();
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm
        .wait_for(
            "Cairn: no config for this device (nodes/52-54-00-0b-ad-01.cpio)",
            0,
            BOOT,
        )
        .unwrap();
    let at = vm.wait_for("Cairn: booting", at, BOOT).unwrap();
    let at = vm
        .wait_for("cairn-init: seed from the network boot", at, BOOT)
        .unwrap();
    vm.wait_for("cairn-init: data formatted dev=/dev/vda1", at, BOOT)
        .unwrap();
    assert!(!vm.console_text().contains("node state is kept in RAM"));
    vm.kill();
    drop(vm);
    o.data_disk = None;

    // Without: refused, and the console says why and what to do.
    let removed = cairnctl(&["pxe", "remove", dir.to_str().unwrap(), "--default"]);
    assert!(removed.contains("now refused"), "{removed}");
    qemu::prepare(&o).unwrap();
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm
        .wait_for(
            "Cairn: REFUSED: device 52:54:00:0b:ad:01 has no node config",
            0,
            BOOT,
        )
        .unwrap();
    vm.wait_for("cairnctl pxe add DIR --mac 52:54:00:0b:ad:01", at, BOOT)
        .unwrap();
    assert!(!vm.console_text().contains("cairn-init"));
    vm.kill();
}

/// `cairnctl pxe serve` over both protocols with the real curl: files arrive whole, a
/// missing device config is a 404 the log explains, nothing outside the directory is served.
#[test]
fn pxe_serve_answers_http_and_tftp_inside_its_directory_only() {
    let dir = std::env::temp_dir().join(format!("cairn-pxe-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let srv = dir.join("srv");
    std::fs::create_dir_all(srv.join("nodes")).unwrap();
    std::fs::write(srv.join("boot.ipxe"), "#!ipxe\necho test\n").unwrap();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(srv.join("initrd.img"), &blob).unwrap();
    std::fs::write(dir.join("secret"), "outside").unwrap();
    let (http, tftp) = (free_port(), {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    });
    let log = dir.join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["pxe", "serve", "--listen", "127.0.0.1"])
        .args([
            "--http-port",
            &http.to_string(),
            "--tftp-port",
            &tftp.to_string(),
        ])
        .arg(&srv)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "pxe serve never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let curl = |url: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--path-as-is",
                "--max-time",
                "30",
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .unwrap();
        out.stdout
    };
    let split = |mut out: Vec<u8>| {
        let at = out.iter().rposition(|&b| b == b'\n').unwrap();
        let code = String::from_utf8_lossy(&out[at + 1..]).into_owned();
        out.truncate(at);
        (out, code)
    };
    let (body, code) = split(curl(&format!("http://127.0.0.1:{http}/initrd.img")));
    assert_eq!((code.as_str(), body.len()), ("200", blob.len()));
    assert!(body == blob, "HTTP body differs");
    let (body, _) = split(curl(&format!("tftp://127.0.0.1:{tftp}/initrd.img")));
    assert!(body == blob, "TFTP body differs ({} bytes)", body.len());
    let (body, _) = split(curl(&format!("tftp://127.0.0.1:{tftp}/boot.ipxe")));
    assert_eq!(body, b"#!ipxe\necho test\n");
    let (_, code) = split(curl(&format!(
        "http://127.0.0.1:{http}/nodes/52-54-00-00-00-09.cpio"
    )));
    assert_eq!(code, "404");
    for url in [
        format!("http://127.0.0.1:{http}/../secret"),
        format!("tftp://127.0.0.1:{tftp}/../secret"),
    ] {
        let (body, _) = split(curl(&url));
        assert!(
            !String::from_utf8_lossy(&body).contains("outside"),
            "{url} escaped"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "GET /nodes/52-54-00-00-00-09.cpio: 404 (no config for device 52:54:00:00:00:09"
        ),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
