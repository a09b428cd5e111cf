//! Raspberry Pi SD cards (`rpi2`, `rpi3`, `rpi4`): the card checked against what the Pi
//! firmware requires, then booted in QEMU's `raspi2b`/`raspi3b`/`raspi4b` machine with the
//! kernel, initramfs and device tree taken from the slot partition `autoboot.txt` names (the
//! harness plays the firmware), to a healthy `cairn` that the real kubectl reaches through
//! the forwarded port, a pod of the node's architecture, the data partition grown to the
//! card, and a clean power-off from the keyboard. Needs `make images` (`make test` does it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairnctl::fat::{mtools, OutputChecked};
use cairnctl::qemu::{self, Stop, Vm, VmOptions};

mod common;
use common::{built_board, free_port};

const BOOT: Duration = Duration::from_secs(600);

/// Files of the FAT partition `label` of `card` (upper case, as FAT keeps short names
/// case-insensitively), and a reader for them.
fn fat_files(card: &Path, label: &str) -> (u64, Vec<String>) {
    let (offset, _) = cairnctl::disk::find_partition(card, label).unwrap();
    let out = mtools("mdir", card, offset, 0)
        .args(["-b", "-/", "::/"])
        .output()
        .unwrap();
    if !out.status.success() {
        // mdir fails on an empty root directory.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not found"), "mdir {label}: {err}");
        return (offset, Vec::new());
    }
    let files = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    (offset, files)
}

