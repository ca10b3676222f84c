//! `virtest list` and `virtest run`: the built-in tests (boot, reboot,
//! migration) as a job.

use std::path::PathBuf;
use std::process::ExitCode;

use virtest_harness::params::ParamSources;
use virtest_harness::runner::{self, Filter, JobOptions, Planned};

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
}

/// `virtest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    selection: Selection,
    /// Tests at once (default: the number of cores).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Where job directories go (default: $VIRTEST_RESULTS, else
    /// job-results in virtest's cache).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Run a test that fails again, up to N times; one that then passes
    /// is reported flaky (also `$VIRTEST_RETRIES`).
    #[arg(
        long,
        value_name = "N",
        env = "VIRTEST_RETRIES",
        allow_hyphen_values = true
    )]
    retries: Option<u32>,
    /// Run each test N times, to hunt a flaky one; the summary counts
    /// its passes (also `$VIRTEST_REPEAT`).
    #[arg(long, value_name = "N", env = "VIRTEST_REPEAT", allow_hyphen_values = true, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Keep a failed test's VM running before its cleanup, print how to
    /// get in (ssh, QMP, `virtest ssh`), and wait for Enter or Ctrl-C.
    #[arg(long)]
    pause_on_failure: bool,
}

pub fn list(args: ListArgs) -> CliResult {
    if args.parameters {
        for known in virtest_harness::params::KNOWN {
            let default = if known.default.is_empty() {
                "-"
            } else {
                known.default
            };
            println!("{:<22} {:<6} {}", known.name, default, known.help);
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
    let mut options = JobOptions::new();
    if let Some(dir) = args.results_dir {
        options.results_dir = dir;
    }
    if let Some(n) = args.max_parallel {
        options.max_parallel = n;
    }
    options.retries = args.retries.unwrap_or(0);
    options.repeat = args.repeat.unwrap_or(1);
    options.pause_on_failure = args.pause_on_failure;
    Ok(runner::run_and_report(&builtin::tests(), planned, &options))
}
