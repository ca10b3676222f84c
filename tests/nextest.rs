//! `cargo nextest run` runs the guide's examples (virtest::main! binaries
//! speak libtest's command line), and two partitions run each test once.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

/// Runs one partition of the examples' tests; returns the passed tests.
fn partition(part: &str, results: &std::path::Path) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "nextest",
            "run",
            "--example",
            "boot",
            "--example",
            "migration",
        ])
        .args(["--partition", part, "--no-fail-fast", "--color", "never"])
        .env("VIRTEST_RESULTS", results)
        .env("VIRTEST_MIGRATION_ITERATIONS", "1")
        .output()
        .expect("cargo nextest (the cargo-nextest package) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text.lines()
        .filter(|l| l.trim_start().starts_with("PASS ["))
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect()
}

#[test]
fn two_hash_partitions_run_each_example_test_once() {
    let _slot = common::guest_slots(2);
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = BTreeMap::new();
    for part in ["hash:1/2", "hash:2/2"] {
        for test in partition(part, tmp.path()) {
            *runs.entry(test).or_insert(0) += 1;
        }
    }
    let expected = BTreeMap::from([("boot".to_string(), 1), ("migration".to_string(), 1)]);
    assert_eq!(runs, expected);
    // Each test ran as a job of its own, with its results.
    let jobs = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("job-"))
        .count();
    assert_eq!(jobs, 2);
}

/// nextest starts each test's binary itself: `VIRTEST_REPEAT` reaches it
/// through the environment, and the test's job runs it that often.
#[test]
fn virtest_repeat_reaches_the_binaries_nextest_starts() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["nextest", "run", "--example", "boot", "--color", "never"])
        .env("VIRTEST_RESULTS", tmp.path())
        .env("VIRTEST_REPEAT", "2")
        .output()
        .expect("cargo nextest (the cargo-nextest package) must be installed");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
    let results = virtest::harness::results::JobResults::load(&job).unwrap();
    let names: Vec<&str> = results.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["boot@repeat=1", "boot@repeat=2"]);
    assert_eq!((results.repeats[0].runs, results.repeats[0].passed), (2, 2));
}
