//! What the harness's tests add to the test kit: a job run in a
//! temporary results directory. The root's end-to-end tests include this
//! file too.

use virtest_harness::TestDef;
use virtest_harness::params::ParamSources;
use virtest_harness::runner::{self, Filter, Job, JobOptions};

/// Runs `defs` as one job with the parameters `assignments`
/// (`key=value`), `max_parallel` tests at once, its results in a new
/// temporary directory, returned with the job (the job's files go with
/// it).
pub async fn run_job(
    defs: &[TestDef],
    assignments: &[&str],
    max_parallel: usize,
) -> (tempfile::TempDir, Job) {
    let tmp = tempfile::tempdir().unwrap();
    let sources = ParamSources {
        file: None,
        assignments: assignments.iter().map(|a| a.to_string()).collect(),
    };
    let (planned, _) = runner::plan(defs, &sources, &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: tmp.path().to_path_buf(),
        max_parallel,
        ..JobOptions::new()
    };
    let job = runner::run_job(defs, planned, &options).await.unwrap();
    (tmp, job)
}