fn fat_read(card: &Path, offset: u64, file: &str) -> String {
    let out = mtools("mtype", card, offset, 0)
        .arg(format!("::/{file}"))
        .output_checked()
        .unwrap_or_else(|e| panic!("{file}: {e:#}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The card as the Pi firmware reads it: an MBR (the firmware reads no GPT) with Cairn's
/// signature and FAT (type 0x0c) partitions 1-3, partition 1 bootable; `autoboot.txt` on
/// partition 1 naming slot A with `tryboot_a_b`; the boot ROM's `bootcode.bin` there on
/// Pi 2/3; slot A with the firmware's second stage for the model, a `config.txt` naming a
/// kernel and initramfs that exist, a `cmdline.txt` naming the slot, the model's device
/// trees and the root; slot B with no second stage (nothing bootable until an update).
fn check_card(board_name: &str, first_stage: bool, start: &str, dtbs: &[&str]) {
    let (_, out) = built_board(board_name);
    let card = out.join("disk.img");
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(&card)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout).replace(' ', "");
    assert!(dump.contains("label:dos"), "{dump}");
    assert!(dump.contains("label-id:0x52494143"), "{dump}");
    let types: Vec<&str> = dump
        .lines()
        .filter_map(|l| l.split("type=").nth(1))
        .collect();
    assert_eq!(types, ["c,bootable", "c", "c", "83"], "{dump}");
    let size = std::fs::metadata(&card).unwrap().len();
    let starts: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.split("start=").nth(1))
        .map(|s| s.split(',').next().unwrap().parse::<u64>().unwrap() * 512)
        .collect();
    assert!(
        starts.iter().all(|s| s % (4 << 20) == 0),
        "4 MiB aligned: {starts:?}"
    );
    assert!(size < 1 << 30, "the card image is {size} bytes");

    let (seed, files) = fat_files(&card, "cairn-boot");
    let autoboot = fat_read(&card, seed, "autoboot.txt");
    assert!(
        autoboot.len() <= 512,
        "the firmware reads 512 bytes of autoboot.txt"
    );
    assert_eq!(cairnctl::raspi::boot_partition(&autoboot).unwrap(), 2);
    assert!(autoboot.contains("tryboot_a_b=1"), "{autoboot}");
    assert!(files.iter().any(|f| f == "config.txt"), "{files:?}");
    assert_eq!(
        files.iter().any(|f| f == "bootcode.bin"),
        first_stage,
        "{files:?}"
    );
    assert!(fat_read(&card, seed, "cairn/node.yaml").contains("role: server"));

    let (a, files) = fat_files(&card, "cairn-boot-a");
    let config = fat_read(&card, a, "config.txt");
    let (kernel, initrd) = cairnctl::raspi::config_files(&config).unwrap();
    for want in [
        start,
        &start.replace("start", "fixup").replace(".elf", ".dat"),
    ]
    .into_iter()
    .chain([
        kernel.as_str(),
        initrd.as_str(),
        "cmdline.txt",
        "tryboot.txt",
        "rootfs.squashfs",
    ])
    .chain(dtbs.iter().copied())
    {
        assert!(
            files.iter().any(|f| f == want),
            "slot A has no {want}: {files:?}"
        );
    }
    assert!(config.contains("upstream_kernel=1"), "{config}");
    assert_eq!(fat_read(&card, a, "tryboot.txt"), config);
    let cmdline = fat_read(&card, a, "cmdline.txt");
    assert_eq!(
        cmdline.lines().count(),
        1,
        "cmdline.txt is one line: {cmdline:?}"
    );
    assert!(cmdline.contains("cairn.slot=a"), "{cmdline}");
    let (_, files) = fat_files(&card, "cairn-boot-b");
    assert!(
        !files.iter().any(|f| f.starts_with("start")),
        "slot B must not be bootable before an update: {files:?}"
    );
}

#[test]
fn rpi3_card_is_what_the_pi_firmware_reads() {
    check_card(
        "rpi3",
        true,
        "start.elf",
        &["bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb"],
    );
}

#[test]
fn rpi4_card_is_what_the_pi_firmware_reads() {
    check_card(
        "rpi4",
        false,
        "start4.elf",
        &["bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb"],
    );
}

#[test]
fn rpi2_card_is_what_the_pi_firmware_reads() {
    check_card("rpi2", true, "start.elf", &["bcm2836-rpi-2-b.dtb"]);
}

fn kubectl(vm: &Vm, o: &VmOptions, args: &[&str]) -> String {
    common::vm_kubectl(vm, o, args)
}

fn kubectl_until(vm: &Vm, o: &VmOptions, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    common::vm_kubectl_until(vm, o, args, Duration::from_secs(300), done)
}

/// Boots `board_name`'s card in QEMU: first-boot markers, the API, a pod printing the
/// architecture, the node's OS image, then Ctrl-Alt-Del (the power button) and a clean
/// power-off; then a second boot on the same card.
fn boot(board_name: &str, uname: &str) {
    let (board, out) = built_board(board_name);
    let port = free_port();
    let o = VmOptions::headless(board, out, "test-run", port);
    qemu::prepare(&o).unwrap();
    let card_bytes = std::fs::metadata(o.node_disk()).unwrap().len();
    assert!(
        card_bytes.is_power_of_two(),
        "QEMU's SD cards: {card_bytes}"
    );

    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("cairn-init: start stage=1", 0, BOOT).unwrap();
    let at = vm
        .wait_for(
            "cairn-init: root slot=a dev=/dev/mmcblk0p2:rootfs.squashfs",
            at,
            BOOT,
        )
        .unwrap();
    let at = vm.wait_for("cairn-init: start stage=2", at, BOOT).unwrap();
    let at = vm
        .wait_for("cairn-init: data grown dev=/dev/mmcblk0p4", at, BOOT)
        .unwrap();
    let at = vm
        .wait_for("cairn-init: data formatted dev=/dev/mmcblk0p4", at, BOOT)
        .unwrap();
    // The Pi has no real-time clock: it starts in 1970, and init moves it forward (to the
    // image's build time or when cairnctl wrote the seed, whichever is later) and says so.
    let at = vm
        .wait_for("cairn-init: clock set forward from=", at, BOOT)
        .unwrap();
    let console = vm.console_text();
    let line = console[at..].lines().next().unwrap_or("").trim_end();
    assert!(
        line.ends_with("; no real-time clock?)")
            && (line.contains("(image build time;") || line.contains("(seed written;")),
        "{line}"
    );
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    let console = vm.console_text();
    assert!(!console.contains("FATAL"), "{}", qemu::tail(&console, 40));
    assert!(
        console.contains(
            "cairn: imported the cluster CA and the server token from /boot/cairn/secrets"
        ),
        "the seed on the card's first partition was not read:\n{}",
        qemu::tail(&console, 40)
    );

    let nodes = kubectl_until(
        &vm,
        &o,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |s| s == "True",
    );
    assert_eq!(nodes, "True");
    // The memory, cpu and pids controllers pod limits need, with no cgroup arguments in
    // cmdline.txt (Debian's kernel enables them; the Raspberry Pi OS kernel would need
    // `cgroup_enable=memory`).
    vm.wait_for(
        "cairn: kubelet: cgroup v2 controllers cpu memory pids",
        at,
        BOOT,
    )
    .unwrap();
    let os = kubectl(
        &vm,
        &o,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.nodeInfo.osImage}",
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
            "--command",
            "--",
            "sh",
            "-c",
            "echo hello from $(uname -m)",
        ],
    );
    kubectl_until(
        &vm,
        &o,
        &["get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
        |s| s == "Succeeded",
    );
    let log = kubectl(&vm, &o, &["logs", "hello"]);
    assert_eq!(log.trim(), format!("hello from {uname}"));

    power_off(&mut vm);
    drop(vm);

    // Second boot: the data partition is clean, the clock starts where the first boot
    // stopped, and the cluster is the one the first boot made.
    let start = std::fs::metadata(o.console_log()).unwrap().len() as usize;
    let mut vm = Vm::launch(&o).unwrap();
    let at = vm.wait_for("cairn-init: data clean", start, BOOT).unwrap();
    let at = vm
        .wait_for("(last shutdown; no real-time clock?)", at, BOOT)
        .unwrap();
    vm.wait_for("cairn: ready", at, BOOT).unwrap();
    let phase = ["get", "pod", "hello", "-o", "jsonpath={.status.phase}"];
    assert_eq!(kubectl(&vm, &o, &phase), "Succeeded");
    power_off(&mut vm);
}

