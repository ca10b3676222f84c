//! The `migration_matrix` test: each cell migrates the guest under one
//! feature, over one transport, between two QEMUs, while a writer in the
//! guest stamps pages, and checks them after. CI runs a smoke set across
//! QEMU 7.2 → 10.0 (the cells a transport cannot do SKIP, with the
//! reason; a capability 7.2 lacks SKIPs with what QEMU said);
//! `VIRTEST_FULL_MATRIX=1` runs every feature over every transport and
//! version pair (176 cells). `results.html` draws the cells as a grid.

mod common;

use std::process::Command;

use virtest::harness::Status;
use virtest::harness::results::JobResults;
use virtest::migration::{Feature, MigrationMode};

#[test]
fn every_cell_passes_skips_with_its_reason_or_fails_as_it_must() {
    let _slots = common::guest_slots(2);
    common::guest();
    common::qemu_build("10.0");
    let tmp = tempfile::tempdir().unwrap();
    let quoted = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        format!("[{}]", names.join(", "))
    };
    let params = match std::env::var_os("VIRTEST_FULL_MATRIX") {
        Some(_) => format!(
            "migration_feature = {}\nmigration_mode = {}\nqemu_bin = [\"7.2\", \"10.0\"]\n\
             qemu_dst_bin = [\"7.2\", \"10.0\"]\n",
            quoted(&Feature::ALL.map(Feature::as_str)),
            quoted(&MigrationMode::ALL.map(MigrationMode::as_str)),
        ),
        None => "migration_feature = [\"precopy\", \"postcopy\", \"multifd-zstd\", \
                 \"tls-x509\", \"tls-wrong-hostname\", \"switchover-ack\"]\n\
                 migration_mode = [\"unix\", \"exec\"]\n\
                 qemu_bin = \"7.2\"\nqemu_dst_bin = \"10.0\"\n"
            .to_string(),
    };
    let file = tmp.path().join("matrix.toml");
    std::fs::write(&file, params).unwrap();
    let results = tmp.path().join("results");
    Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "migration_matrix", "--params-file"])
        .arg(&file)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    let job_dir = std::fs::canonicalize(results.join("latest")).unwrap();
    let job = JobResults::load(&job_dir).unwrap();
    assert!(job.tests.len() >= 12, "{:?}", job.tests);
    // results.html draws the cells as a grid, one cell per test.
    let html = std::fs::read_to_string(job_dir.join("results.html")).unwrap();
    let grid = &html[html.find("<table class=\"matrix\">").expect("a grid")..];
    let grid = &grid[..grid.find("</table>").unwrap()];
    assert_eq!(
        grid.matches("<td title=").count(),
        job.tests.len(),
        "{grid}"
    );
    for test in &job.tests {
        let cell = |key: &str| {
            let start = test.name.find(&format!("{key}=")).unwrap() + key.len() + 1;
            test.name[start..]
                .split([',', ' '])
                .next()
                .unwrap()
                .to_string()
        };
        let (feature, mode) = (cell("migration_feature"), cell("migration_mode"));
        let reason = test.fail_reason.clone().unwrap_or_default();
        let socket_only = feature.starts_with("multifd") || feature.starts_with("tls");
        let from_7_2 = !test.name.contains("qemu_bin=10.0");
        let expected = if mode == "exec" && (socket_only || feature == "postcopy") {
            assert!(reason.contains(&format!("{feature} over exec")), "{reason}");
            Status::Skip
        } else if feature == "switchover-ack" && from_7_2 {
            assert!(
                reason.contains("offers no `switchover-ack` capability"),
                "{reason}"
            );
            Status::Skip
        } else {
            Status::Pass
        };
        if test.status == Status::Skip && expected == Status::Skip {
            continue;
        }
        if test.name.contains("qemu_bin=10.0,qemu_dst_bin=7.2") && test.status == Status::Error {
            // A capability only the newer source has: the older
            // destination refuses it, which the cell reports.
            assert!(reason.contains("destination"), "{}: {reason}", test.name);
            continue;
        }
        assert_eq!(test.status, expected, "{}: {reason}", test.name);
        let log = std::fs::read_to_string(test.logdir.join("debug.log")).unwrap();
        assert!(
            log.contains("before the migration") && log.contains("after it"),
            "{}: the pages were checked",
            test.name
        );
        if feature == "tls-wrong-hostname" {
            assert!(log.contains("failed, as it must"), "{}", test.name);
        }
    }
}
