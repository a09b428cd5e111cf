//! Boots a built image in QEMU (TCG), headless: the serial console goes to
//! `out/<board>/console.log` (and optionally to stdout), QMP on a unix socket drives power
//! (Ctrl-C = the power button), and a guest reboot relaunches QEMU on the same disk.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::board::{Board, BootChain, Bus};

#[derive(Clone)]
pub struct VmOptions {
    pub board: Board,
    /// `out/<board>`: holds disk.img (and vmlinuz/initrd.img for direct boot).
    pub out: PathBuf,
    /// Where the node's disk, UEFI variables, console log and QMP socket live.
    pub run_dir: PathBuf,
    /// Host port forwarded to the node's 6443.
    pub api_port: u16,
    /// Start from a fresh copy of disk.img (else reuse the node's disk if there is one).
    pub fresh: bool,
    /// Size of the node's disk (the data partition grows into it).
    pub disk_mib: u64,
    /// Copy the console to stdout as well as console.log.
    pub echo: bool,
    pub smp: u32,
    /// Cluster secrets (made here if missing) installed on a fresh node disk; an admin
    /// kubeconfig for the forwarded port is written to `run_dir/kubeconfig`.
    pub secrets: Option<PathBuf>,
    /// A disk image attached as a second, removable disk (a USB stick in QEMU: a FAT image
    /// with `cairn-update/*.cairnb` is an air-gapped update).
    pub stick: Option<PathBuf>,
    /// The NIC on a tap device of a network the caller made (several VMs and the host on
    /// one bridge, [`Lan`]) instead of QEMU's user network with the API port forwarded.
    pub tap: Option<Tap>,
    /// Memory other than the board's (a small node).
    pub memory_mib: Option<u64>,
    /// The NIC's MAC address [default: [`DEFAULT_MAC`], or the tap's]. A network-booted
    /// node's config is chosen by it.
    pub mac: Option<String>,
    /// Network boot from this URL (e.g. `cairnctl pxe serve` on the host, which the guest
    /// reaches as 10.0.2.2) instead of QEMU's TFTP server.
    pub boot_url: Option<String>,
    /// A network-booted node's local disk (else it has none: diskless).
    pub data_disk: Option<PathBuf>,
}

/// QEMU's MAC address for the first NIC of a machine.
pub const DEFAULT_MAC: &str = "52:54:00:12:34:56";

/// A network on the host for VMs on tap devices: a bridge with the host's address (`.254`
/// of `subnet`) and a tap per VM, removed on drop. Needs root.
pub struct Lan {
    bridge: String,
    subnet: [u8; 3],
    taps: Vec<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lan {
    pub fn make(bridge: &str, subnet: [u8; 3], taps: &[&str]) -> Result<Lan> {
        let lan = Lan {
            bridge: bridge.into(),
            subnet,
            taps: taps.iter().map(|t| t.to_string()).collect(),
        };
        // What an earlier, interrupted run may have left.
        lan.remove();
        ip(&["link", "add", bridge, "type", "bridge"])
            .context("making a bridge for the VMs (needs root)")?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lan.address(254)),
            "dev",
            bridge,
        ])?;
        ip(&["link", "set", bridge, "up"])?;
        for tap in taps {
            ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
            ip(&["link", "set", tap, "master", bridge])?;
            ip(&["link", "set", tap, "up"])?;
        }
        Ok(lan)
    }

    /// The address `.host` of the network.
    pub fn address(&self, host: u8) -> std::net::Ipv4Addr {
        let [a, b, c] = self.subnet;
        std::net::Ipv4Addr::new(a, b, c, host)
    }

    fn remove(&self) {
        for tap in &self.taps {
            let _ = ip(&["link", "del", tap]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A VM's NIC on the host's tap device `ifname` (which must exist and be up).
#[derive(Clone, Debug)]
pub struct Tap {
    pub ifname: String,
    /// The NIC's MAC: VMs sharing a bridge need their own.
    pub mac: String,
    /// The node's static address (its node config says so): the kubeconfig's server.
    pub address: std::net::Ipv4Addr,
}

impl VmOptions {
    /// Options for an unattended boot from a fresh copy of `out/disk.img` (tests and
    /// benchmarks), running in `out/<run>`.
    pub fn headless(board: Board, out: PathBuf, run: &str, api_port: u16) -> VmOptions {
        let run_dir = out.join(run);
        VmOptions {
            board,
            secrets: Some(run_dir.join("secrets")),
            run_dir,
            out,
            api_port,
            fresh: true,
            disk_mib: 1024,
            echo: false,
            smp: 1,
            stick: None,
            tap: None,
            memory_mib: None,
            mac: None,
            boot_url: None,
            data_disk: None,
        }
    }

    /// The MAC address of the node's NIC.
    pub fn nic_mac(&self) -> &str {
        match (&self.tap, &self.mac) {
            (Some(t), _) => &t.mac,
            (None, Some(m)) => m,
            (None, None) => DEFAULT_MAC,
        }
    }

    /// What QEMU's TFTP server serves a network-booted node: the build's files, the node
    /// configs, and one with the cluster secrets for this node.
    pub fn tftp_dir(&self) -> PathBuf {
        self.run_dir.join("tftp")
    }

    /// The API server's URL from the host.
    pub fn api_url(&self) -> String {
        match &self.tap {
            Some(t) => format!("https://{}:6443", t.address),
            None => format!("https://127.0.0.1:{}", self.api_port),
        }
    }

    /// The admin kubeconfig for this VM (with `secrets`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.run_dir.join("kubeconfig")
    }

    pub fn node_disk(&self) -> PathBuf {
        self.run_dir.join("node-disk.img")
    }
    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }
    fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }
    fn efivars(&self) -> PathBuf {
        self.run_dir.join("efivars.fd")
    }
}

