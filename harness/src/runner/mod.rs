//! The runner: plans the tests (filters × variants), runs them in
//! parallel with their timeouts, stops them on Ctrl-C or SIGTERM (their
//! cleanup still runs), and writes the job's results as it goes.

mod guests;
mod one;
mod panics;
mod timeouts;

pub(crate) use one::{Interrupt, signalled};

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

use crate::logging::{LogLayer, Phase};
use crate::params::{ParamError, ParamSources, Params};
use crate::progress::Progress;
use crate::results::{self, JobResults, TestRecord};
use crate::status::Status;
use crate::test::TestDef;

/// Which tests to run, as libtest selects them.
///
/// ```
/// use virtest_harness::runner::Filter;
/// let filter = Filter { patterns: vec!["boot".into()], exact: true, skip: vec![] };
/// assert!(filter.matches("boot") && filter.matches("boot@cpus=2"));
/// assert!(!filter.matches("reboot"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Run tests whose name contains one of these (all when empty).
    pub patterns: Vec<String>,
    /// Patterns must equal the whole name, or the test's name without
    /// its variant (`boot` selects `boot@migration_mode=tcp`).
    pub exact: bool,
    /// Leave out tests whose name contains one of these.
    pub skip: Vec<String>,
}

impl Filter {
    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        let hit = |p: &String| {
            if self.exact {
                name == p || name.split('@').next() == Some(p.as_str())
            } else {
                name.contains(p.as_str())
            }
        };
        (self.patterns.is_empty() || self.patterns.iter().any(hit))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

/// One test run the job will do: a test and one variant of the params.
#[derive(Debug, Clone)]
pub struct Planned {
    /// `boot`, or `migration@migration_mode=fd` for a variant.
    pub name: String,
    /// The test's index among the definitions.
    pub def: usize,
    /// Its parameters.
    pub params: Params,
}

/// Every (test, variant) pair `filter` selects, in order.
pub fn plan(
    defs: &[TestDef],
    sources: &ParamSources,
    filter: &Filter,
) -> Result<(Vec<Planned>, Vec<String>), ParamError> {
    let (variants, warnings) = sources.variants()?;
    let mut planned = Vec::new();
    for (def, test) in defs.iter().enumerate() {
        for variant in &variants {
            let name = if variant.name.is_empty() {
                test.name().to_string()
            } else {
                format!("{}@{}", test.name(), variant.name)
            };
            if filter.matches(&name) {
                planned.push(Planned {
                    name,
                    def,
                    params: variant.params.clone(),
                });
            }
        }
    }
    Ok((planned, warnings))
}

/// Each of `planned` `times` times in a row, named `boot@repeat=2` (or
/// `migration@migration_mode=tcp,repeat=2`); unchanged when once.
///
/// ```
/// # use virtest_harness::{Params, runner::{Planned, repeated}};
/// let boot = Planned { name: "boot".into(), def: 0, params: Params::default() };
/// let names: Vec<_> = repeated(vec![boot], 2).into_iter().map(|(p, _)| p.name).collect();
/// assert_eq!(names, ["boot@repeat=1", "boot@repeat=2"]);
/// ```
pub fn repeated(planned: Vec<Planned>, times: u32) -> Vec<(Planned, Option<String>)> {
    if times <= 1 {
        return planned.into_iter().map(|plan| (plan, None)).collect();
    }
    let mut runs = Vec::new();
    for plan in planned {
        let joint = if plan.name.contains('@') { ',' } else { '@' };
        for k in 1..=times {
            let name = format!("{}{joint}repeat={k}", plan.name);
            runs.push((
                Planned {
                    name,
                    ..plan.clone()
                },
                Some(plan.name.clone()),
            ));
        }
    }
    runs
}

/// How a job runs.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Where job directories go.
    pub results_dir: PathBuf,
    /// How many tests run at once.
    pub max_parallel: usize,
    /// How many times a test that did not succeed runs again (a test
    /// that passes on a retry is reported flaky).
    pub retries: u32,
    /// How many times each test runs (`boot@repeat=1` ... `boot@repeat=N`
    /// when more than once), to hunt a flaky one.
    pub repeat: u32,
    /// Keep a failed test's VM running before its cleanup, say how to
    /// get in, and wait for Enter (or Ctrl-C).
    pub pause_on_failure: bool,
}

