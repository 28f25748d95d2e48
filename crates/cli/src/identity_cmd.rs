//! `truststack identity ...` subcommands.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum IdentityCommand {}

pub fn run(cmd: IdentityCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {}
}
