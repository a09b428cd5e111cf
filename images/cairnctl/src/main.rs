//! `cairnctl`: see `cairnctl --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cairnctl::{board, build, config, qemu, recipe, repo_root, secrets, update, upgrade};

#[derive(Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "Build Cairn images, configure them, and boot them in QEMU",
    after_help = "Examples:\n  cairnctl build --board qemu-aarch64\n  cairnctl config set out/qemu-aarch64/disk.img node.yaml\n  cairnctl gen secrets && cairnctl secrets install out/qemu-aarch64/disk.img\n  cairnctl kubeconfig --server https://edge-1:6443 > edge-1.kubeconfig\n  cairnctl qemu --board qemu-aarch64 --api-port 6443\n  cairnctl bundle --board qemu-aarch64\n  cairnctl upgrade --kubeconfig out/qemu-aarch64/kubeconfig out/qemu-aarch64/update.cairnb\n  cairnctl upgrade --kubeconfig K --url https://files.example/edge/update.cairnb --sha256 HEX\n  cairnctl status --kubeconfig out/qemu-aarch64/kubeconfig\n  cairnctl boards"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build out/<board>/{disk.img,disk.img.zst,disk.img.bmap,manifest.json}.
    Build {
        /// Board config name (board-configs/<board>.yaml); `cairnctl boards` lists them.
        #[arg(long)]
        board: String,
        /// Recipe name (images/recipes/<recipe>.yaml).
        #[arg(long, default_value = "default")]
        recipe: String,
        /// Output directory [default: out/<board>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Directory with the device binaries [default: target/device/<triple>/release].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Version the image reports [default: $CAIRN_VERSION, else the workspace version].
        #[arg(long = "image-version")]
        image_version: Option<String>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Skip disk.img.zst and disk.img.bmap (an image built only to be bundled).
        #[arg(long)]
        no_disk_archive: bool,
    },
    /// List the known boards.
    Boards,
    /// Build the test container images (cairn.local/test/busybox and .../httpd, from Debian's
    /// busybox-static) as multi-architecture OCI archives: DIR/busybox.oci.tar, DIR/httpd.oci.tar.
    #[command(
        after_help = "Examples:\n  cairnctl test-images -o out/test-images\n  cairnctl test-images --arch x86_64 --arch aarch64\n  skopeo copy oci-archive:out/test-images/httpd.oci.tar docker://localhost:5000/test/httpd:latest --all"
    )]
    TestImages {
        /// Architectures to include (x86_64, aarch64, armv7, s390x) [default: all four].
        #[arg(long = "arch")]
        arches: Vec<String>,
        /// Output directory.
        #[arg(short, long, default_value = "out/test-images")]
        out: PathBuf,
    },
    /// Print sizes and boot timings (guest clock) for built boards, as a Markdown table.
    Bench {
        /// Boards to measure [default: every qemu-* board].
        boards: Vec<String>,
    },
    /// Time one A/B update on a QEMU node of each board: the apply, the bytes it writes, and
    /// the way back to committed. Prints a Markdown table.
    BenchUpdate {
        /// Boards to measure [default: qemu-x86_64].
        boards: Vec<String>,
    },
    /// Measure what pods cost a node of built boards, booted in QEMU: cairn's memory idle and
    /// with 20 pods, pod start latency (p50, p99), 100 pods; with --agent (root) also an
    /// agent's idle memory and a 256 MiB node running 5 pods. Prints a Markdown table.
    BenchPods {
        /// Also boot an agent beside the server on a host bridge, and a 256 MiB node.
        #[arg(long)]
        agent: bool,
        /// Boards to measure [default: qemu-x86_64].
        boards: Vec<String>,
    },
    /// Make an update bundle (out/<board>/update.cairnb) from a built image, signed with the
    /// update key in out/keys. Nodes install it into their inactive slot.
    Bundle {
        /// Board whose image (out/<board>) to bundle.
        #[arg(long)]
        board: String,
        /// Output file [default: out/<board>/update.cairnb].
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Signing key [default: out/keys/update.key].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Oldest running version allowed to install this bundle.
        #[arg(long, value_name = "VERSION")]
        min_version: Option<String>,
        /// For rollback tests: the node fails its health gate on purpose after installing.
        #[arg(long)]
        break_health: bool,
        /// Image directory [default: out/<board>].
        #[arg(long)]
        image_dir: Option<PathBuf>,
    },
    /// Update signing keys: `keys gen` makes out/keys/update.{key,pub}.
    Keys {
        #[command(subcommand)]
        what: KeysCmd,
    },
    /// Read or write the node config on an image's boot/seed partition.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Make things: `gen secrets` makes a cluster CA, join token and admin certificate.
    Gen {
        #[command(subcommand)]
        what: GenCmd,
    },
    /// Put cluster secrets on an image, so its kubeconfig exists before the node boots.
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
    },
    /// Print an admin kubeconfig for a node seeded with these secrets.
    Kubeconfig {
        /// Secrets directory [default: out/secrets].
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// The node's API URL.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
        /// Write to FILE (mode 0600) instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Upgrade a node to a signed bundle through its API: upload (resuming after dropped
    /// connections), install into the inactive slot, reboot into a trial, and wait until the
    /// node commits the new version or rolls back (exit status 1, with the node's reason).
    Upgrade {
        /// Kubeconfig of the cluster's server (out/<board>/kubeconfig for `make qemu`).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Node to upgrade [default: the only node the server offers].
        #[arg(long, conflicts_with = "all")]
        node: Option<String>,
        /// Upgrade every node the server offers, one at a time, agents before servers,
        /// waiting for each to commit; stop at the first failure.
        #[arg(long)]
        all: bool,
        /// Allow a bundle that is not newer than the running version (a downgrade, or the
        /// same version again into the other slot).
        #[arg(long)]
        allow_downgrade: bool,
        /// Return once the node reboots into its trial.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the node to come back and commit.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Have the node fetch the bundle itself from this https:// URL (resuming with range
        /// requests) instead of uploading BUNDLE; needs --sha256.
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "bundle",
            requires = "sha256"
        )]
        url: Option<String>,
        /// The sha256 of the bundle at --url (`sha256sum update.cairnb`).
        #[arg(long, value_name = "HEX", requires = "url")]
        sha256: Option<String>,
        /// A CA certificate (PEM) the node trusts for --url besides its system CA bundle.
        #[arg(long, value_name = "FILE", requires = "url")]
        url_ca: Option<PathBuf>,
        /// The bundle (out/<board>/update.cairnb from `cairnctl bundle`).
        #[arg(required_unless_present = "url")]
        bundle: Option<PathBuf>,
    },
    /// Print each node's running version and slot, the other slot, and the last update's
    /// result and reason.
    Status {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
    },
    /// Boot out/<board>/disk.img in QEMU until the guest powers off or Ctrl-C. A fresh node
    /// disk gets the secrets in out/secrets (made if missing); out/<board>/kubeconfig then
    /// reaches the node's API through the forwarded port. Network-booted boards (pxe-*)
    /// boot through the NIC's iPXE from QEMU's TFTP server serving out/<board>.
    Qemu {
        #[arg(long)]
        board: String,
        /// Host port forwarded to the node's API port 6443 (on 127.0.0.1).
        #[arg(long, default_value_t = 6443)]
        api_port: u16,
        /// Start again from a fresh copy of disk.img (discards the node's data).
        #[arg(long)]
        fresh: bool,
        /// Size of the node's disk; the data partition grows to fill it.
        #[arg(long, default_value_t = 2048)]
        disk_mib: u64,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        smp: u32,
        /// Output directory [default: out/<board>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Attach this disk image as a second, read-only disk: a USB stick stand-in (make
        /// one with `cairnctl stick`).
        #[arg(long, value_name = "IMG")]
        stick: Option<PathBuf>,
        /// The NIC's MAC address (a network-booted node's config is chosen by it).
        #[arg(long, default_value = qemu::DEFAULT_MAC)]
        mac: String,
    },
    /// Write an image to an SD card or USB disk: only the blocks its block map lists, each
    /// checked against the map, then all read back and checked again. Refuses a partition,
    /// a mounted or in-use disk, this system's disk, and one smaller than the image.
    Flash {
        /// out/<board>/disk.img.zst (or disk.img).
        image: PathBuf,
        /// The whole device (/dev/sdX, /dev/mmcblkN), or a file.
        device: PathBuf,
        /// The block map [default: disk.img.bmap beside the image].
        #[arg(long)]
        bmap: Option<PathBuf>,
    },
    /// Network boot (pxe-* boards): per-device node configs and the boot server.
    Pxe {
        #[command(subcommand)]
        cmd: PxeCmd,
    },
    /// Make a FAT disk image holding BUNDLE as cairn-update/<name>: what a USB stick for an
    /// air-gapped update holds (any FAT stick with that file works the same).
    Stick {
        /// The bundle (out/<board>/update.cairnb).
        bundle: PathBuf,
        /// The image to write.
        #[arg(long, short = 'o', default_value = "stick.img")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum GenCmd {
    /// Make ca.crt, ca.key, node-token, admin.crt, admin.key in DIR (refuses to overwrite).
    Secrets {
        /// Output directory [default: out/secrets].
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Make an ed25519 signing key (update.key, PKCS#8 PEM, mode 0600) and its public key
    /// (update.pub). Images built afterwards trust it; `cairnctl build` makes one if missing.
    Gen {
        /// Output directory [default: out/keys].
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Comment stored with the public key.
        #[arg(long, default_value = "cairn update key")]
        comment: String,
    },
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Copy ca.crt, ca.key and node-token into IMAGE's seed partition (cairn/secrets/); the
    /// server imports them on its first start. The image then holds the CA key: keep it safe.
    Install {
        image: PathBuf,
        /// Secrets directory [default: out/secrets].
        #[arg(long)]
        secrets: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PxeCmd {
    /// Validate NODE_YAML and make it the node config of the device with MAC (or of every
    /// device without its own, with --default) in DIR (out/pxe-<arch>).
    Add {
        dir: PathBuf,
        #[command(flatten)]
        device: PxeDevice,
        node_yaml: PathBuf,
        /// Also give the device these cluster secrets (a server imports them on first start).
        #[arg(long)]
        secrets: Option<PathBuf>,
    },
    /// Remove a device's node config; removing the default makes unknown devices be refused.
    Remove {
        dir: PathBuf,
        #[command(flatten)]
        device: PxeDevice,
    },
    /// List the devices with a node config in DIR.
    List { dir: PathBuf },
    /// Serve DIR to network-booting devices: HTTP (iPXE) and TFTP (the first stage).
    Serve {
        dir: PathBuf,
        /// Address to listen on (one of this machine's, on the devices' network).
        #[arg(long, default_value = "0.0.0.0")]
        listen: std::net::IpAddr,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// TFTP port; 0 serves no TFTP.
        #[arg(long, default_value_t = 69)]
        tftp_port: u16,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct PxeDevice {
    /// The device's MAC address (52:54:00:12:34:56).
    #[arg(long)]
    mac: Option<String>,
    /// Every device without a config of its own.
    #[arg(long)]
    default: bool,
}

impl PxeDevice {
    fn device(&self) -> cairnctl::pxe::Device {
        match &self.mac {
            Some(m) => cairnctl::pxe::Device::Mac(m.clone()),
            None => cairnctl::pxe::Device::Default,
        }
    }
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate NODE_YAML and write it into IMAGE as cairn/node.yaml (no root needed).
    Set { image: PathBuf, node_yaml: PathBuf },
    /// Print the node config in IMAGE.
    Get { image: PathBuf },
}

/// `out/secrets` in the repository: one cluster for every board built here.
fn default_secrets() -> Result<PathBuf> {
    Ok(repo_root()?.join("out/secrets"))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairnctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Build {
            board,
            recipe: recipe_name,
            out,
            bin_dir,
            image_version,
            quiet,
            no_disk_archive,
        } => {
            let repo = repo_root()?;
            let board = board::load(&repo.join("board-configs"), &board)?;
            let recipe = recipe::load(&repo.join("images/recipes"), &recipe_name)?;
            let out = out.unwrap_or_else(|| repo.join("out").join(&board.name));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let bin_dir = bin_dir.unwrap_or_else(|| {
                repo.join("target/device")
                    .join(board.arch.rust_target())
                    .join("release")
            });
            let version = image_version
                .or_else(|| {
                    std::env::var("CAIRN_VERSION")
                        .ok()
                        .filter(|v| !v.is_empty())
                })
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
            let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(s) => s
                    .trim()
                    .parse()
                    .context("SOURCE_DATE_EPOCH must be a number of seconds")?,
                Err(_) => 1_735_689_600, // 2025-01-01: a fixed default keeps builds reproducible
            };
            build::build(&build::Options {
                board,
                recipe,
                out,
                bin_dir,
                version,
                epoch,
                quiet,
                update_keys: repo.join("out/keys"),
                disk_archive: !no_disk_archive,
                repo,
            })?;
        }
        Cmd::Upgrade {
            kubeconfig,
            node,
            all,
            allow_downgrade,
            no_wait,
            timeout,
            url,
            sha256,
            url_ca,
            bundle,
        } => {
            let source = match (bundle, url, sha256) {
                (Some(file), _, _) => upgrade::Source::File(file),
                (None, Some(url), Some(sha256)) => {
                    let ca = url_ca
                        .map(|p| {
                            std::fs::read_to_string(&p)
                                .with_context(|| format!("reading {}", p.display()))
                        })
                        .transpose()?;
                    upgrade::Source::Url { url, sha256, ca }
                }
                _ => bail!("give a bundle file, or --url with --sha256"),
            };
            let opts = upgrade::Options {
                kubeconfig,
                node,
                source,
                allow_downgrade,
                no_wait,
                timeout: std::time::Duration::from_secs(timeout),
                upload_only: false,
            };
            let outcomes = if all {
                upgrade::run_all(&opts)?
            } else {
                vec![(String::new(), upgrade::run(&opts)?)]
            };
            for (name, outcome) in outcomes {
                match outcome {
                    upgrade::Outcome::Committed(r) => println!(
                        "{}: Cairn {} committed on slot {}",
                        r.node, r.version, r.running.slot
                    ),
                    upgrade::Outcome::Current if all => println!("{name}: already current"),
                    _ => {}
                }
            }
        }
        Cmd::Status { kubeconfig } => upgrade::print_status(&kubeconfig)?,
        Cmd::Keys {
            what: KeysCmd::Gen { out, comment },
        } => {
            let dir = match out {
                Some(d) => d,
                None => repo_root()?.join("out/keys"),
            };
            let id = update::gen_keys(&dir, &comment)?;
            println!(
                "update key {id}: {} (private, keep it safe) and {}",
                dir.join(update::KEY_FILE).display(),
                dir.join(update::PUB_FILE).display()
            );
        }
        Cmd::Bundle {
            board,
            out,
            key,
            min_version,
            break_health,
            image_dir,
        } => {
            let repo = repo_root()?;
            let image_dir = image_dir.unwrap_or_else(|| repo.join("out").join(&board));
            let out = out.unwrap_or_else(|| image_dir.join("update.cairnb"));
            let key = key.unwrap_or_else(|| repo.join("out/keys").join(update::KEY_FILE));
            let m = update::bundle(&update::BundleOptions {
                board,
                image_dir,
                out: out.clone(),
                key,
                min_version,
                break_health,
            })?;
            print!("{}", update::describe(&m, &out));
        }
        Cmd::TestImages { arches, out } => {
            let all = [
                board::Arch::X86_64,
                board::Arch::Aarch64,
                board::Arch::Armv7,
                board::Arch::S390x,
            ];
            let chosen: Vec<board::Arch> =
                if arches.is_empty() {
                    all.to_vec()
                } else {
                    arches
                        .iter()
                        .map(|a| {
                            all.iter().copied().find(|x| x.as_str() == a).with_context(|| {
                            format!("unknown architecture {a:?}: x86_64, aarch64, armv7 or s390x")
                        })
                        })
                        .collect::<Result<_>>()?
                };
            let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(s) => s
                    .trim()
                    .parse()
                    .context("SOURCE_DATE_EPOCH must be a number of seconds")?,
                Err(_) => 1_735_689_600,
            };
            for path in cairnctl::oci::build(&out, &chosen, epoch)? {
                println!("{}", path.display());
            }
        }
        Cmd::Boards => {
            let dir = repo_root()?.join("board-configs");
            for name in board::known_boards(&dir) {
                let b = board::load(&dir, &name)?;
                println!("{:<16} {:<8} {}", b.name, b.arch.as_str(), b.description);
            }
        }
        Cmd::Config {
            cmd: ConfigCmd::Set { image, node_yaml },
        } => {
            let text = std::fs::read_to_string(&node_yaml)
                .with_context(|| format!("reading {}", node_yaml.display()))?;
            config::set(&image, &text, &node_yaml.display().to_string())?;
            eprintln!(
                "cairnctl: wrote {} into {}",
                node_yaml.display(),
                image.display()
            );
        }
        Cmd::Bench { boards } => {
            let repo = repo_root()?;
            let boards = if boards.is_empty() {
                board::known_boards(&repo.join("board-configs"))
                    .into_iter()
                    .filter(|b| b.starts_with("qemu-"))
                    .collect()
            } else {
                boards
            };
            let mut rows = Vec::new();
            for b in &boards {
                eprintln!("cairnctl: measuring {b}");
                rows.push(cairnctl::bench::measure(&repo, b)?);
            }
            cairnctl::bench::print(&rows);
        }
        Cmd::BenchUpdate { boards } => {
            let repo = repo_root()?;
            let mut rows = Vec::new();
            for b in &or_x86_64(boards) {
                eprintln!("cairnctl: timing an update of {b}");
                rows.push(cairnctl::updatebench::measure(&repo, b)?);
            }
            cairnctl::updatebench::print(&rows);
        }
        Cmd::BenchPods { agent, boards } => {
            let repo = repo_root()?;
            let mut rows = Vec::new();
            for b in &or_x86_64(boards) {
                eprintln!("cairnctl: measuring pods on {b}");
                rows.push(cairnctl::podbench::measure(&repo, b, agent)?);
            }
            cairnctl::podbench::print(&rows);
        }
        Cmd::Config {
            cmd: ConfigCmd::Get { image },
        } => print!("{}", config::get(&image)?),
        Cmd::Gen {
            what: GenCmd::Secrets { out },
        } => {
            let dir = out.unwrap_or(default_secrets()?);
            secrets::generate(&dir)
                .with_context(|| format!("generating secrets in {}", dir.display()))?;
            eprintln!(
                "cairnctl: wrote cluster secrets to {} (keep ca.key and node-token private)",
                dir.display()
            );
        }
        Cmd::Secrets {
            cmd:
                SecretsCmd::Install {
                    image,
                    secrets: dir,
                },
        } => {
            let dir = dir.unwrap_or(default_secrets()?);
            secrets::install(&image, &dir)?;
            eprintln!(
                "cairnctl: installed the secrets of {} into {}",
                dir.display(),
                image.display()
            );
        }
        Cmd::Kubeconfig {
            secrets: dir,
            server,
            output,
        } => {
            let pki = cairn::seed::load(&dir.unwrap_or(default_secrets()?))?;
            match output {
                Some(path) => secrets::write_kubeconfig(&pki, &server, &path)?,
                None => print!("{}", cairn::kubeconfig::render(&server, &pki)),
            }
        }
        Cmd::Qemu {
            board,
            api_port,
            fresh,
            disk_mib,
            smp,
            out,
            stick,
            mac,
        } => {
            cairnctl::pxe::mac_key(&mac)?;
            let repo = repo_root()?;
            let board = board::load(&repo.join("board-configs"), &board)?;
            let out = out.unwrap_or_else(|| repo.join("out").join(&board.name));
            let o = qemu::VmOptions {
                board,
                run_dir: out.clone(),
                out,
                api_port,
                fresh,
                disk_mib,
                echo: true,
                smp,
                secrets: Some(default_secrets()?),
                stick,
                tap: None,
                memory_mib: None,
                mac: Some(mac),
                boot_url: None,
                data_disk: None,
            };
            qemu::run_interactive(&o)?;
        }
        Cmd::Flash {
            image,
            device,
            bmap,
        } => {
            let bmap = bmap.unwrap_or_else(|| cairnctl::flash::bmap_path(&image));
            eprintln!(
                "cairnctl: writing {} to {}",
                image.display(),
                device.display()
            );
            let bytes = cairnctl::flash::flash(&image, &bmap, &device)?;
            println!(
                "{}: {} written and verified; it is safe to remove",
                device.display(),
                cairnctl::progress::mib(bytes)
            );
        }
        Cmd::Pxe { cmd } => match cmd {
            PxeCmd::Add {
                dir,
                device,
                node_yaml,
                secrets,
            } => {
                let path =
                    cairnctl::pxe::add(&dir, &device.device(), &node_yaml, secrets.as_deref())?;
                println!("{}", path.display());
            }
            PxeCmd::Remove { dir, device } => {
                let path = cairnctl::pxe::remove(&dir, &device.device())?;
                println!("removed {}", path.display());
                if device.default {
                    println!("devices without a config of their own are now refused");
                }
            }
            PxeCmd::List { dir } => {
                for name in cairnctl::pxe::list(&dir)? {
                    println!("{}", name.replace('-', ":"));
                }
            }
            PxeCmd::Serve {
                dir,
                listen,
                http_port,
                tftp_port,
            } => cairnctl::pxeserve::serve(&dir, listen, http_port, tftp_port)?,
        },
        Cmd::Stick { bundle, out } => {
            cairnctl::update::make_stick(&bundle, &out)?;
            println!(
                "{}: FAT image with cairn-update/{}",
                out.display(),
                bundle.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    Ok(())
}

/// The boards asked for, else `qemu-x86_64` (the QEMU benches that boot several nodes).
fn or_x86_64(boards: Vec<String>) -> Vec<String> {
    if boards.is_empty() {
        vec!["qemu-x86_64".to_owned()]
    } else {
        boards
    }
}