impl JobOptions {
    /// `$VIRTEST_RESULTS`, else `job-results` under virtest's cache
    /// directory; as many tests at once as the machine has cores.
    pub fn new() -> JobOptions {
        let results_dir = std::env::var_os("VIRTEST_RESULTS")
            .map(PathBuf::from)
            .or_else(|| {
                virtest_guest::cache::default_home()
                    .ok()
                    .map(|h| h.join("job-results"))
            })
            .unwrap_or_else(|| PathBuf::from("job-results"));
        JobOptions {
            results_dir,
            max_parallel: default_parallelism(),
            retries: 0,
            repeat: 1,
            pause_on_failure: false,
        }
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions::new()
    }
}

/// As many tests as there are cores: each guest keeps one busy under TCG.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why a job could not run.
#[derive(Debug, Error)]
pub enum RunError {
    /// The results directory cannot be written.
    #[error(
        "cannot write job results under `{path}` (choose another with --results-dir or VIRTEST_RESULTS)"
    )]
    ResultsDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A guest the tests use could not be built or its image fetched.
    #[error("preparing the guests of the tests")]
    Guest(#[source] virtest_guest::Error),
}

/// A finished job: its directory and results.
#[derive(Debug)]
pub struct Job {
    /// `job-<time>-<id>/`.
    pub dir: PathBuf,
    /// What `results.json` holds.
    pub results: JobResults,
}

