//! Flaky tests: `--retries N` runs a failing test again and reports one
//! that then passes as flaky (progress, `results.json`, JUnit);
//! `--repeat N` runs each test N times and counts its passes.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use virtest::harness::params::ParamSources;
use virtest::harness::results::JobResults;
use virtest::harness::runner::{self, Filter, Job, JobOptions};
use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// Runs of [`FailsOnce`] so far.
static FAILS_ONCE_RUNS: AtomicU32 = AtomicU32::new(0);

/// Boots and logs in; fails its first run only.
#[derive(Default)]
struct FailsOnce;
impl VirtTest for FailsOnce {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let run = FAILS_ONCE_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        ensure!(run > 1, "run {run} fails");
        Ok(())
    }
}

/// Always fails, without a VM.
#[derive(Default)]
struct AlwaysFails;
impl VirtTest for AlwaysFails {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        Err(fail("it never works"))
    }
}

/// Runs of [`FailsEvenRuns`] so far.
static EVEN_RUNS: AtomicU32 = AtomicU32::new(0);

/// Fails its 2nd, 4th... run.
#[derive(Default)]
struct FailsEvenRuns;
impl VirtTest for FailsEvenRuns {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        let run = EVEN_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        ensure!(run % 2 == 1, "run {run} is even");
        Ok(())
    }
}

async fn job(defs: Vec<TestDef>, retries: u32, repeat: u32) -> (tempfile::TempDir, Job) {
    let tmp = tempfile::tempdir().unwrap();
    let (planned, _) = runner::plan(&defs, &ParamSources::default(), &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: tmp.path().to_path_buf(),
        max_parallel: 1,
        retries,
        repeat,
        ..JobOptions::new()
    };
    let job = runner::run_job(&defs, planned, &options).await.unwrap();
    (tmp, job)
}

/// The children of test `name`'s `testcase` in the job's JUnit, as
/// (tag, message) pairs.
fn junit_children(job: &Job, name: &str) -> Vec<(String, String)> {
    let xml = std::fs::read_to_string(job.dir.join("results.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
        .unwrap_or_else(|| panic!("no testcase {name} in {xml}"));
    case.children()
        .filter(|n| n.is_element())
        .map(|n| {
            let tag = n.tag_name().name().to_string();
            (tag, n.attribute("message").unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_passes_on_a_retry_is_reported_flaky() {
    let _slot = common::guest_slots(1);
    common::guest();
    let defs = vec![
        TestDef::new("FailsOnce", FailsOnce::default),
        TestDef::new("AlwaysFails", AlwaysFails::default),
    ];
    let (_tmp, job) = job(defs, 2, 1).await;
    let results = &job.results;

    let flaky = &results.tests[0];
    assert_eq!(
        (flaky.name.as_str(), flaky.status),
        ("fails_once", Status::Pass)
    );
    assert!(flaky.flaky);
    assert_eq!(flaky.retried.len(), 1);
    let first = &flaky.retried[0];
    assert_eq!(first.status, Status::Fail);
    assert_eq!(first.fail_reason.as_deref(), Some("run 1 fails"));
    // Each run has its own directory; the failed one keeps its bundle.
    assert!(first.logdir.join("debug.log").is_file());
    assert!(first.logdir.join("failure/screen.png").is_file());
    assert_eq!(
        flaky.logdir.file_name().unwrap().to_string_lossy(),
        format!(
            "{}-retry1",
            first.logdir.file_name().unwrap().to_string_lossy()
        )
    );
    assert!(flaky.logdir.join("debug.log").is_file());
    assert_eq!(
        junit_children(&job, "fails_once"),
        [("flakyFailure".to_string(), "run 1 fails".to_string())]
    );

    let failing = &results.tests[1];
    assert_eq!(failing.status, Status::Fail);
    assert!(!failing.flaky);
    assert_eq!(failing.retried.len(), 2, "the first run and one retry");
    assert!(failing.logdir.ends_with("2-always_fails-retry2"));
    let children = junit_children(&job, "always_fails");
    let tags: Vec<&str> = children.iter().map(|(tag, _)| tag.as_str()).collect();
    assert_eq!(
        tags,
        ["failure", "rerunFailure", "rerunFailure", "system-err"]
    );

    assert_eq!((results.total, results.pass, results.failures), (2, 1, 1));
    assert_eq!(results.flaky, 1);
    assert!(
        results
            .summary()
            .contains("FLAKY      : 1 (passed on a retry): fails_once"),
        "{}",
        results.summary()
    );
    let saved = JobResults::load(&job.dir).unwrap();
    assert_eq!(&saved, results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_runs_each_test_n_times_and_counts_its_passes() {
    let defs = vec![TestDef::new("FailsEvenRuns", FailsEvenRuns::default)];
    let (_tmp, job) = job(defs, 0, 5).await;
    let names: Vec<&str> = job.results.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        (1..=5)
            .map(|k| format!("fails_even_runs@repeat={k}"))
            .collect::<Vec<_>>()
    );
    let statuses: Vec<Status> = job.results.tests.iter().map(|t| t.status).collect();
    use Status::{Fail, Pass};
    assert_eq!(statuses, [Pass, Fail, Pass, Fail, Pass]);
    assert_eq!(job.results.repeats.len(), 1);
    let count = &job.results.repeats[0];
    assert_eq!(
        (count.name.as_str(), count.runs, count.passed),
        ("fails_even_runs", 5, 3)
    );
    assert!(
        job.results
            .summary()
            .contains("REPEATED   : fails_even_runs: passed 3 of 5 runs")
    );
}

/// The command line: `--repeat` with variants runs real guests and names
/// each run, one at a time with each result before the next start; a
/// negative count is refused before anything runs.
#[test]
fn the_command_line_takes_retries_and_repeat() {
    let _slots = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let virtest = || Command::new(env!("CARGO_BIN_EXE_virtest"));
    for bad in [["--retries", "-1"], ["--repeat", "0"]] {
        let output = virtest()
            .args(["run", "boot"])
            .args(bad)
            .arg("--results-dir")
            .arg(tmp.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{}' for '{} <N>'", bad[1], bad[0])),
            "{stderr}"
        );
    }
    assert!(!tmp.path().join("latest").exists(), "a job ran");

    let params = tmp.path().join("params.toml");
    std::fs::write(&params, "cpus = [1, 2]\n").unwrap();
    let output = virtest()
        .args(["run", "boot", "--repeat", "2", "--max-parallel", "1"])
        .arg("--params-file")
        .arg(&params)
        .arg("--results-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let progress: Vec<&str> = stdout.lines().filter(|l| l.starts_with(" (")).collect();
    assert_eq!(progress.len(), 8, "{stdout}");
    for (k, pair) in progress.chunks(2).enumerate() {
        let n = format!(" ({}/4) ", k + 1);
        assert!(
            pair[0].starts_with(&n) && pair[0].ends_with(": STARTED"),
            "{stdout}"
        );
        assert!(
            pair[1].starts_with(&n) && pair[1].contains(": PASS ("),
            "{stdout}"
        );
    }
    for name in ["boot@cpus=1", "boot@cpus=2"] {
        assert!(
            stdout.contains(&format!("REPEATED   : {name}: passed 2 of 2 runs")),
            "{stdout}"
        );
        for k in 1..=2 {
            assert!(
                stdout.contains(&format!("test {name},repeat={k} ... ok")),
                "{stdout}"
            );
        }
    }
}