/// Why QEMU stopped, from its QMP SHUTDOWN event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The guest powered itself off.
    GuestShutdown,
    /// The guest rebooted (QEMU runs with -no-reboot, so it exits).
    GuestReset,
    /// QEMU exited for another reason (reason string, or exit status).
    Other(String),
}

pub struct Vm {
    child: Child,
    qmp: UnixStream,
    last_shutdown: Arc<Mutex<Option<String>>>,
    /// The last `query-blockstats` answer: bytes written to each disk since this launch.
    written: Arc<Mutex<Option<Vec<(String, u64)>>>>,
    pub console: PathBuf,
    /// A raspi machine: no ACPI; the power button is Ctrl-Alt-Del on the USB keyboard, and
    /// the watchdog's power-off ends QEMU like a reset does (the console tells them apart).
    soc: bool,
    /// When the console was first seen ending in a `reboot:` line (raspi machines).
    restart_seen: Option<Instant>,
    /// The console's length when this launch began.
    console_from: u64,
}

/// Prepares the node's disk (and UEFI variable store) without touching a running one.
pub fn prepare(o: &VmOptions) -> Result<()> {
    if o.board.boot.chain == BootChain::Pxe {
        return prepare_netboot(o);
    }
    let src = o.out.join("disk.img");
    if !src.is_file() {
        bail!(
            "{} is missing: run `make image BOARD={}` first",
            src.display(),
            o.board.name
        );
    }
    std::fs::create_dir_all(&o.run_dir)?;
    let secrets = match &o.secrets {
        Some(dir) => Some((dir, crate::secrets::ensure(dir)?)),
        None => None,
    };
    let disk = o.node_disk();
    let stale = match (std::fs::metadata(&disk), std::fs::metadata(&src)) {
        (Ok(d), Ok(s)) => d.modified()? < s.modified()?,
        _ => true,
    };
    if o.fresh || stale {
        let mut len = std::fs::metadata(&src)?
            .len()
            .max(o.disk_mib * crate::disk::MIB);
        if o.board.qemu.as_ref().is_some_and(|q| q.bus == Bus::Soc) {
            // QEMU's SD cards come in powers of two, like real ones.
            len = len.next_power_of_two();
        }
        std::fs::File::create(&disk)?.set_len(len)?;
        crate::disk::write_sparse(&disk, 0, u64::MAX, &src)?;
        let _ = std::fs::remove_file(o.efivars());
        let _ = std::fs::remove_file(o.console_log());
        if let Some((dir, _)) = &secrets {
            crate::secrets::install(&disk, dir)?;
        }
    }
    if let Some((_, pki)) = &secrets {
        crate::secrets::write_kubeconfig(pki, &o.api_url(), &o.kubeconfig())?;
    }
    copy_efivars(o)
}

