//! The entry point of a `virtest::main!` binary: it speaks libtest's
//! command line (`--list --format terse`, `--exact`, filters,
//! `--nocapture`, `--test-threads`), so `cargo test` and `cargo nextest
//! run` drive it, and it takes virtest's own options too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::job_args::JobArgs;
use crate::params::ParamSources;
use crate::runner::{self, Filter};
use crate::test::TestDef;

/// libtest's options, and virtest's.
#[derive(Debug, Parser)]
#[command(about = "A virtest test binary (libtest-compatible command line)")]
struct Args {
    /// Run tests whose name contains one of these.
    filters: Vec<String>,
    /// List the tests instead of running them.
    #[arg(long)]
    list: bool,
    /// Filters match whole names.
    #[arg(long)]
    exact: bool,
    /// Leave out tests whose name contains this.
    #[arg(long)]
    skip: Vec<String>,
    /// Run only ignored tests (virtest has none).
    #[arg(long)]
    ignored: bool,
    /// Run ignored tests too.
    #[arg(long)]
    include_ignored: bool,
    /// Accepted for libtest compatibility: output is never captured.
    #[arg(long)]
    nocapture: bool,
    /// Accepted for libtest compatibility.
    #[arg(long)]
    show_output: bool,
    /// Tests at once (as --max-parallel).
    #[arg(long)]
    test_threads: Option<usize>,
    /// `pretty` or `terse` (listing).
    #[arg(long)]
    format: Option<String>,
    /// Accepted for libtest compatibility.
    #[arg(long, short)]
    quiet: bool,
    /// Accepted for libtest compatibility.
    #[arg(long)]
    color: Option<String>,
    /// Accepted for libtest compatibility (`-Z unstable-options`).
    #[arg(short = 'Z')]
    unstable: Vec<String>,
    /// Benchmarks: virtest has none.
    #[arg(long)]
    bench: bool,
    /// A parameter, `key=value` (repeatable).
    #[arg(short = 'p', long = "param")]
    params: Vec<String>,
    /// A params file (TOML or JSON); also `$VIRTEST_PARAMS`.
    #[arg(long, env = "VIRTEST_PARAMS")]
    params_file: Option<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

/// Runs a test binary made of `defs` with the process's arguments.
pub fn main(defs: Vec<TestDef>) -> ExitCode {
    let args = Args::parse();
    let sources = ParamSources {
        file: args.params_file.clone(),
        assignments: args.params.clone(),
    };
    let filter = Filter {
        patterns: args.filters.clone(),
        exact: args.exact,
        skip: args.skip.clone(),
    };
    let (planned, warnings) = match runner::plan(&defs, &sources, &filter) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    // virtest has no ignored tests and no benchmarks.
    let planned = if (args.ignored && !args.include_ignored) || args.bench {
        Vec::new()
    } else {
        planned
    };
    if args.list {
        for test in &planned {
            println!("{}: test", test.name);
        }
        if args.format.as_deref() != Some("terse") {
            println!("\n{} tests, 0 benchmarks", planned.len());
        }
        return ExitCode::SUCCESS;
    }
    let mut options = args.job.options();
    if let (None, Some(n)) = (args.job.max_parallel, args.test_threads) {
        options.max_parallel = n;
    }
    runner::run_and_report(&defs, planned, &options)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Args;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn nextest_invocations_parse() {
        let list = Args::parse_from(["bin", "--list", "--format", "terse", "--ignored"]);
        assert!(list.list && list.ignored);
        let run = Args::parse_from(["bin", "boot", "--exact", "--nocapture", "--test-threads=1"]);
        assert_eq!(run.filters, ["boot"]);
        assert!(run.exact && run.nocapture);
        assert_eq!(run.test_threads, Some(1));
    }

    #[test]
    fn retries_repeat_and_pause_parse_and_bad_counts_are_refused() {
        let args = Args::parse_from(["bin", "--retries", "2", "--repeat=3", "--pause-on-failure"]);
        assert_eq!((args.job.retries, args.job.repeat), (Some(2), Some(3)));
        assert!(args.job.pause_on_failure);
        for bad in [
            &["--retries", "-1"][..],
            &["--repeat", "0"],
            &["--retries", "x"],
        ] {
            let error = Args::try_parse_from(["bin"].iter().chain(bad)).unwrap_err();
            assert!(error.to_string().contains("invalid value"), "{error}");
        }
    }
}
