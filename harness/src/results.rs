//! A job's results directory, avocado's layout: `job-<time>-<id>/` with
//! `results.json`, `results.xml` (JUnit), `job.log`, and per test
//! `test-results/<n>-<name>/`; a `latest` link beside the jobs. Files are
//! written atomically (a temporary file, then a rename).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::status::Status;

mod junit;

/// One test's record, with avocado's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    /// `<n>-<name>`, the name of its directory.
    pub id: String,
    /// The test's name with its variant (`migration@migration_mode=fd`).
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Why, unless it passed.
    pub fail_reason: Option<String>,
    /// Its directory.
    pub logdir: PathBuf,
    /// Its `debug.log`.
    pub logfile: PathBuf,
    /// Start, in seconds since the epoch.
    pub start: f64,
    /// End, in seconds since the epoch.
    pub end: f64,
    /// Duration, seconds.
    pub time: f64,
    /// Its parameters, secrets redacted.
    pub params: BTreeMap<String, String>,
    /// Warnings it recorded.
    pub whiteboard: String,
    /// Disk overlays kept after the test (a failed test keeps its VM's,
    /// to look into).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_disks: Vec<PathBuf>,
    /// How the test's VM last started: `fresh`, `made snapshot KEY` or
    /// `from snapshot KEY` (none when it never powered on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_start: Option<String>,
    /// The failure bundle's files: what the VM showed when the test
    /// failed (screen, console tail, QMP events, the guest's view).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<PathBuf>,
    /// Earlier runs of this test that failed, oldest first, when
    /// `--retries` ran it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<Attempt>,
    /// It passed only on a retry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
    /// The test this run repeats, under `--repeat` (`boot` for
    /// `boot@repeat=2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<String>,
}

/// A run of a test that failed and was retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// How it ended.
    pub status: Status,
    /// Why.
    pub fail_reason: Option<String>,
    /// Its directory (`<n>-<name>-retry<k>` after the first).
    pub logdir: PathBuf,
    /// Duration, seconds.
    pub time: f64,
}

impl TestRecord {
    /// This run as an attempt that will be retried.
    pub fn as_attempt(&self) -> Attempt {
        Attempt {
            status: self.status,
            fail_reason: self.fail_reason.clone(),
            logdir: self.logdir.clone(),
            time: self.time,
        }
    }
}

/// How often a test `--repeat` ran passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatCount {
    /// The test (`boot`, or a variant's name).
    pub name: String,
    /// Its runs.
    pub runs: usize,
    /// Runs that succeeded.
    pub passed: usize,
}

/// A job's `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResults {
    /// The job's id.
    pub job_id: String,
    /// The job's `job.log`.
    pub debuglog: PathBuf,
    /// Start, seconds since the epoch.
    pub start: f64,
    /// Duration, seconds.
    pub time: f64,
    /// Tests counted.
    pub total: usize,
    /// PASS.
    pub pass: usize,
    /// FAIL.
    pub failures: usize,
    /// ERROR.
    pub errors: usize,
    /// SKIP.
    pub skip: usize,
    /// CANCEL.
    pub cancel: usize,
    /// WARN.
    pub warn: usize,
    /// INTERRUPTED.
    pub interrupt: usize,
    /// Tests that passed only on a retry (counted in `pass` or `warn`
    /// too).
    #[serde(default)]
    pub flaky: usize,
    /// Pass counts of the tests `--repeat` ran, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatCount>,
    /// How many tests the job planned (its `tests` fall short while it
    /// runs, or when it was killed).
    #[serde(default)]
    pub planned: usize,
    /// Whether the job ended and wrote its last results (false while it
    /// runs, and for good when it was killed).
    #[serde(default = "ended")]
    pub complete: bool,
    /// Every test, in order.
    pub tests: Vec<TestRecord>,
}

/// Results written before `complete` existed were written at the end.
fn ended() -> bool {
    true
}

impl JobResults {
    /// Counts the statuses of `tests`.
    pub fn new(job_id: &str, debuglog: PathBuf, start: f64, tests: Vec<TestRecord>) -> JobResults {
        let count = |status| tests.iter().filter(|t| t.status == status).count();
        JobResults {
            job_id: job_id.into(),
            debuglog,
            start,
            time: now() - start,
            total: tests.len(),
            pass: count(Status::Pass),
            failures: count(Status::Fail),
            errors: count(Status::Error),
            skip: count(Status::Skip),
            cancel: count(Status::Cancel),
            warn: count(Status::Warn),
            interrupt: count(Status::Interrupted),
            flaky: tests.iter().filter(|t| t.flaky).count(),
            repeats: repeat_counts(&tests),
            planned: tests.len(),
            complete: true,
            tests,
        }
    }

