//! The `migration_matrix` test: each cell migrates the guest under one
//! feature, over one transport, between two QEMUs, while a writer in the
//! guest stamps pages, and checks them after. CI runs a smoke set: every
//! feature once over tcp from QEMU 7.2 to 10.0 (a capability 7.2 lacks
//! SKIPs with what QEMU said), over exec the features a pipe cannot
//! carry, which SKIP with the reason, and the file transport from 10.0 to
//! 10.0 and to 7.2, which has none (tests/qemu_versions.rs runs every
//! version pair). `VIRTEST_FULL_MATRIX=1` runs every feature over every
//! transport and version pair (360 cells), its job kept in
//! `target/tmp/migration-matrix/results/latest`. `results.html` draws the
//! cells as a grid.

mod common;

use std::process::Command;

use virtest::harness::Status;
use virtest::harness::results::JobResults;
use virtest::migration::{Feature, MigrationMode};

/// Runs the cells `params` (a params file) makes; checks each: PASS, or
/// SKIP with the reason expected, or (a feature that must fail) PASS with
/// the failure logged; and the grid in `results.html`.
fn run_cells(params: &str, dir: &std::path::Path) -> usize {
    let file = dir.join("matrix.toml");
    std::fs::write(&file, params).unwrap();
    let results = dir.join("results");
    Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "migration_matrix", "--params-file"])
        .arg(&file)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    let job_dir = std::fs::canonicalize(results.join("latest")).unwrap();
    let job = JobResults::load(&job_dir).unwrap();
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
        let feature = cell("migration_feature");
        let mode = test.params["migration_mode"].clone();
        let source = test.params["qemu_bin"].clone();
        let reason = test.fail_reason.clone().unwrap_or_default();
        let destination = test.params["qemu_dst_bin"].clone();
        if let Some(expected) = expected_skip(&feature, &mode, &source, &destination) {
            assert_eq!(test.status, Status::Skip, "{}: {reason}", test.name);
            assert!(reason.contains(expected), "{}: {reason}", test.name);
            continue;
        }
        assert_eq!(test.status, Status::Pass, "{}: {reason}", test.name);
        let log = std::fs::read_to_string(test.logdir.join("debug.log")).unwrap();
        assert!(
            log.contains("before the migration") && log.contains("after it"),
            "{}: the pages were checked",
            test.name
        );
        if feature.parse::<Feature>().unwrap().must_fail() {
            assert!(log.contains("failed, as it must"), "{}", test.name);
            assert!(log.contains("then plain over"), "{}", test.name);
        }
        if feature == "postcopy-recover" {
            // 9.1 on passes through `postcopy-recover-setup` between.
            assert!(
                log.contains("postcopy-active > postcopy-paused > ")
                    && log.contains("postcopy-recover > postcopy-active > completed"),
                "{}: paused and recovered",
                test.name
            );
        }
    }
    job.tests.len()
}

/// Why a cell must SKIP (a part of its reason), if it must: what its
/// transport cannot carry, or a QEMU lacks (7.2 has no switchover-ack,
/// no file transport, no mapped-ram).
fn expected_skip(
    feature: &str,
    mode: &str,
    source: &str,
    destination: &str,
) -> Option<&'static str> {
    let mapped_ram = feature.starts_with("mapped-ram");
    let socket_only = feature.starts_with("multifd") || feature.starts_with("tls");
    let return_path = feature.starts_with("postcopy") || feature == "switchover-ack";
    let one_way = mode == "exec" || mode == "file";
    if mapped_ram && mode != "file" {
        return Some("needs the file transport");
    }
    if one_way && return_path {
        return Some("needs a return path");
    }
    if feature.starts_with("tls") && one_way {
        return Some("needs a two-way channel");
    }
    if socket_only && !feature.starts_with("tls") && mode != "tcp" && mode != "unix" {
        return Some("or file with mapped-ram");
    }
    // As the source, 7.2's capabilities say so before the VM logs in;
    // as the destination, its own list.
    let lacks = |qemu: &str, what: &str| {
        qemu == "7.2" && (feature == what || (what == "mapped-ram" && mapped_ram))
    };
    if lacks(source, "switchover-ack") {
        return Some("offers no `switchover-ack` capability");
    }
    if lacks(source, "mapped-ram") {
        return Some("offers no `mapped-ram` capability");
    }
    if lacks(destination, "switchover-ack") || lacks(destination, "mapped-ram") {
        return Some("the destination QEMU offers: ");
    }
    if mode == "file" && source == "7.2" {
        return Some("the source QEMU (7.2.");
    }
    if mode == "file" && destination == "7.2" {
        return Some("the destination QEMU (7.2.");
    }
    None
}

/// `["a", "b"]`.
fn list(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", names.join(", "))
}

#[test]
fn every_cell_passes_skips_with_its_reason_or_fails_as_it_must() {
    let _slots = common::guest_slots(2);
    common::guest();
    common::qemu_build("10.0");
    let tmp = tempfile::tempdir().unwrap();
    let features = list(&Feature::ALL.map(Feature::as_str));
    if std::env::var_os("VIRTEST_FULL_MATRIX").is_some() {
        let modes = list(&MigrationMode::ALL.map(MigrationMode::as_str));
        let params = format!(
            "migration_feature = {features}\nmigration_mode = {modes}\n\
             qemu_bin = [\"7.2\", \"10.0\"]\nqemu_dst_bin = [\"7.2\", \"10.0\"]\n"
        );
        // Kept, for its grid: target/tmp/migration-matrix/results/latest.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("migration-matrix");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            run_cells(&params, &dir),
            MigrationMode::ALL.len() * Feature::ALL.len() * 4
        );
        return;
    }
    let every_feature = format!(
        "migration_feature = {features}\nmigration_mode = \"tcp\"\n\
         qemu_bin = \"7.2\"\nqemu_dst_bin = \"10.0\"\n"
    );
    let dir = tmp.path().join("features");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(run_cells(&every_feature, &dir), Feature::ALL.len());
    let over_exec = "migration_feature = [\"precopy\", \"postcopy\", \"multifd\", \"tls-psk\"]\n\
                     migration_mode = \"exec\"\nqemu_bin = \"7.2\"\nqemu_dst_bin = \"10.0\"\n";
    let dir = tmp.path().join("exec");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(run_cells(over_exec, &dir), 4);
    // The file transport and mapped-ram are 10.0's; 7.2 says it has
    // neither.
    let into_a_file = "migration_feature = [\"precopy\", \"mapped-ram\", \"mapped-ram-multifd\"]\n\
                       migration_mode = \"file\"\nqemu_bin = \"10.0\"\n\
                       qemu_dst_bin = [\"10.0\", \"7.2\"]\n";
    let dir = tmp.path().join("file");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(run_cells(into_a_file, &dir), 6);
}