/// Lays out [`VmOptions::tftp_dir`]: links to the build's files and node configs, plus (with
/// secrets, unless the build has a config for this node's MAC) this node's config: the
/// build's default with the cluster secrets, so the admin kubeconfig works.
fn prepare_netboot(o: &VmOptions) -> Result<()> {
    use crate::pxe;
    if !o.out.join(pxe::SCRIPT).is_file() {
        bail!(
            "{} is missing: run `make image BOARD={}` first",
            o.out.join(pxe::SCRIPT).display(),
            o.board.name
        );
    }
    if o.tap.is_some() {
        bail!(
            "{}: network boot runs on QEMU's user network only (its TFTP server)",
            o.board.name
        );
    }
    std::fs::create_dir_all(&o.run_dir)?;
    let tftp = o.tftp_dir();
    if tftp.exists() {
        std::fs::remove_dir_all(&tftp)?;
    }
    std::fs::create_dir_all(tftp.join(pxe::NODES))?;
    let mut files: Vec<String> = pxe::SERVED
        .iter()
        .filter(|f| o.out.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    for name in pxe::list(&o.out)? {
        files.push(format!("{}/{name}.cpio", pxe::NODES));
    }
    for f in &files {
        let (src, dst) = (o.out.join(f), tftp.join(f));
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    if o.fresh {
        let _ = std::fs::remove_file(o.console_log());
    }
    if let Some(dir) = &o.secrets {
        let pki = crate::secrets::ensure(dir)?;
        let own = pxe::Device::Mac(o.nic_mac().to_string()).file(&tftp)?;
        if !own.exists() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as u32;
            let bytes = pxe::node_archive(crate::build::DEFAULT_NODE_YAML, Some(dir), now)?;
            std::fs::write(&own, bytes)?;
        }
        crate::secrets::write_kubeconfig(&pki, &o.api_url(), &o.kubeconfig())?;
    }
    copy_efivars(o)
}

/// A fresh copy of the board's UEFI variable store, unless the node has one.
fn copy_efivars(o: &VmOptions) -> Result<()> {
    if let Some(fw) = o.board.qemu.as_ref().and_then(|q| q.firmware.as_ref()) {
        if o.fresh {
            let _ = std::fs::remove_file(o.efivars());
        }
        if !o.efivars().exists() {
            std::fs::copy(&fw.vars, o.efivars()).with_context(|| {
                format!(
                    "copying {}: run `make deps` (UEFI firmware packages)",
                    fw.vars.display()
                )
            })?;
        }
    }
    Ok(())
}

/// The QEMU command line for one launch.
pub fn command(o: &VmOptions) -> Result<Command> {
    let q = o
        .board
        .qemu
        .as_ref()
        .with_context(|| format!("board {} has no qemu section", o.board.name))?;
    let bin = crate::tools::find(&q.binary)?;
    let mut c = Command::new(bin);
    let dev = |name: &str| match q.bus {
        Bus::Pci | Bus::Soc => format!("{name}-pci"),
        Bus::Ccw => format!("{name}-ccw"),
    };
    c.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let soc = q.bus == Bus::Soc;
    c.args(["-machine", &q.machine]);
    if let Some(cpu) = &q.cpu {
        c.args(["-cpu", cpu]);
    }
    if soc {
        // The SoC fixes CPUs and memory (QEMU refuses any other size).
        c.args(["-m", &q.memory_mib.to_string()]);
    } else {
        c.args(["-m", &o.memory_mib.unwrap_or(q.memory_mib).to_string()]);
        c.args(["-smp", &o.smp.to_string()]);
    }
    c.arg("-chardev").arg(format!(
        "file,id=con0,path={},append=on",
        o.console_log().display()
    ));
    let pi = if soc {
        Some(crate::raspi::firmware_boot(
            &o.node_disk(),
            &o.board,
            &o.run_dir.join("firmware"),
        )?)
    } else {
        None
    };
    if pi.as_ref().is_some_and(|b| {
        // The kernel's /dev/console is the last `console=`.
        let last = b
            .cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("console="))
            .next_back();
        last.is_some_and(|c| c.starts_with("ttyS1"))
    }) {
        // A Pi 3/4's console is the mini UART, QEMU's second serial port.
        c.args(["-serial", "null"]);
    }
    c.args(["-serial", "chardev:con0"]);
    c.arg("-qmp").arg(format!(
        "unix:{},server=on,wait=off",
        o.qmp_socket().display()
    ));
    let netboot = o.board.boot.chain == BootChain::Pxe;
    if netboot && q.firmware.is_none() {
        // SeaBIOS and the NIC's iPXE print on the serial port only when told to.
        let port = o.run_dir.join("sercon-port");
        std::fs::write(&port, 0x3f8u16.to_le_bytes())?;
        c.arg("-fw_cfg")
            .arg(format!("name=etc/sercon-port,file={}", port.display()));
    }
    if soc {
        c.arg("-drive")
            .arg(format!("if=sd,format=raw,file={}", o.node_disk().display()));
    } else if let Some(disk) = o.data_disk.as_ref().filter(|_| netboot) {
        c.arg("-drive").arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            disk.display()
        ));
        c.args(["-device", &format!("{},drive=disk0", dev("virtio-blk"))]);
    } else if !netboot {
        c.arg("-drive").arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            o.node_disk().display()
        ));
        c.args(["-device", &format!("{},drive=disk0", dev("virtio-blk"))]);
    }
    if let Some(stick) = &o.stick {
        c.arg("-drive").arg(format!(
            "if=none,id=stick0,format=raw,readonly=on,file={}",
            stick.display()
        ));
        c.args(["-device", &format!("{},drive=stick0", dev("virtio-blk"))]);
    }
    match &o.tap {
        Some(tap) => {
            c.arg("-netdev").arg(format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                tap.ifname
            ));
            c.args([
                "-device",
                &format!("{},netdev=net0,mac={}", dev("virtio-net"), tap.mac),
            ]);
        }
        None => {
            let mut netdev = format!("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:6443", o.api_port);
            let mut nic = if soc {
                format!("usb-net,netdev=net0,mac={}", o.nic_mac())
            } else {
                format!("{},netdev=net0,mac={}", dev("virtio-net"), o.nic_mac())
            };
            if netboot {
                // QEMU's x86 NICs carry iPXE, which runs the script; UEFI on other machines
                // loads the network GRUB.
                let first = match o.board.arch {
                    crate::board::Arch::X86_64 => crate::pxe::SCRIPT,
                    _ => crate::pxe::GRUB_EFI,
                };
                let bootfile = o.boot_url.as_deref().unwrap_or(first);
                netdev += &format!(",tftp={},bootfile={bootfile}", o.tftp_dir().display());
                nic += ",bootindex=0";
            }
            c.arg("-netdev").arg(netdev);
            c.args(["-device", &nic]);
        }
    }
    if soc {
        c.args(["-device", "usb-kbd"]);
    } else {
        c.args(["-object", "rng-random,filename=/dev/urandom,id=rng0"]);
        c.args(["-device", &format!("{},rng=rng0", dev("virtio-rng"))]);
    }
    if let Some(pi) = &pi {
        c.arg("-kernel").arg(&pi.kernel);
        c.arg("-initrd").arg(&pi.initrd);
        c.arg("-dtb").arg(&pi.dtb);
        c.args(["-append", &pi.cmdline]);
    }
    if let Some(fw) = &q.firmware {
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            fw.code.display()
        ));
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            o.efivars().display()
        ));
    }
    if o.board.boot.chain == BootChain::Direct {
        let cmdline = std::fs::read_to_string(o.out.join("cmdline")).unwrap_or_default();
        c.arg("-kernel").arg(o.out.join("vmlinuz"));
        c.arg("-initrd").arg(o.out.join("initrd.img"));
        c.args(["-append", cmdline.trim()]);
    }
    Ok(c)
}

