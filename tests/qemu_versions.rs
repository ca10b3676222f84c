//! QEMU versions from the command line: `virtest bootstrap --qemu 10.0`
//! fetches QEMU 10.0 from Debian's backports into the cache, `doctor`
//! lists it, and `qemu_bin`/`qemu_dst_bin` take a version. The guide's
//! migration test passes between every pair of the host's 7.2 and 10.0,
//! on the machine type both have. A version that is not here, or that
//! backports lacks, is named with what is.
//!
//! CI runs the pairs over TCP; `VIRTEST_FULL_MATRIX=1` runs them over
//! every transport (16 cells, about 2 minutes here).

mod common;

use common::virtest;

use std::path::Path;
use std::process::Command;

use virtest::harness::Status;
use virtest::harness::results::JobResults;

/// `virtest run migration` with the params file `params`, into `results`.
fn run_migration(params: &str, extra: &[&str], results: &Path) -> JobResults {
    let file = results.with_extension("toml");
    std::fs::write(&file, params).unwrap();
    Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "migration", "--params-file"])
        .arg(&file)
        .args(extra)
        .arg("--results-dir")
        .arg(results)
        .output()
        .unwrap();
    JobResults::load(&std::fs::canonicalize(results.join("latest")).unwrap()).unwrap()
}

#[test]
fn bootstrap_fetches_qemu_10_once_and_doctor_lists_it() {
    let (ok, stdout, stderr) = virtest(&["bootstrap", "--qemu", "10.0"]);
    assert!(ok, "{stdout}{stderr}");
    let binary = common::qemu_build("10.0");
    assert!(stdout.contains(&*binary.to_string_lossy()), "{stdout}");
    let version = Command::new(&binary).arg("-version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("version 10.0."));
    // Once there, it is not fetched again.
    let (ok, again, _) = virtest(&["bootstrap", "--qemu", "10.0"]);
    assert!(ok && again.contains("is in the cache"), "{again}");
    let (_, doctor, _) = virtest(&["doctor"]);
    let line = doctor
        .lines()
        .find(|l| l.contains("QEMU 10.0."))
        .unwrap_or_else(|| panic!("doctor lists no QEMU 10.0:\n{doctor}"));
    assert!(line.trim_start().starts_with("ok"), "{line}");
    assert!(line.contains("accelerators: "), "{line}");
}

#[test]
fn a_version_backports_lacks_is_refused_with_what_it_has() {
    common::qemu_build("10.0");
    let (ok, _, stderr) = virtest(&["bootstrap", "--qemu", "99.0"]);
    assert!(!ok);
    assert!(
        stderr.contains("-backports offers no QEMU 99.0; it has 10.0."),
        "{stderr}"
    );
    let (ok, _, stderr) = virtest(&["bootstrap", "--qemu", "latest"]);
    assert!(!ok);
    assert!(stderr.contains("give a QEMU version"), "{stderr}");
}

#[test]
fn the_guides_migration_test_passes_between_every_version_pair() {
    let _slots = common::guest_slots(2);
    common::guest();
    common::qemu_build("10.0");
    let tmp = tempfile::tempdir().unwrap();
    let modes = match std::env::var_os("VIRTEST_FULL_MATRIX") {
        Some(_) => r#"["tcp", "unix", "exec", "fd"]"#,
        None => r#""tcp""#,
    };
    let params = format!(
        "qemu_bin = [\"7.2\", \"10.0\"]\n\
         qemu_dst_bin = [\"7.2\", \"10.0\"]\n\
         migration_mode = {modes}\n\
         migration_iterations = 2\n"
    );
    let job = run_migration(&params, &[], &tmp.path().join("pairs"));
    assert!(job.tests.len() >= 4, "{:?}", job.tests);
    for test in &job.tests {
        assert_eq!(
            test.status,
            Status::Pass,
            "{}: {:?}",
            test.name,
            test.fail_reason
        );
        let log = std::fs::read_to_string(test.logdir.join("debug.log")).unwrap();
        let [from, to] = ["qemu_bin=", "qemu_dst_bin="].map(|key| {
            let start = test.name.find(key).unwrap() + key.len();
            test.name[start..]
                .split([',', '@', ' '])
                .next()
                .unwrap()
                .to_string()
        });
        // Two versions: the type both have. One: its own newest.
        let machine = match from == to {
            true if from == "7.2" => "pc-q35-7.2",
            true => "pc-q35-10.0",
            false => "pc-q35-7.2",
        };
        let first = "migration 1 over";
        let line = log
            .lines()
            .find(|l| l.contains(first))
            .unwrap_or_else(|| panic!("{}: no migration in its log", test.name));
        assert!(
            line.contains(&format!("QEMU {from}.")) && line.contains(&format!(" to {to}.")),
            "{}: {line}",
            test.name
        );
        assert!(
            line.contains(&format!(" on {machine}:")),
            "{}: {line}",
            test.name
        );
    }
}

#[test]
fn a_qemu_version_that_is_not_here_is_named_with_how_to_fetch_it() {
    common::qemu_build("10.0");
    let tmp = tempfile::tempdir().unwrap();
    let job = run_migration(
        "qemu_dst_bin = \"9.9\"\n",
        &["-p", "migration_iterations=1"],
        &tmp.path().join("missing"),
    );
    let test = &job.tests[0];
    assert_eq!(test.status, Status::Error);
    let reason = test.fail_reason.clone().unwrap_or_default();
    assert!(reason.contains("no QEMU 9.9 here (7.2."), "{reason}");
    assert!(reason.contains("10.0."), "{reason}");
    assert!(
        reason.contains("`virtest bootstrap --qemu 9.9` fetches it"),
        "{reason}"
    );
}

#[test]
fn with_pinning_off_qemu_refuses_another_machine_type_in_its_own_words() {
    common::qemu_build("10.0");
    let tmp = tempfile::tempdir().unwrap();
    let job = run_migration(
        "qemu_dst_bin = \"10.0\"\npin_machine_type = false\n",
        &["-p", "migration_iterations=1"],
        &tmp.path().join("unpinned"),
    );
    let test = &job.tests[0];
    assert_eq!(test.status, Status::Error);
    let reason = test.fail_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Machine type received is 'pc-q35-7.2' and local is 'pc-q35-10.0'"),
        "the destination's words: {reason}"
    );
    assert!(reason.contains("the source VM keeps running"), "{reason}");
    // 10.0 stays up to say why (`exit-on-error` off), and is asked.
    assert!(
        reason.contains("the destination QEMU failed the migration"),
        "{reason}"
    );
    assert!(reason.contains("its QMP said: "), "{reason}");
}