/// Runs `planned` tests of `defs` as one job, and writes its results.
pub async fn run_job(
    defs: &[TestDef],
    planned: Vec<Planned>,
    options: &JobOptions,
) -> Result<Job, RunError> {
    let unwritable = |source| RunError::ResultsDir {
        path: options.results_dir.clone(),
        source,
    };
    let (dir, job_id) = results::create_job_dir(&options.results_dir).map_err(unwritable)?;
    let job_log = dir.join("job.log");
    let file = std::fs::File::create(&job_log).map_err(unwritable)?;
    let (layer, sinks) = LogLayer::new(file);
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    guests::prepare(&planned)
        .with_subscriber(dispatch.clone())
        .await?;
    let mut planned = planned;
    timeouts::resolve(&mut planned)
        .with_subscriber(dispatch.clone())
        .await;
    let start = results::now();
    JobResults::partial(&job_id, job_log.clone(), start, Vec::new(), planned.len())
        .write(&dir)
        .map_err(unwritable)?;
    let planned = repeated(planned, options.repeat);
    let total = planned.len();
    let progress = Progress::new(total);
    let ticker = progress.spawn_ticker();
    let (interrupt_tx, interrupt) = watch::channel(None::<&'static str>);
    let (hurry_tx, hurry) = watch::channel(None::<&'static str>);
    let signals = tokio::spawn(one::forward_signals(interrupt_tx, hurry_tx));
    let slots = Arc::new(Semaphore::new(options.max_parallel.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    async {
        tracing::info!(job = %job_id, tests = total, max_parallel = options.max_parallel, dir = %dir.display(), "job starts");
    }
    .with_subscriber(dispatch.clone())
    .await;
    let runs: Vec<one::TestRun> = planned
        .into_iter()
        .enumerate()
        .map(|(index, (plan, repeat_of))| {
            let n = index + 1;
            one::TestRun {
                n,
                dir: dir
                    .join("test-results")
                    .join(format!("{n}-{}", dir_name(&plan.name))),
                name: plan.name,
                params: plan.params,
                make: defs[plan.def].maker(),
                repeat_of,
            }
        })
        .collect();
    let retries = options.retries;
    let pauser = options
        .pause_on_failure
        .then(|| Arc::new(crate::pause::Pauser::new(progress.clone())));
    // One task hands out the slots, so tests start in the planned order.
    let dispatcher = {
        let progress = progress.clone();
        let dispatch = dispatch.clone();
        tokio::spawn(async move {
            for run in runs {
                let slot = slots.clone().acquire_owned().await.expect("never closed");
                let interrupt = interrupt.clone();
                let hurry = hurry.clone();
                let done_tx = done_tx.clone();
                let progress = progress.clone();
                let sinks = sinks.clone();
                let dispatch = dispatch.clone();
                let pauser = pauser.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let n = run.n;
                    let record = if let Some(signal) = *interrupt.borrow() {
                        one::not_started(&run, signal)
                    } else {
                        let attempts = Attempts {
                            retries,
                            interrupt,
                            hurry,
                            sinks,
                            progress: progress.clone(),
                            dispatch,
                            pauser,
                        };
                        attempts.run(run).await
                    };
                    // Said before the slot is freed, so with one slot a
                    // test's result comes before the next one starts.
                    progress.finished(n, &record);
                    let _ = done_tx.send((n, record));
                });
            }
        })
    };
    let mut records: Vec<(usize, TestRecord)> = Vec::new();
    while let Some((n, record)) = done_rx.recv().await {
        records.push((n, record));
        records.sort_by_key(|(n, _)| *n);
        let so_far = records.iter().map(|(_, r)| r.clone()).collect();
        let partial = JobResults::partial(&job_id, job_log.clone(), start, so_far, total);
        if let Err(e) = partial.write(&dir) {
            eprintln!("virtest: writing results failed: {e}");
        }
    }
    let _ = dispatcher.await;
    signals.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    progress.finish();
    let results = JobResults::new(
        &job_id,
        job_log,
        start,
        records.into_iter().map(|(_, r)| r).collect(),
    );
    results.write(&dir).map_err(unwritable)?;
    let summary = results.summary();
    async { tracing::info!("{summary}") }
        .with_subscriber(dispatch)
        .await;
    Ok(Job { dir, results })
}

/// Running one test, and again while it fails and retries are left.
struct Attempts {
    retries: u32,
    interrupt: one::Interrupt,
    hurry: one::Interrupt,
    sinks: crate::logging::Sinks,
    progress: Progress,
    dispatch: tracing::Dispatch,
    pauser: Option<Arc<crate::pause::Pauser>>,
}

impl Attempts {
    /// The last run's record, with the failed runs before it; a retry
    /// runs in `<dir>-retry<k>`, and none after the job was interrupted.
    async fn run(self, first: one::TestRun) -> TestRecord {
        let mut retried = Vec::new();
        let base = first.dir.clone();
        let mut run = first;
        loop {
            let next = (retried.len() < self.retries as usize).then(|| one::TestRun {
                n: run.n,
                dir: retry_dir(&base, retried.len() + 1),
                name: run.name.clone(),
                params: run.params.clone(),
                make: run.make.clone(),
                repeat_of: run.repeat_of.clone(),
            });
            let (n, phase) = (run.n, Phase::default());
            self.progress.started(n, &run.name, phase.clone());
            let mut record = run
                .execute(
                    self.interrupt.clone(),
                    self.hurry.clone(),
                    self.sinks.clone(),
                    phase,
                    self.pauser.clone(),
                )
                .with_subscriber(self.dispatch.clone())
                .await;
            let interrupted = self.interrupt.borrow().is_some();
            match next {
                Some(again) if !record.status.is_success() && !interrupted => {
                    self.progress
                        .retrying(n, &record, retried.len() + 1, self.retries);
                    retried.push(record.as_attempt());
                    run = again;
                }
                _ => {
                    record.flaky = !retried.is_empty() && record.status.is_success();
                    record.retried = retried;
                    return record;
                }
            }
        }
    }
}

/// Where retry `k` of the test in `dir` runs: `<dir>-retry<k>`.
fn retry_dir(dir: &std::path::Path, k: usize) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|f| f.to_os_string())
        .unwrap_or_default();
    name.push(format!("-retry{k}"));
    dir.with_file_name(name)
}

