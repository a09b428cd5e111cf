//! A/B updates on real QEMU nodes, as a user runs them: boot the image (v1), `cairnctl
//! upgrade` to a v2 bundle (the node reboots into a trial, passes its health gate and
//! commits), then to a v3 bundle made to fail its health gate (the node reboots back into v2
//! and reports why), with QEMU relaunched on every guest reboot as `make qemu` does. Then
//! QEMU is killed at random moments while a bundle is written, during trial boots and around
//! the commit, and every boot after a kill must come up on a whole, committed-or-trial slot
//! and end healthy. Needs `make images` first (`make test` does it).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairnctl::qemu::{self, VmOptions};
use cairnctl::upgrade::{self, Options, Outcome};

mod common;
use common::{built_board, damage_fat, fat_clean, free_port, make_bundle, KeptVm as Node};

const BOOT: Duration = Duration::from_secs(420);

/// What the tests read of a node's update state, through the server's update endpoint.
trait Reports {
    fn report(&self) -> Option<cairn::update::Report>;
    fn wait_report(
        &self,
        what: &str,
        done: impl Fn(&cairn::update::Report) -> bool,
    ) -> cairn::update::Report;
}

impl Reports for Node {
    fn report(&self) -> Option<cairn::update::Report> {
        let client = cairn::client::Client::from_kubeconfig(&self.o.kubeconfig()).ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let list = client
                .request(hyper::Method::GET, "/cairn/v1/nodes", None)
                .await
                .ok()?;
            serde_json::from_value(list["items"][0].clone()).ok()
        })
    }

    /// Waits until the node answers and its update state satisfies `done`.
    fn wait_report(
        &self,
        what: &str,
        done: impl Fn(&cairn::update::Report) -> bool,
    ) -> cairn::update::Report {
        let deadline = Instant::now() + BOOT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(r) = self.report() {
                if done(&r) {
                    return r;
                }
                last = Some(r);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "node never {what}; last report {last:?}; console:\n{}",
            qemu::tail(&self.console(), 50)
        );
    }
}

fn upgrade_opts(o: &VmOptions, bundle: &Path, no_wait: bool) -> Options {
    Options {
        kubeconfig: o.kubeconfig(),
        node: None,
        source: upgrade::Source::File(bundle.to_path_buf()),
        allow_downgrade: false,
        no_wait,
        timeout: BOOT,
        upload_only: false,
    }
}