#[test]
fn a_cached_qemu_missing_a_data_file_is_named_with_how_to_fetch_it_again() {
    let good = common::qemu_build("10.0");
    let good_dir = good.parent().unwrap().parent().unwrap();
    // A copy under a version no other test asks for, one file gone.
    let broken = good_dir.with_file_name("99.1.0");
    struct Removed<'a>(&'a Path);
    impl Drop for Removed<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _removed = Removed(&broken);
    let copied = Command::new("cp")
        .arg("-al")
        .arg(good_dir)
        .arg(&broken)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_file(broken.join("usr/share/qemu/linuxboot_dma.bin")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let job = run_migration(
        "qemu_dst_bin = \"99.1\"\n",
        &["-p", "migration_iterations=1"],
        &tmp.path().join("damaged"),
    );
    let test = &job.tests[0];
    assert_eq!(test.status, Status::Error);
    let reason = test.fail_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("QEMU 99.1.0 in ")
            && reason.contains("is damaged: `usr/share/qemu/linuxboot_dma.bin` is missing"),
        "{reason}"
    );
    assert!(
        reason.contains("virtest bootstrap --qemu 99.1.0"),
        "{reason}"
    );
    let (_, doctor, _) = virtest(&["doctor"]);
    assert!(
        doctor
            .lines()
            .any(|l| l.contains("broken") && l.contains("QEMU 99.1.0")),
        "{doctor}"
    );
}
