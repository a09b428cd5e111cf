//! `cairn config render FILE`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use cairn_config::{render_env, NodeConfig};

/// Exit status for an invalid or unreadable node config (init then boots with defaults).
const INVALID: u8 = 2;

/// Prints the node config as `KEY=VALUE` lines; a missing file gives the defaults.
pub fn render(file: &Path) -> ExitCode {
    let name = file.display().to_string();
    let config = match fs::read_to_string(file) {
        Ok(text) => NodeConfig::parse(&text, &name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeConfig::default()),
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(INVALID);
        }
    };
    match config {
        Ok(config) => {
            let mut out = io::stdout().lock();
            if out
                .write_all(render_env(&config).as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(INVALID)
        }
    }
}
