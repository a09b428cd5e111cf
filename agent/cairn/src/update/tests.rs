//! The updater against files standing in for the partitions: a directory for the boot
//! partition, plain files for the slots. The same code runs on devices in the QEMU tests.

use std::fs;
use std::time::Duration;

use cairn_slots::SlotState;

use super::fixture::Fixture;
use super::gate::{self, Outcome};
use super::*;
use crate::pki::tests::temp_dir;

const SLOT_SIZE: usize = 256 * 1024;

fn fixture(tag: &str) -> Fixture {
    Fixture::new(temp_dir(tag), SLOT_SIZE)
}

fn make_bundle(f: &Fixture, version: &str, rootfs_len: usize, cmdline: &str) -> PathBuf {
    let rootfs: Vec<u8> = (0..rootfs_len).map(|i| (i % 251) as u8).collect();
    f.bundle(version, &rootfs, cmdline)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The boot loader's part: boot the first entry, taking a try, and note which slot runs.
fn reboot(node: &mut Node) {
    let e = node.entries().boot_next().unwrap().unwrap();
    node.running = e.slot;
}

#[test]
fn apply_writes_the_inactive_slot_and_puts_it_on_trial() {
    let f = fixture("apply");
    let bundle = make_bundle(&f, "0.2.0", 100_000, "console=ttyS0");
    let mut lines = Vec::new();
    let m = apply(&f.node, &bundle, false, &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(m.version, "0.2.0");
    let slot = fs::read(&f.node.slot_b).unwrap();
    assert_eq!(
        slot.len(),
        SLOT_SIZE,
        "a partition is written in place, not resized"
    );
    assert!(slot[..100_000]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % 251) as u8));
    assert_eq!(
        fs::read_to_string(f.node.boot.join("b/vmlinuz")).unwrap(),
        "kernel 0.2.0"
    );
    assert_eq!(
        fs::read_to_string(f.node.boot.join("b/initrd.img")).unwrap(),
        "initrd 0.2.0"
    );
    assert_eq!(
        names(&f.node.boot.join("loader/entries")),
        ["slot-a.conf", "slot-b+1.conf"]
    );
    let entry = fs::read_to_string(f.node.boot.join("loader/entries/slot-b+1.conf")).unwrap();
    assert!(
        entry.contains("options console=ttyS0 cairn.slot=b"),
        "{entry}"
    );
    assert!(entry.contains("linux /b/vmlinuz"), "{entry}");
    let rec = f.node.last().unwrap();
    assert_eq!(
        (
            rec.result.as_str(),
            rec.to_version.as_str(),
            rec.slot.as_str()
        ),
        ("pending", "0.2.0", "b")
    );
    assert!(lines.iter().any(|l| l.contains("on trial")), "{lines:?}");
    // The running slot was not touched.
    assert!(fs::read(&f.node.slot_a).unwrap().iter().all(|b| *b == 0xaa));
}

