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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run::server(args),
        Command::Agent(args) => run::agent(args),
        Command::Token(args) => token_cmd::run(args),
        Command::Update(args) => update_cmd::run(args),
        Command::Certificate(args) => certificate_cmd::run(args),
        Command::Config(ConfigCommand::Render { file }) => return config_cmd::render(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