    /// The results so far of a job still running `planned` tests.
    pub fn partial(
        job_id: &str,
        debuglog: PathBuf,
        start: f64,
        tests: Vec<TestRecord>,
        planned: usize,
    ) -> JobResults {
        JobResults {
            planned,
            complete: false,
            ..JobResults::new(job_id, debuglog, start, tests)
        }
    }

    /// Tests the job planned but did not record: it was killed.
    pub fn missing(&self) -> usize {
        self.planned.saturating_sub(self.tests.len())
    }

    /// Whether the job ended and every test ended in a successful
    /// status.
    pub fn success(&self) -> bool {
        self.complete && self.tests.iter().all(|t| t.status.is_success())
    }

    /// Reads a job's `results.json`.
    pub fn load(job_dir: &Path) -> std::io::Result<JobResults> {
        let text = std::fs::read(job_dir.join("results.json"))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// The summary avocado prints, and, when there were any, the flaky
    /// tests and the pass counts of repeated ones.
    pub fn summary(&self) -> String {
        let mut summary = format!(
            "RESULTS    : PASS {} | ERROR {} | FAIL {} | SKIP {} | WARN {} | INTERRUPT {} | CANCEL {}",
            self.pass,
            self.errors,
            self.failures,
            self.skip,
            self.warn,
            self.interrupt,
            self.cancel
        );
        if self.flaky > 0 {
            let names: Vec<&str> = self
                .tests
                .iter()
                .filter(|t| t.flaky)
                .map(|t| t.name.as_str())
                .collect();
            let _ = write!(
                summary,
                "\nFLAKY      : {} (passed on a retry): {}",
                self.flaky,
                names.join(", ")
            );
        }
        for repeat in &self.repeats {
            let _ = write!(
                summary,
                "\nREPEATED   : {}: passed {} of {} runs",
                repeat.name, repeat.passed, repeat.runs
            );
        }
        summary
    }

    /// Writes `results.json`, `results.xml` and `results.html` into
    /// `job_dir`.
    pub fn write(&self, job_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&job_dir.join("results.json"), &json)?;
        write_atomic(&job_dir.join("results.xml"), self.junit().as_bytes())?;
        let html = crate::html::render(self, job_dir);
        write_atomic(&job_dir.join("results.html"), html.as_bytes())
    }
}

/// Runs and passes of each test `--repeat` ran, in the order they first
/// appear.
fn repeat_counts(tests: &[TestRecord]) -> Vec<RepeatCount> {
    let mut counts: Vec<RepeatCount> = Vec::new();
    for test in tests {
        let Some(name) = &test.repeat_of else {
            continue;
        };
        let at = match counts.iter().position(|c| &c.name == name) {
            Some(at) => at,
            None => {
                counts.push(RepeatCount {
                    name: name.clone(),
                    runs: 0,
                    passed: 0,
                });
                counts.len() - 1
            }
        };
        counts[at].runs += 1;
        counts[at].passed += usize::from(test.status.is_success());
    }
    counts
}