#[test]
fn refused_bundles_touch_nothing() {
    let f = fixture("refuse");
    let good = make_bundle(&f, "0.2.0", 50_000, "console=ttyS0");
    let bytes = fs::read(&good).unwrap();
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 10] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered", tampered, "tampered"),
        (
            "truncated",
            bytes[..bytes.len() - 100].to_vec(),
            "truncated",
        ),
        ("empty", vec![], "truncated"),
    ];
    for (name, content, want) in cases {
        let p = f.dir.join(format!("{name}.cairnb"));
        fs::write(&p, content).unwrap();
        let err = apply(&f.node, &p, false, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    // Downgrade, too large for the slot, wrong board.
    let old = make_bundle(&f, "0.0.9", 1000, "");
    let err = apply(&f.node, &old, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("downgrade"), "{err}");
    let big = make_bundle(&f, "0.3.0", SLOT_SIZE + 1, "");
    let err = apply(&f.node, &big, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit slot b"), "{err}");
    fs::write(
        f.node.etc.join("release"),
        "version=0.1.0\nboard=rpi4\narch=aarch64\n",
    )
    .unwrap();
    let err = apply(&f.node, &good, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("board qemu-x86_64, this node is rpi4"),
        "{err}"
    );

    assert!(
        fs::read(&f.node.slot_b).unwrap().iter().all(|b| *b == 0),
        "slot b was written"
    );
    assert_eq!(names(&f.node.boot.join("loader/entries")), ["slot-a.conf"]);
    assert!(!f.node.boot.join("b").exists());
    assert!(f.node.last().is_none());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_healthy_trial_commits() {
    let mut f = fixture("commit");
    let bundle = make_bundle(&f, "0.2.0", 1000, "console=ttyS0");
    apply(&f.node, &bundle, false, &mut |_| {}).unwrap();
    reboot(&mut f.node);
    assert_eq!(f.node.running, Slot::B);
    let trial = gate::on_start(&f.node, "console=ttyS0 cairn.slot=b")
        .unwrap()
        .unwrap();
    assert!(!trial.break_health);
    let mut calls = 0;
    let out = block_on(trial.run(&f.node, Duration::from_secs(30), || {
        calls += 1;
        let r = if calls < 2 {
            Err("API not ready".to_string())
        } else {
            Ok(())
        };
        async move { r }
    }))
    .unwrap();
    assert_eq!(out, Outcome::Committed);
    assert_eq!(
        names(&f.node.boot.join("loader/entries")),
        ["slot-a.conf", "slot-b.conf"]
    );
    let st = f.node.status().unwrap();
    assert_eq!(st.running_state, SlotState::Committed);
    assert_eq!(st.other_version.as_deref(), Some("0.1.0"));
    assert_eq!(f.node.last().unwrap().result, "committed");
    // The next start has nothing to do, and the next boot stays on b.
    assert!(gate::on_start(&f.node, "").unwrap().is_none());
    reboot(&mut f.node);
    assert_eq!(f.node.running, Slot::B);
}

#[test]
fn a_broken_trial_rolls_back_with_its_reason() {
    let mut f = fixture("rollback");
    let bundle = make_bundle(&f, "0.3.0", 1000, "console=ttyS0 cairn.break_health=1");
    apply(&f.node, &bundle, false, &mut |_| {}).unwrap();
    reboot(&mut f.node);
    let trial = gate::on_start(&f.node, "console=ttyS0 cairn.break_health=1 cairn.slot=b")
        .unwrap()
        .unwrap();
    assert!(trial.break_health);
    let out = block_on(trial.run(&f.node, Duration::from_secs(30), || async { Ok(()) })).unwrap();
    assert!(
        matches!(&out, Outcome::Failed(r) if r.contains("BREAK_HEALTH")),
        "{out:?}"
    );
    assert_eq!(f.node.last().unwrap().result, "failed");

    reboot(&mut f.node);
    assert_eq!(
        f.node.running,
        Slot::A,
        "the failed trial must not boot again"
    );
    assert!(gate::on_start(&f.node, "cairn.slot=a").unwrap().is_none());
    let rec = f.node.last().unwrap();
    assert_eq!(rec.result, "rolled-back");
    assert_eq!(rec.to_version, "0.3.0");
    assert!(
        rec.reason.as_deref().unwrap().contains("BREAK_HEALTH"),
        "{rec:?}"
    );
    assert_eq!(names(&f.node.boot.join("loader/entries")), ["slot-a.conf"]);
}

#[test]
fn a_trial_that_never_reports_is_rolled_back_too() {
    let mut f = fixture("hang");
    let bundle = make_bundle(&f, "0.2.0", 1000, "console=ttyS0");
    apply(&f.node, &bundle, false, &mut |_| {}).unwrap();
    reboot(&mut f.node); // trial boot: hangs, power is cut
    reboot(&mut f.node);
    assert_eq!(f.node.running, Slot::A);
    assert!(gate::on_start(&f.node, "").unwrap().is_none());
    let rec = f.node.last().unwrap();
    assert_eq!(rec.result, "rolled-back");
    assert!(
        rec.reason
            .as_deref()
            .unwrap()
            .contains("crash, hang or power loss"),
        "{rec:?}"
    );
    // A slow trial that misses its deadline reports that.
    let bundle = make_bundle(&f, "0.2.1", 1000, "console=ttyS0");
    apply(&f.node, &bundle, false, &mut |_| {}).unwrap();
    reboot(&mut f.node);
    let trial = gate::on_start(&f.node, "").unwrap().unwrap();
    let out = block_on(trial.run(&f.node, Duration::from_millis(10), || async {
        Err("node not Ready".to_string())
    }))
    .unwrap();
    assert!(
        matches!(&out, Outcome::Failed(r) if r.contains("not healthy within 0s: node not Ready")),
        "{out:?}"
    );
}

#[test]
fn one_install_at_a_time_per_node() {
    let f = fixture("one-at-a-time");
    let bundle = make_bundle(&f, "0.2.0", 1000, "console=ttyS0");
    let claim = Installing::claim(&f.node).unwrap();
    let err = apply(&f.node, &bundle, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another update is being installed"), "{err}");
    drop(claim);
    apply(&f.node, &bundle, false, &mut |_| {}).unwrap();
}
