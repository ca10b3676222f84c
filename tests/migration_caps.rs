//! `-p migration_caps=...`, `multifd_channels`, `multifd_compression` and
//! `migration_params=name=value,...` run any test's migrations under the
//! capabilities and parameters named: on in both QEMUs, in the report;
//! an unknown name is refused with the ones the QEMU has, a value QEMU
//! refuses with QEMU's words.

mod common;

use std::process::Command;

use virtest::harness::Status;
use virtest::harness::results::JobResults;

fn run_migration(caps: &str, results: &std::path::Path) -> JobResults {
    run_with(&[&format!("migration_caps={caps}")], results)
}

/// The migration test, once, with `-p` for each of `params`.
fn run_with(params: &[&str], results: &std::path::Path) -> JobResults {
    let mut command = Command::new(env!("CARGO_BIN_EXE_virtest"));
    command.args(["run", "migration", "-p", "migration_iterations=1"]);
    for param in params {
        command.args(["-p", param]);
    }
    command.arg("--results-dir").arg(results).output().unwrap();
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

#[test]
fn named_parameters_are_set_on_both_sides_and_bad_ones_are_refused() {
    let _slots = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();

    let job = run_with(
        &[
            "multifd_channels=4",
            "multifd_compression=zlib",
            "migration_params=downtime-limit=100,announce-rounds=3",
        ],
        &tmp.path().join("good"),
    );
    let test = &job.tests[0];
    assert_eq!(test.status, Status::Pass, "{:?}", test.fail_reason);
    let report = std::fs::read_to_string(test.logdir.join("migration-1.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let parameters = report["parameters"].to_string();
    for set in [
        "multifd-channels=4",
        "multifd-compression=zlib",
        "downtime-limit=100",
        "announce-rounds=3",
    ] {
        assert!(parameters.contains(set), "{set} in {parameters}");
    }
    assert!(report["capabilities"].to_string().contains("multifd"));
    // Both QEMUs took them: QEMU answered each command with success.
    let qmp = std::fs::read_to_string(test.logdir.join("qmp.log")).unwrap();
    let set = qmp
        .lines()
        .filter(|l| {
            l.contains("migrate-set-parameters") && l.contains("\"multifd-compression\":\"zlib\"")
        })
        .count();
    assert!(set >= 2, "set on the source and the destination:\n{qmp}");

    for (params, expected) in [
        (
            vec!["migration_params=no-such-thing=1"],
            vec![
                "unknown migration parameter `no-such-thing`",
                "multifd-compression",
            ],
        ),
        (
            vec!["multifd_compression=lz4-nonesuch"],
            vec!["multifd-compression", "lz4-nonesuch"],
        ),
        (
            vec!["migration_params=downtime-limit=soon"],
            vec!["`downtime-limit` takes a whole number, not `soon`"],
        ),
        (
            vec!["multifd_channels=2", "migration_mode=exec"],
            vec!["multifd needs a socket transport"],
        ),
    ] {
        let name = params.join(" ").replace(['=', ' ', ','], "_");
        let job = run_with(&params, &tmp.path().join(name));
        let test = &job.tests[0];
        assert_ne!(test.status, Status::Pass, "{params:?}");
        let reason = test.fail_reason.clone().unwrap_or_default();
        for part in expected {
            assert!(reason.contains(part), "{params:?}: {reason}");
        }
    }
}