/// XML's five escapes (HTML's too), control characters dropped, and the
/// two other characters XML 1.0 forbids (U+FFFE, U+FFFF) replaced with
/// U+FFFD, so a file holding any text a guest printed still parses.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            '\u{FFFE}' | '\u{FFFF}' => out.push(char::REPLACEMENT_CHARACTER),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `path` through a temporary file beside it (uniquely named, so
/// two writers never share one) and a rename; on an error (a full disk,
/// say) the temporary file is removed. The file is readable by all, as
/// results are for people and CI.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::Builder::new()
        .prefix(".virtest-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir.unwrap_or(Path::new(".")))?;
    // Through the file itself: its errors keep their OS code (a full
    // disk is ENOSPC), which NamedTempFile's own writes wrap.
    tmp.as_file_mut().write_all(bytes)?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A new job directory under `results_dir`: `job-<YYYY-MM-DDTHH.MM.SS>-<id>`
/// (UTC), with `latest` pointing at it. Returns its path and id.
pub fn create_job_dir(results_dir: &Path) -> std::io::Result<(PathBuf, String)> {
    std::fs::create_dir_all(results_dir)?;
    let latest = results_dir.join("latest");
    // Replacing anything but our own link would lose it, or fail halfway.
    if let Ok(found) = std::fs::symlink_metadata(&latest)
        && !found.file_type().is_symlink()
    {
        let what = if found.is_dir() {
            "a directory"
        } else {
            "a file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "`{}` is {what}, not virtest's link to the latest job: move it away",
                latest.display()
            ),
        ));
    }
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut random = [0u8; 4];
    let filled = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
    assert_eq!(filled.ok(), Some(4), "the host's RNG fills a small buffer");
    let id = format!("{:07x}", u32::from_ne_bytes(random) & 0xfff_ffff);
    let dir = results_dir.join(format!("job-{}-{id}", timestamp(seconds)));
    std::fs::create_dir(&dir)?;
    let tmp = results_dir.join(format!(".latest-{id}"));
    let linked = std::fs::create_dir(dir.join("test-results"))
        .and_then(|()| std::os::unix::fs::symlink(dir.file_name().unwrap_or_default(), &tmp))
        .and_then(|()| std::fs::rename(&tmp, &latest));
    if let Err(e) = linked {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok((dir, id))
}

/// `YYYY-MM-DDTHH.MM.SS` for seconds since the epoch, UTC.
fn timestamp(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let day = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}.{:02}.{:02}",
        day / 3600,
        day / 60 % 60,
        day % 60
    )
}

/// A record of test `t<&>` ending in `status`, for unit tests.
#[cfg(test)]
pub(crate) fn record_for_tests(status: Status, reason: Option<&str>) -> TestRecord {
    TestRecord {
        id: "1-t".into(),
        name: "t<&>".into(),
        status,
        fail_reason: reason.map(String::from),
        logdir: "/r".into(),
        logfile: "/r/debug.log".into(),
        start: 0.0,
        end: 1.0,
        time: 1.0,
        params: BTreeMap::new(),
        whiteboard: String::new(),
        kept_disks: Vec::new(),
        vm_start: None,
        evidence: Vec::new(),
        retried: Vec::new(),
        flaky: false,
        repeat_of: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_did_not_end_is_incomplete_and_not_a_success() {
        let tests = vec![record_for_tests(Status::Pass, None)];
        let partial = JobResults::partial("abc", "/r/job.log".into(), now(), tests.clone(), 3);
        assert!(!partial.complete);
        assert_eq!(partial.missing(), 2);
        assert!(!partial.success(), "a killed job is not a success");
        let ended = JobResults::new("abc", "/r/job.log".into(), now(), tests);
        assert!(ended.complete && ended.success());
        // Results written before `complete` existed were written at the end.
        let mut old = serde_json::to_value(&ended).unwrap();
        old.as_object_mut().unwrap().remove("complete");
        let old: JobResults = serde_json::from_value(old).unwrap();
        assert!(old.complete);
    }

    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00.00.00");
        assert_eq!(timestamp(1_795_607_328), "2026-11-25T11.48.48");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00.00.00");
    }

    #[test]
    fn a_write_that_fails_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename cannot replace a directory that holds a file: the
        // write got as far as the temporary file.
        let target = dir.path().join("results.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"").unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["results.json"], "a temporary file was left");
    }

    #[test]
    fn job_dirs_get_a_latest_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, _) = create_job_dir(tmp.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (second, id) = create_job_dir(tmp.path()).unwrap();
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with(&id));
        let latest = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
        assert_eq!(latest, std::fs::canonicalize(&second).unwrap());
        assert!(second.join("test-results").is_dir());
    }

    #[test]
    fn a_latest_that_is_not_our_link_is_named_and_nothing_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let latest = tmp.path().join("latest");
        std::fs::create_dir(&latest).unwrap();
        std::fs::write(latest.join("mine.txt"), "a user's file").unwrap();
        let error = create_job_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            error.contains(&*latest.to_string_lossy()) && error.contains("directory"),
            "{error}"
        );
        let mut left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["latest"], "a job directory or link was left");
        assert!(latest.join("mine.txt").is_file());
    }
}