/// SKIP and CANCEL are libtest's "ignored", as JUnit counts them skipped.
fn is_ignored(status: Status) -> bool {
    matches!(status, Status::Skip | Status::Cancel)
}

/// Passed, failed and ignored, as libtest's summary line counts them.
fn libtest_counts(results: &JobResults) -> (usize, usize, usize) {
    let count =
        |keep: &dyn Fn(Status) -> bool| results.tests.iter().filter(|t| keep(t.status)).count();
    let ignored = count(&|s| is_ignored(s));
    let passed = count(&|s| s.is_success() && !is_ignored(s));
    (passed, results.tests.len() - passed - ignored, ignored)
}

/// A test name made safe as a directory name: other characters become
/// `_`, and a name past [`DIR_NAME_MAX`] (a long variant value) keeps
/// its start and ends with a hash of the whole, so it stays unique and
/// under the 255 bytes a file name may have.
fn dir_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '=' | '.' | ',' | '@' => c,
            _ => '_',
        })
        .collect();
    if safe.len() <= DIR_NAME_MAX {
        return safe;
    }
    let hash = std::hash::BuildHasher::hash_one(
        &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
        name,
    );
    format!("{}-{hash:016x}", &safe[..DIR_NAME_MAX - 17])
}

/// The longest test directory name (past its `N-`).
const DIR_NAME_MAX: usize = 100;

/// Runs a job on a new runtime and prints its results the way people and
/// `cargo test` read them; the exit code says whether every test passed.
pub fn run_and_report(
    defs: &[TestDef],
    planned: Vec<Planned>,
    options: &JobOptions,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let count = planned.len();
    println!(
        "\nrunning {count} test{}",
        if count == 1 { "" } else { "s" }
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.max_parallel.clamp(2, 16))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let job = match runtime.block_on(run_job(defs, planned, options)) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            return ExitCode::from(2);
        }
    };
    // Let anything a test left behind (VM drops) finish before exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    let results = &job.results;
    for test in &results.tests {
        let verdict = match test.status {
            status if is_ignored(status) => "ignored",
            status if status.is_success() => "ok",
            _ => "FAILED",
        };
        println!("test {} ... {verdict}", test.name);
    }
    println!("\n{}", results.summary());
    println!("JOB LOG    : {}", results.debuglog.display());
    println!("JOB TIME   : {:.2} s", results.time);
    let (passed, failed, skipped) = libtest_counts(results);
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {skipped} ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        if results.success() { "ok" } else { "FAILED" },
        results.time
    );
    if results.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record_for_tests;

    #[test]
    fn a_long_variant_makes_a_short_directory_name_of_its_own() {
        let long = |end: &str| format!("migration@note={}{end}", "x".repeat(400));
        let (a, b) = (dir_name(&long("a")), dir_name(&long("b")));
        // Under the 255 bytes a file name may have, with room for `N-`.
        assert!(a.len() <= 120 && b.len() <= 120, "{} {}", a.len(), b.len());
        assert_ne!(a, b);
        assert!(a.starts_with("migration@note=xxx"), "{a}");
        assert_eq!(dir_name("boot@cpus=2"), "boot@cpus=2");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(format!("1234-{a}"))).unwrap();
    }

    #[test]
    fn libtest_counts_skips_and_cancels_as_junit_does() {
        let tests = [
            Status::Pass,
            Status::Warn,
            Status::Skip,
            Status::Cancel,
            Status::Fail,
        ]
        .into_iter()
        .map(|status| record_for_tests(status, Some("why")))
        .collect();
        let results = JobResults::new("abc", "/r/job.log".into(), 0.0, tests);
        assert_eq!(libtest_counts(&results), (2, 1, 2));
        assert!(
            results.junit().contains("skipped=\"2\""),
            "{}",
            results.junit()
        );
    }
}
