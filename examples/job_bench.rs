//! A job of 4 boot tests run one at a time, then two at a time: wall
//! time of each and their ratio (target: ≤ 0.6 on two cores). Prints
//! medians of several runs.
//!
//! ```sh
//! cargo run --release --example job_bench [RUNS]
//! ```

mod common;

use std::time::Instant;

use virtest::builtin;
use virtest::harness::params::ParamSources;
use virtest::harness::runner::{self, Filter, JobOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = common::runs(3)?;
    let defs = builtin::tests();
    let filter = Filter {
        patterns: vec!["boot".into()],
        exact: true,
        skip: vec![],
    };
    let (one, _) = runner::plan(&defs, &ParamSources::default(), &filter)?;
    let planned: Vec<_> = (1..=4)
        .map(|n| {
            let mut test = one[0].clone();
            test.name = format!("boot-{n}");
            test
        })
        .collect();
    let results = tempfile::tempdir()?;
    let mut medians = Vec::new();
    for parallel in [1, 2] {
        let options = JobOptions {
            results_dir: results.path().to_path_buf(),
            max_parallel: parallel,
            ..JobOptions::new()
        };
        let mut walls = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let job = runner::run_job(&defs, planned.clone(), &options).await?;
            if !job.results.success() {
                return Err(format!("the job failed: {}", job.dir.display()).into());
            }
            walls.push(start.elapsed().as_secs_f64());
        }
        let median = common::median(&walls);
        println!("4 boot tests, --max-parallel {parallel}: {median:.2} s (runs: {walls:.2?})");
        medians.push(median);
    }
    println!(
        "ratio parallel/serial: {:.2} (target ≤ 0.60)",
        medians[1] / medians[0]
    );
    Ok(())
}
