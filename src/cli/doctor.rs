//! `virtest doctor`: what this machine has, and what to install.

use super::CliResult;

/// Flags of `virtest doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CliResult {
    Ok(std::process::ExitCode::SUCCESS)
}
