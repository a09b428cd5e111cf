//! `cairn update apply|status`.

use anyhow::{Context, Result};
use cairn::update::{self, Node};

use crate::cli::{UpdateArgs, UpdateCommand};

pub fn run(args: UpdateArgs) -> Result<()> {
    let node = Node::detect(&args.data_dir)
        .context("this command runs on a Cairn node booted from an A/B slot")?;
    match args.command {
        UpdateCommand::Apply {
            bundle,
            allow_downgrade,
            no_reboot,
        } => {
            update::apply(&node, &bundle, allow_downgrade, &mut |line| {
                eprintln!("{line}")
            })?;
            if no_reboot {
                eprintln!("not rebooting (--no-reboot): the trial starts at the next reboot");
            } else {
                eprintln!("rebooting");
                update::request_reboot().context("asking PID 1 to reboot")?;
            }
        }
        UpdateCommand::Status => {
            let name = cairn::procfs::kernel_hostname().unwrap_or_else(|| "localhost".into());
            let r = node.report(&name)?;
            println!("node:        {} ({}, {})", r.node, r.board, r.arch);
            println!("running:     slot {}", r.running.describe());
            println!("other:       slot {}", r.other.describe());
            let last = r.last.as_ref().map_or("none".to_string(), |l| l.describe());
            println!("last update: {last}");
            if let Some(u) = &r.upload {
                let state = if u.complete { "complete" } else { "partial" };
                println!(
                    "staged:      {} of {} bytes ({state}), sha256 {}",
                    u.received, u.size, u.sha256
                );
            }
        }
    }
    Ok(())
}
