//! `cairnctl`: see `cairnctl --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cairnctl::{board, build, config, qemu, recipe, repo_root};

#[derive(Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "Build Cairn images, configure them, and boot them in QEMU",
    after_help = "Examples:\n  cairnctl build --board qemu-aarch64\n  cairnctl config set out/qemu-aarch64/disk.img node.yaml\n  cairnctl qemu --board qemu-aarch64 --api-port 6443\n  cairnctl boards"
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
    },
    /// List the known boards.
    Boards,
    /// Print sizes and boot timings (guest clock) for built boards, as a Markdown table.
    Bench {
        /// Boards to measure [default: every qemu-* board].
        boards: Vec<String>,
    },
    /// Read or write the node config on an image's boot/seed partition.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Boot out/<board>/disk.img in QEMU until the guest powers off or Ctrl-C.
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
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate NODE_YAML and write it into IMAGE as cairn/node.yaml (no root needed).
    Set { image: PathBuf, node_yaml: PathBuf },
    /// Print the node config in IMAGE.
    Get { image: PathBuf },
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
                repo,
                board,
                recipe,
                out,
                bin_dir,
                version,
                epoch,
                quiet,
            })?;
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
        Cmd::Config {
            cmd: ConfigCmd::Get { image },
        } => print!("{}", config::get(&image)?),
        Cmd::Qemu {
            board,
            api_port,
            fresh,
            disk_mib,
            smp,
            out,
        } => {
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
            };
            qemu::run_interactive(&o)?;
        }
    }
    Ok(())
}
