//! `cairn update apply|status`.

use anyhow::{Context, Result};
use cairn::update::{self, Node};
use cairn_slots::SlotState;

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
            let st = node.status()?;
            let describe = |state: &SlotState, version: &Option<String>| {
                let v = version.as_deref().unwrap_or("-");
                match state {
                    SlotState::Empty => "empty".to_string(),
                    SlotState::Committed => format!("Cairn {v}, committed"),
                    SlotState::Trial(t) => format!("Cairn {v}, on trial ({} tries left)", t.left),
                    SlotState::Failed(_) => format!("Cairn {v}, trial used (not committed)"),
                }
            };
            println!(
                "running: slot {}: {}",
                st.running,
                describe(&st.running_state, &st.running_version)
            );
            println!(
                "other:   slot {}: {}",
                st.running.other(),
                describe(&st.other_state, &st.other_version)
            );
            match node.last() {
                None => println!("last update: none"),
                Some(r) => println!(
                    "last update: {} {} -> {} (slot {}){}",
                    r.result,
                    r.from_version,
                    r.to_version,
                    r.slot,
                    r.reason.map(|x| format!(": {x}")).unwrap_or_default()
                ),
            }
        }
    }
    Ok(())
}
