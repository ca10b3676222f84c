//! Helpers of the end-to-end tests, which cross layers: the test kit's,
//! the harness tests' job runner, and tests and streams of their own.

#![allow(dead_code, unused_imports)] // each test binary uses its own part

pub mod slow;
pub mod stream;

#[path = "../../harness/tests/common/mod.rs"]
mod harness;

pub use harness::run_job;
pub use virtest_testkit::*;

/// `virtest ARGS` (this build's): whether it succeeded, its stdout and
/// its stderr.
pub fn virtest(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `virtest run ARGS` into `results` and returns its job's results;
/// a test that did not pass has the tails of its logs printed, so a CI
/// failure explains itself.
pub fn virtest_run(
    args: &[&str],
    results: &std::path::Path,
) -> (std::process::Output, virtest::harness::results::JobResults) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_virtest"))
        .arg("run")
        .args(args)
        .arg("--results-dir")
        .arg(results)
        .output()
        .unwrap();
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = virtest::harness::results::JobResults::load(&job).unwrap();
    for test in json.tests.iter().filter(|t| !t.status.is_success()) {
        for log in ["debug.log", "console.log", "qemu.log"] {
            let text = std::fs::read_to_string(test.logdir.join(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} {log} (last 40 lines)\n{}",
                test.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    (output, json)
}
