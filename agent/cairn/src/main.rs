//! `cairn`: parses the command line and hands over to the library (see `lib.rs`).

mod certificate_cmd;
mod cli;
mod config_cmd;
mod run;
mod token_cmd;
mod update_cmd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run::server(args),
        Command::Agent(args) => run::agent(args),
        Command::Token(args) => token_cmd::run(args),
        Command::Update(args) => update_cmd::run(args),
        Command::Certificate(args) => certificate_cmd::run(args),
        Command::Config(ConfigCommand::Render { file }) => return config_cmd::render(&file),
        Command::ContainerShim { dir } => {
            return ExitCode::from(cairn_runtime::shim::main(&dir) as u8);
        }
        Command::ContainerExec { dir, tty, command } => {
            return ExitCode::from(cairn_runtime::exec::main(&dir, tty, &command) as u8);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own arena and rarely returns their memory: after
/// the API server lists 10,000 objects on its blocking threads, RSS stays at ~110 MiB. With one
/// arena it falls back to ~28 MiB, for ~10% fewer creates/s with 16 clients (docs/benchmarks.md).
/// Memory is the scarcer resource on the boards Cairn runs on. `MALLOC_ARENA_MAX` in the
/// environment still wins.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator parameters; called before any thread exists.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        }
    }
}
