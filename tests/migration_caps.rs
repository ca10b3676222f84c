//! `-p migration_caps=...` runs any test's migrations under the
//! capabilities named: on, in the report, and an unknown one refused with
//! the ones the QEMU has.

mod common;

use std::process::Command;

use virtest::harness::Status;
use virtest::harness::results::JobResults;

fn run_migration(caps: &str, results: &std::path::Path) -> JobResults {
    Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "migration", "-p", "migration_iterations=1", "-p"])
        .arg(format!("migration_caps={caps}"))
        .arg("--results-dir")
        .arg(results)
        .output()
        .unwrap();
    JobResults::load(&std::fs::canonicalize(results.join("latest")).unwrap()).unwrap()
}

#[test]
fn named_capabilities_are_on_and_unknown_ones_are_refused() {
    let _slots = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();

    let job = run_migration("auto-converge,validate-uuid", &tmp.path().join("good"));
    let test = &job.tests[0];
    assert_eq!(test.status, Status::Pass, "{:?}", test.fail_reason);
    let report = std::fs::read_to_string(test.logdir.join("migration-1.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let caps = report["capabilities"].to_string();
    assert!(
        caps.contains("auto-converge") && caps.contains("validate-uuid"),
        "{caps}"
    );

    let job = run_migration("nosuch", &tmp.path().join("bad"));
    let test = &job.tests[0];
    assert_ne!(test.status, Status::Pass);
    let reason = test.fail_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("unknown migration capability `nosuch`") && reason.contains("xbzrle"),
        "{reason}"
    );
}