/// A small deterministic generator for the kill moments (the seed is printed, so a failing
/// run can be repeated with `CAIRN_KILL_SEED`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn update_round_trip(board_name: &str, cuts: Cuts) {
    let (board, out) = built_board(board_name);
    let v1 = std::fs::read_to_string(out.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["version"].as_str().map(str::to_owned));
    let v2_bundle = make_bundle(board_name, "90.0.2", false);
    let v3_bundle = make_bundle(board_name, "90.0.3", true);

    let card = board.boot.chain == cairnctl::board::BootChain::Raspberrypi;
    let o = VmOptions::headless(board, out, "update-test", free_port());
    qemu::prepare(&o).unwrap();
    if card {
        // Slot B's FAT as a power cut while an earlier update wrote it left it: the update
        // must repair it before writing (`cairn update: repaired slot b`), not fail on it.
        damage_fat(&o.node_disk(), "cairn-boot-b");
        let scratch = o.run_dir.join("slot-b.img");
        assert!(!fat_clean(&o.node_disk(), "cairn-boot-b", &scratch));
    }
    let node = Node::start_prepared(o.clone());
    node.wait_for("cairn: ready", 0, BOOT);
    let first = node.wait_report("answered", |_| true);
    if let Some(v1) = v1 {
        assert_eq!(first.version, v1);
    }
    assert_eq!(
        (first.running.slot.as_str(), first.running.state.as_str()),
        ("a", "committed")
    );

    // v1 -> v2: the node comes back on the other slot, committed, reporting v2.
    let outcome = upgrade::run(&upgrade_opts(&o, &v2_bundle, false)).unwrap();
    let Outcome::Committed(r) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.version, "90.0.2");
    assert_eq!(
        (r.running.slot.as_str(), r.running.state.as_str()),
        ("b", "committed")
    );
    assert_eq!(r.last.as_ref().unwrap().result, "committed");
    if card {
        let console = std::fs::read_to_string(o.console_log()).unwrap();
        assert!(
            console.contains("cairn: update: repaired slot b"),
            "slot b's FAT was not repaired:\n{}",
            qemu::tail(&console, 40)
        );
    }
    // The commit waited for the Node to be Ready with the new version: kubectl shows it, and
    // the cordon the node put on itself before the reboot is lifted (within 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wide = kubectl(&o, &["get", "nodes", "-o", "wide"]);
        assert!(wide.contains("Cairn 90.0.2"), "{wide}");
        if wide.contains(" Ready ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still cordoned after the commit: {wide}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // v2 -> v3 built to fail its health gate: back on v2, with the reason.
    let err = upgrade::run(&upgrade_opts(&o, &v3_bundle, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rolled back to Cairn 90.0.2"), "{err}");
    assert!(err.contains("BREAK_HEALTH"), "{err}");
    let r = node.wait_report("settled the rollback", |r| {
        r.last.as_ref().is_some_and(|l| l.result == "rolled-back")
    });
    assert_eq!(
        (r.version.as_str(), r.running.slot.as_str()),
        ("90.0.2", "b")
    );
    assert_eq!(
        r.other.state, "empty",
        "the failed slot is forgotten: {r:?}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["status", "--kubeconfig"])
        .arg(o.kubeconfig())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("90.0.2") && text.contains("rolled-back") && text.contains("BREAK_HEALTH"),
        "cairnctl status:\n{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // The Node says so too: condition, annotation and a Warning Event (the publisher looks
    // every 10 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = kubectl(&o, &["describe", "node"]);
        let events = described.split("Events:").nth(1).unwrap_or("");
        let shown = [
            "OSUpdate",
            "False",
            "UpdateRolledBack",
            "BREAK_HEALTH",
            "Cairn 90.0.2",
        ]
        .iter()
        .all(|w| described.contains(w))
            && events.contains("Warning")
            && events.contains("UpdateRolledBack");
        if shown {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl describe node:\n{described}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    power_cuts(&node, &o, &v2_bundle, &v3_bundle, cuts);
}

/// The real kubectl (`make deps` installs it) against the node; its stdout.
fn kubectl(o: &VmOptions, args: &[&str]) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(o.kubeconfig())
        .args(args)
        .output()
        .expect("kubectl (make deps installs it)");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How a test cuts the power: rounds of updates until `total` cuts are made, each round cut
/// once while the slot is written and `in_trial` times in the boots that follow; the first
/// round installs the good bundle, or the failing one with `failing_first`, then they
/// alternate. `CAIRN_KILL_POINTS=N` sets `total` (a soak run takes 40 or more).
#[derive(Clone, Copy)]
struct Cuts {
    total: usize,
    in_trial: usize,
    failing_first: bool,
}

impl Cuts {
    fn new(total: usize, in_trial: usize, failing_first: bool) -> Cuts {
        let total = std::env::var("CAIRN_KILL_POINTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(total);
        Cuts {
            total,
            in_trial,
            failing_first,
        }
    }
}

/// Power cuts at random moments of updates. Each round installs a bundle again (the good
/// one and the failing one in turn) and cuts the power once while the slot is written, then
/// cuts the boots that follow (trial, health gate, commit or rollback) at random moments,
/// each time checking that the next boot mounts a whole slot. After each round the node must
/// come back healthy on a committed slot.
fn power_cuts(node: &Node, o: &VmOptions, good: &Path, bad: &Path, plan: Cuts) {
    let seed = std::env::var("CAIRN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("power cuts: CAIRN_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let mut cuts = 0;
    let mut round = 0;
    while cuts < plan.total {
        round += 1;
        let bundle = if (round % 2 == 1) != plan.failing_first {
            good
        } else {
            bad
        };
        let mut opts = upgrade_opts(o, bundle, true);
        opts.allow_downgrade = true; // the same versions again, into the other slot
        node.wait_report("became healthy", |r| r.running.state == "committed");

        // While the bundle is verified and written to the inactive slot.
        let from = node.console_len();
        let o2 = opts.clone();
        let upgrader = std::thread::spawn(move || upgrade::run(&o2));
        let at = node.wait_for("cairn: update: applying bundle", from, BOOT);
        std::thread::sleep(Duration::from_millis(rng.below(4000)));
        let trial_written = node.console()[at..].contains("is on trial");
        node.power_cut();
        cuts += 1;
        let _ = upgrader.join();
        eprintln!("cut {cuts}: while writing the slot (trial entry written: {trial_written})");
        whole_slot_booted(node);
        node.wait_report("came back after a cut while writing", |r| {
            r.running.state == "committed"
        });

        // During the trial boot, the health gate, the commit or the rollback: the node
        // reboots by itself, and each cut starts another boot to cut at a random moment.
        let from = node.console_len();
        upgrade::run(&opts).unwrap();
        node.wait_for("cairn-init: start stage=1", from, BOOT);
        for _ in 0..plan.in_trial {
            std::thread::sleep(Duration::from_millis(rng.below(15_000)));
            node.power_cut();
            cuts += 1;
            eprintln!("cut {cuts}: during a trial boot, its commit or its rollback");
            whole_slot_booted(node);
        }
        let r = node.wait_report("settled after the cuts", |r| {
            r.running.state == "committed"
                && r.last
                    .as_ref()
                    .is_some_and(|l| l.result != "writing" && l.result != "pending")
        });
        eprintln!(
            "round {round}: slot {}, last update {}",
            r.running.describe(),
            r.last.as_ref().map(|l| l.describe()).unwrap_or_default()
        );
    }
}

/// The boot after a power cut mounts a whole slot: the root line names slot a or b and the
/// squashfs on it mounts (switch_root follows).
fn whole_slot_booted(node: &Node) {
    let from = node.console_len();
    let at = node.wait_for("cairn-init: root slot=", from, BOOT);
    let console = node.console();
    let line = console[at..].lines().next().unwrap_or_default().to_owned();
    assert!(
        line.starts_with('a') || line.starts_with('b'),
        "odd root line: {line}"
    );
    node.wait_for("cairn-init: switch_root", at, BOOT);
}

/// One round of four cuts each on the UEFI boards: x86_64 while installing the good bundle
/// (trial, commit), aarch64 the failing one (trial, rollback), so between them both ends of
/// an update are cut on every run. Boards do not differ in the updater, only in their boot
/// chain, which each round crosses four times.
#[test]
fn qemu_x86_64_updates_rolls_back_and_survives_power_cuts() {
    update_round_trip("qemu-x86_64", Cuts::new(4, 3, false));
}

#[test]
fn qemu_aarch64_updates_rolls_back_and_survives_power_cuts() {
    update_round_trip("qemu-aarch64", Cuts::new(4, 3, true));
}

/// (Named to sort after the power-cut tests, so the short one runs last, beside whichever
/// of them ends last.)
///
/// Air-gapped: a node booted with a "USB stick" (a FAT image on a second, read-only disk)
/// holding `cairn-update/<bundle>` installs it by itself, drains, reboots into the trial and
/// commits; with the stick still in, it does not install it again.
#[test]
fn qemu_x86_64_usb_stick_bundle_is_installed() {
    let board_name = "qemu-x86_64";
    let (board, out) = built_board(board_name);
    let bundle = make_bundle(board_name, "90.0.5", false);
    let mut o = VmOptions::headless(board, out, "stick-test", free_port());
    std::fs::create_dir_all(&o.run_dir).unwrap();
    let stick = o.run_dir.join("stick.img");
    cairnctl::update::make_stick(&bundle, &stick).unwrap();
    o.stick = Some(stick);
    let node = Node::start(o.clone());
    let found = node.wait_for("cairn: update: found v90.0.5.cairnb on /dev/vdb", 0, BOOT);
    let r = node.wait_report("committed the stick's bundle", |r| {
        r.version == "90.0.5" && r.last.as_ref().is_some_and(|l| l.result == "committed")
    });
    assert_eq!(r.running.state, "committed");
    let console = node.console();
    assert!(
        console[found..].contains("drained node"),
        "drained before the reboot:\n{}",
        qemu::tail(&console, 40)
    );
    // The stick is still in: the node says why it leaves the bundle alone.
    node.wait_for(
        "skipped: Cairn 90.0.5 runs already",
        found,
        Duration::from_secs(120),
    );
    let launches = node.launches.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        node.launches.load(Ordering::SeqCst),
        launches,
        "no further reboot"
    );
}

/// Raspberry Pi (raspi4b): the slot entries on the card's first partition with
/// `autoboot.txt` following them: an update committed, then a failing one rolled back.
/// No power cuts by default (`CAIRN_KILL_POINTS=N` cuts N times, two per round: while
/// writing and once in the trial boot or its commit): each boot of the emulated Pi takes
/// one to two minutes, and a round of cuts made this the longest test of `make test`. The
/// updater is the same as on the UEFI boards, whose tests cut the power in every run; the
/// unit tests of `cairn-slots` cut every step of the Pi's entries' update and the one
/// between the entries and `autoboot.txt`. Named `card_...` to sort first: libtest starts
/// tests in name order, and this runs on one test thread while the other takes the UEFI
/// boards.
#[test]
fn card_rpi4_updates_and_rolls_back() {
    update_round_trip("rpi4", Cuts::new(0, 1, false));
}
