//! `virtest results [JOB]`: a job's summary, from its results.json.

use std::path::PathBuf;
use std::process::ExitCode;

use virtest_harness::results::JobResults;
use virtest_harness::runner::JobOptions;

use super::CliResult;

/// `virtest results`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A job directory, or a job id (or its start) under the results
    /// directory; the latest job when none.
    job: Option<String>,
    /// Where job directories are (as for `virtest run`).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Print the path of the job's `results.html` (to open in a browser)
    /// instead of the summary.
    #[arg(long)]
    open: bool,
}

pub fn run(args: Args) -> CliResult {
    let results_dir = args
        .results_dir
        .unwrap_or_else(|| JobOptions::new().results_dir);
    let dir = find_job(&results_dir, args.job.as_deref())?;
    let results = JobResults::load(&dir)
        .map_err(|e| format!("cannot read `{}`: {e}", dir.join("results.json").display()))?;
    if args.open {
        let page = std::fs::canonicalize(dir.join("results.html")).map_err(|e| {
            format!(
                "job `{}` has no results.html ({e}): a job of a virtest before it had one",
                dir.display()
            )
        })?;
        println!("{}", page.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!("JOB ID     : {}", results.job_id);
    println!("JOB DIR    : {}", dir.display());
    for test in &results.tests {
        let reason = test
            .fail_reason
            .as_deref()
            .map(|r| format!("  {}", r.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!(
            " {:<12} {:<40} {:>8.2} s{reason}",
            test.status.as_str(),
            test.id,
            test.time
        );
    }
    println!("{}", results.summary());
    println!("JOB TIME   : {:.2} s", results.time);
    if !results.complete {
        println!(
            "INCOMPLETE : the job did not end (killed, or still running): {} of its {} tests have no result",
            results.missing(),
            results.planned
        );
    }
    Ok(if results.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The job directory `job` names: a path, `latest`, or an id.
pub(super) fn find_job(
    results_dir: &std::path::Path,
    job: Option<&str>,
) -> Result<PathBuf, String> {
    let job = job.unwrap_or("latest");
    let direct = PathBuf::from(job);
    if direct.join("results.json").exists() {
        return Ok(direct);
    }
    // A path (not an id, not `latest`) names itself in every error.
    if job.contains('/') {
        return Err(match direct.is_dir() {
            true => format!(
                "`{job}` is not a job directory: it has no results.json (give a job's directory, id or `latest`)"
            ),
            false => format!("`{job}` does not exist (give a job's directory, id or `latest`)"),
        });
    }
    let latest = results_dir.join(job);
    if latest.join("results.json").exists() {
        return Ok(latest);
    }
    let entries = std::fs::read_dir(results_dir)
        .map_err(|e| format!("cannot read `{}`: {e}", results_dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("job-") && n.ends_with(job) || n.contains(job))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("no job `{job}` under `{}`", results_dir.display())),
        n => Err(format!(
            "`{job}` matches {n} jobs under `{}`",
            results_dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::find_job;

    #[test]
    fn a_job_path_that_does_not_exist_is_named_not_the_results_directory() {
        let results = tempfile::tempdir().unwrap();
        for missing in ["/no/such/results/job-1", "./no-such-dir", "../gone/latest"] {
            let error = find_job(results.path(), Some(missing)).unwrap_err();
            assert!(error.contains(missing), "{error}");
            assert!(
                !error.contains(&*results.path().to_string_lossy()),
                "{error}"
            );
        }
        // An id is still looked up in the results directory, named then.
        let error = find_job(results.path(), Some("abc1234")).unwrap_err();
        assert!(
            error.contains(&*results.path().to_string_lossy()),
            "{error}"
        );
    }
}
