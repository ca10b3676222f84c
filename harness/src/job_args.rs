//! The command-line options of a job, shared by `virtest run` and every
//! `main!` test binary.

use std::path::PathBuf;

use crate::runner::JobOptions;

/// How to run a job, as options (flatten it into a clap parser).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobArgs {
    /// Tests at once (default: the number of cores).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Where job directories go (default: `$VIRTEST_RESULTS`, else
    /// `job-results` in virtest's cache).
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Run a test that fails again, up to N times; one that then passes
    /// is reported flaky.
    #[arg(
        long,
        value_name = "N",
        env = "VIRTEST_RETRIES",
        allow_hyphen_values = true
    )]
    pub retries: Option<u32>,
    /// Run each test N times, to hunt a flaky one; the summary counts
    /// its passes.
    #[arg(
        long,
        value_name = "N",
        env = "VIRTEST_REPEAT",
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub repeat: Option<u32>,
    /// Keep a failed test's VMs running before its cleanup, print how to
    /// get in (ssh, console, QMP), and wait for Enter or Ctrl-C.
    #[arg(long)]
    pub pause_on_failure: bool,
}

impl JobArgs {
    /// The job's options: these, over the defaults of [`JobOptions::new`].
    pub fn options(&self) -> JobOptions {
        let mut options = JobOptions::new();
        if let Some(dir) = &self.results_dir {
            options.results_dir = dir.clone();
        }
        if let Some(n) = self.max_parallel {
            options.max_parallel = n;
        }
        options.retries = self.retries.unwrap_or(0);
        options.repeat = self.repeat.unwrap_or(1);
        options.pause_on_failure = self.pause_on_failure;
        options
    }
}