/// Ctrl-Alt-Del (QEMU's power button on these machines) and a clean power-off.
fn power_off(vm: &mut Vm) {
    vm.powerdown().unwrap();
    let stop = vm.wait(Duration::from_secs(240)).unwrap();
    let console = vm.console_text();
    assert_eq!(
        stop,
        Some(Stop::GuestShutdown),
        "{}",
        qemu::tail(&console, 40)
    );
    assert!(
        console.contains("cairn-init: shutdown action=poweroff"),
        "{}",
        qemu::tail(&console, 40)
    );
}

#[test]
fn rpi3_boots_in_raspi3b_serves_and_powers_off() {
    boot("rpi3", "aarch64");
}

#[test]
fn rpi4_boots_in_raspi4b_serves_and_powers_off() {
    boot("rpi4", "aarch64");
}

#[test]
fn rpi2_boots_in_raspi2b_serves_and_powers_off() {
    boot("rpi2", "armv7l");
}

#[test]
fn rpi3_armv7_card_is_what_the_pi_firmware_reads() {
    check_card(
        "rpi3-armv7",
        true,
        "start.elf",
        &["bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb"],
    );
    let (_, out) = built_board("rpi3-armv7");
    let card = out.join("disk.img");
    let (a, _) = fat_files(&card, "cairn-boot-a");
    let config = fat_read(&card, a, "config.txt");
    assert!(!config.contains("arm_64bit"), "a 32-bit kernel: {config}");
}

/// QEMU's raspi3b runs no 32-bit kernel: the Pi 3 device tree on raspi2b, whose SoC has the
/// same peripherals at the same addresses.
#[test]
fn rpi3_armv7_boots_in_raspi2b_with_the_pi_3_device_tree() {
    boot("rpi3-armv7", "armv7l");
}
