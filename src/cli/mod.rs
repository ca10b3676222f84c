//! The `virtest` command line: parse flags, dispatch to a subcommand,
//! print errors with their chain of causes.

mod bootstrap;
mod doctor;
mod guest;
mod paused;
mod results;
mod run;
mod snapshot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Write and run virtualization tests against QEMU.
#[derive(Debug, Parser)]
#[command(name = "virtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the default guest into the cache (a no-op when it is current).
    Bootstrap(bootstrap::Args),
    /// Check this machine: QEMU, accelerators, the guest cache.
    Doctor(doctor::Args),
    /// Guest descriptions: `virtest guest check PATH`.
    Guest(guest::Args),
    /// List the built-in tests (boot, reboot, migration) and variants,
    /// or the known parameters (--parameters).
    List(run::ListArgs),
    /// Run built-in tests as a job, and write its results.
    Run(run::RunArgs),
    /// Summarize a job's results (the latest by default).
    Results(results::Args),
    /// Ready snapshots, which VMs start from instead of booting: list,
    /// make, prune.
    Snapshot(snapshot::Args),
    /// A shell in the VM of a test that pauses on its failure
    /// (`virtest run --pause-on-failure`).
    Ssh(paused::SshArgs),
    /// The serial console of a test's VM while the test pauses on its
    /// failure (Ctrl-] leaves).
    Console(paused::ConsoleArgs),
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Guest(args) => guest::run(args),
        Command::List(args) => run::list(args),
        Command::Run(args) => run::run(args),
        Command::Results(args) => results::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Ssh(args) => paused::ssh(args),
        Command::Console(args) => paused::console(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            print_error(err.as_ref());
            ExitCode::from(2)
        }
    }
}

/// Prints an error and each of its causes on a line of its own.
fn print_error(err: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIRTEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// What a subcommand returns.
type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