impl Vm {
    /// Launches QEMU once and connects to its QMP socket.
    pub fn launch(o: &VmOptions) -> Result<Vm> {
        if o.tap.is_some() {
            // No port is forwarded.
        } else if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", o.api_port)) {
            drop(l);
        } else {
            bail!("127.0.0.1:{} is in use: pick another API_PORT", o.api_port);
        }
        let sock = o.qmp_socket();
        let _ = std::fs::remove_file(&sock);
        let console_from = std::fs::metadata(o.console_log()).map_or(0, |m| m.len());
        let mut cmd = command(o)?;
        // Its own process group: a Ctrl-C in the terminal reaches only cairnctl, which turns
        // it into a press of the power button instead of QEMU dying with the guest's disk
        // mid-write.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting QEMU")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let qmp = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            if let Some(st) = child.try_wait()? {
                bail!("QEMU exited at start ({st}): {cmd:?}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("QEMU's QMP socket {} never appeared", sock.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let last_shutdown = Arc::new(Mutex::new(None));
        let mut reader = BufReader::new(qmp.try_clone()?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting)?;
        (&qmp).write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        let seen = last_shutdown.clone();
        let written = Arc::new(Mutex::new(None));
        let stats = written.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(devices) = v["return"]
                        .as_array()
                        .filter(|d| d.first().is_some_and(|d| d["stats"].is_object()))
                    {
                        let per_disk = devices
                            .iter()
                            .map(|d| {
                                let name = d["qdev"].as_str().or(d["device"].as_str());
                                let bytes = d["stats"]["wr_bytes"].as_u64().unwrap_or(0);
                                (name.unwrap_or_default().to_owned(), bytes)
                            })
                            .collect();
                        *stats.lock().unwrap() = Some(per_disk);
                    }
                    if v["event"] == "SHUTDOWN" {
                        let reason = v["data"]["reason"]
                            .as_str()
                            .unwrap_or("unknown")
                            .to_string();
                        *seen.lock().unwrap() = Some(reason);
                    }
                }
            }
        });
        Ok(Vm {
            child,
            qmp,
            last_shutdown,
            written,
            console: o.console_log(),
            soc: o.board.qemu.as_ref().is_some_and(|q| q.bus == Bus::Soc),
            restart_seen: None,
            console_from,
        })
    }

    /// Presses the power button (ACPI / GPIO key / s390 quiesce, by machine).
    pub fn powerdown(&mut self) -> Result<()> {
        if self.soc {
            let keys =
                ["ctrl", "alt", "delete"].map(|k| serde_json::json!({"type": "qcode", "data": k}));
            let cmd = serde_json::json!({"execute": "send-key", "arguments": {"keys": keys}});
            self.qmp.write_all(format!("{cmd}\n").as_bytes())?;
            return Ok(());
        }
        self.qmp
            .write_all(b"{\"execute\":\"system_powerdown\"}\n")?;
        Ok(())
    }

    /// Bytes the guest has written to its disks since this launch (QMP `query-blockstats`).
    pub fn bytes_written(&mut self) -> Result<u64> {
        *self.written.lock().unwrap() = None;
        self.qmp
            .write_all(b"{\"execute\":\"query-blockstats\"}\n")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(disks) = self.written.lock().unwrap().take() {
                return Ok(disks.iter().map(|(_, b)| b).sum());
            }
            if Instant::now() > deadline {
                bail!("QEMU did not answer query-blockstats");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops QEMU at once (no guest shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for QEMU to exit; `None` on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<Stop>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Give the QMP reader a moment to record the final event.
                std::thread::sleep(Duration::from_millis(100));
                let mut reason = self.last_shutdown.lock().unwrap().clone();
                if self.soc
                    && reason.as_deref() == Some("guest-reset")
                    && tail(&self.console_text(), 5).contains("reboot: Power down")
                {
                    reason = Some("guest-shutdown".into());
                }
                return Ok(Some(match reason.as_deref() {
                    Some("guest-shutdown") => Stop::GuestShutdown,
                    Some("guest-reset") => Stop::GuestReset,
                    Some(r) => Stop::Other(r.to_string()),
                    None => Stop::Other(status.to_string()),
                }));
            }
            if let Some(stop) = self.stuck_in_restart() {
                self.kill();
                return Ok(Some(stop));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// On raspi machines QEMU sometimes never performs the watchdog reset that ends a
    /// guest's reboot or power-off (the kernel then spins, reporting soft lockups), where a
    /// real Pi's watchdog fires. The harness stands in: once the console's last kernel line
    /// has been `reboot: Restarting system` or `reboot: Power down` for 10 s, that is the
    /// guest's reset or power-off.
    fn stuck_in_restart(&mut self) -> Option<Stop> {
        use std::io::{Read, Seek, SeekFrom};
        if !self.soc {
            return None;
        }
        let mut tail = String::new();
        let read = std::fs::File::open(&self.console).and_then(|mut f| {
            // Only what this launch printed: an earlier boot's last line is not this one's.
            let len = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(
                len.saturating_sub(4096).max(self.console_from),
            ))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            tail = String::from_utf8_lossy(&buf).into_owned();
            Ok(())
        });
        // The last `reboot:` line, unless a new boot began after it.
        let stop = read.ok().and_then(|()| {
            let at = tail.rfind("reboot: ")?;
            let after = &tail[at..];
            if after.contains("cairn-init: start") || after.contains("Booting Linux") {
                return None;
            }
            if after.starts_with("reboot: Restarting system") {
                Some(Stop::GuestReset)
            } else if after.starts_with("reboot: Power down") {
                Some(Stop::GuestShutdown)
            } else {
                None
            }
        });
        match (stop, self.restart_seen) {
            (None, _) => {
                self.restart_seen = None;
                None
            }
            (Some(_), None) => {
                self.restart_seen = Some(Instant::now());
                None
            }
            (Some(stop), Some(t)) if t.elapsed() > Duration::from_secs(10) => Some(stop),
            (Some(_), Some(_)) => None,
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The console so far.
    pub fn console_text(&self) -> String {
        read_lossy(&self.console)
    }

    /// Waits until the console contains `marker` (after byte `from`); returns the byte offset
    /// just past it.
    pub fn wait_for(&mut self, marker: &str, from: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(marker)) {
                return Ok(from + i + marker.len());
            }
            if !self.running() {
                bail!(
                    "QEMU exited before `{marker}` appeared; console tail:\n{}",
                    tail(&text, 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "`{marker}` did not appear within {timeout:?}; console tail:\n{}",
                    tail(&text, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
    }
}

pub fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// `make qemu`: runs the node until the guest powers off or the user presses Ctrl-C,
/// relaunching QEMU when the guest reboots.
pub fn run_interactive(o: &VmOptions) -> Result<()> {
    prepare(o)?;
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    // Ctrl-C, and SIGTERM or SIGHUP (a closed terminal, `timeout`, a service manager),
    // press the power button: QEMU runs in its own process group and would outlive us.
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let console = o.console_log();
    let echo_from = Arc::new(Mutex::new(
        std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0),
    ));
    if o.echo {
        let pos = echo_from.clone();
        let path = console.clone();
        std::thread::spawn(move || echo_console(&path, &pos));
    }
    eprintln!(
        "cairnctl: booting {} (console: {}, API: https://127.0.0.1:{}); Ctrl-C powers the node off",
        o.board.name,
        console.display(),
        o.api_port
    );
    if o.secrets.is_some() {
        eprintln!(
            "cairnctl: once the node is ready: kubectl --kubeconfig {} get namespaces",
            o.kubeconfig().display()
        );
    }
    loop {
        let mut vm = Vm::launch(o)?;
        let mut pressed_at: Option<Instant> = None;
        let stop = loop {
            if let Some(s) = vm.wait(Duration::from_millis(200))? {
                break s;
            }
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) && pressed_at.is_none() {
                eprintln!("\ncairnctl: Ctrl-C: pressing the power button (again in 60 s: QEMU is stopped)");
                vm.powerdown()?;
                pressed_at = Some(Instant::now());
            }
            if pressed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                eprintln!("cairnctl: the guest did not power off within 60 s; stopping QEMU");
                vm.kill();
                break Stop::Other("killed".into());
            }
        };
        std::thread::sleep(Duration::from_millis(300));
        match stop {
            Stop::GuestReset if !interrupted.load(std::sync::atomic::Ordering::SeqCst) => {
                eprintln!("cairnctl: guest rebooted; relaunching QEMU on the same disk");
            }
            Stop::GuestShutdown => {
                eprintln!("cairnctl: guest powered off");
                return Ok(());
            }
            other => {
                eprintln!("cairnctl: QEMU stopped ({other:?})");
                return Ok(());
            }
        }
    }
}

fn echo_console(path: &Path, pos: &Mutex<u64>) {
    use std::io::{Read, Seek, SeekFrom};
    loop {
        if let Ok(mut f) = std::fs::File::open(path) {
            let mut p = pos.lock().unwrap();
            if f.seek(SeekFrom::Start(*p)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
                    *p += buf.len() as u64;
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf);
                    let _ = out.flush();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
