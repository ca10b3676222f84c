//! `virtest list` and `virtest run`: the built-in tests (boot, reboot,
//! migration) as a job.

use std::path::PathBuf;
use std::process::ExitCode;

use virtest_harness::JobArgs;
use virtest_harness::params::ParamSources;
use virtest_harness::runner::{self, Filter, Planned};

use super::CliResult;
use virtest::builtin;

/// Which tests, with which parameters.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Tests to run, by name (all when none); with --contains, parts of
    /// names.
    tests: Vec<String>,
    /// Select tests whose name contains a given name.
    #[arg(long)]
    contains: bool,
    /// A parameter, `key=value` (repeatable; see the README's table).
    #[arg(short = 'p', long = "param")]
    params: Vec<String>,
    /// A params file (TOML or JSON); a list of values makes variants.
    #[arg(long, env = "VIRTEST_PARAMS")]
    params_file: Option<PathBuf>,
}

impl Selection {
    fn plan(&self) -> Result<Vec<Planned>, Box<dyn std::error::Error>> {
        let sources = ParamSources {
            file: self.params_file.clone(),
            assignments: self.params.clone(),
        };
        let filter = Filter {
            patterns: self.tests.clone(),
            exact: !self.contains,
            skip: Vec::new(),
        };
        let (planned, warnings) = runner::plan(&builtin::tests(), &sources, &filter)?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        // Every name given must select something: a typo must not pass
        // for a job that ran what it could.
        let unmatched: Vec<&str> = self
            .tests
            .iter()
            .filter(|name| {
                let alone = Filter {
                    patterns: vec![name.to_string()],
                    ..filter.clone()
                };
                !planned.iter().any(|p| alone.matches(&p.name))
            })
            .map(String::as_str)
            .collect();
        if !unmatched.is_empty() {
            return Err(format!(
                "no test matches {}; `virtest list` shows them",
                unmatched
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
        Ok(planned)
    }
}

/// `virtest list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    selection: Selection,
    /// List the known parameters, their defaults and meaning, instead.
    #[arg(long)]
    parameters: bool,
    /// With --parameters: as the README's Markdown table.
    #[arg(long, requires = "parameters")]
    markdown: bool,
}

/// `virtest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    job: JobArgs,
}

pub fn list(args: ListArgs) -> CliResult {
    if args.parameters && args.markdown {
        print!("{}", virtest_harness::params::markdown_table());
        return Ok(ExitCode::SUCCESS);
    }
    if args.parameters {
        for known in virtest_harness::params::KNOWN {
            println!(
                "{:<22} {:<10} {} ({}; default: {})",
                known.name(),
                match known.default() {
                    "" => "-",
                    value => value,
                },
                known.help(),
                known.expected(),
                known.default_shown()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    for test in args.selection.plan()? {
        println!("{}", test.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: RunArgs) -> CliResult {
    let planned = args.selection.plan()?;
    let options = args.job.options();
    Ok(runner::run_and_report(&builtin::tests(), planned, &options))
}
