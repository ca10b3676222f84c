//! `virtest guest check` and `-p guest=` on descriptions a user writes:
//! a good one prints its QEMU command line, an unknown key is a warning
//! with file and line, a wrong type an error naming key and type, a
//! missing file or image is named.

mod common;

use common::virtest;

use std::process::Command;

#[test]
fn a_good_description_prints_its_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let toml = common::write_guest_toml(tmp.path(), "[[disks]]\npath = \"disk.img\"\n");
    let (ok, stdout, stderr) = virtest(&["guest", "check", &tmp.path().to_string_lossy()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("guest `mine`"), "{stdout}");
    assert!(
        stdout.contains(&tmp.path().join("disk.img").to_string_lossy().into_owned()),
        "{stdout}"
    );
    assert!(stdout.contains("(raw)"), "{stdout}");
    assert!(stdout.contains("-kernel "), "{stdout}");
    assert!(stdout.contains("file=<vm>/disks/disk0.qcow2"), "{stdout}");
    assert!(stdout.contains("virtio-rng-pci"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    drop(toml);
}

#[test]
fn unknown_keys_warn_and_wrong_types_fail_naming_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = common::write_guest_toml(tmp.path(), "[machine]\nmemroy = 512\n");
    let (ok, stdout, stderr) = virtest(&["guest", "check", &toml.to_string_lossy()]);
    assert!(ok, "an unknown key is only a warning: {stdout}{stderr}");
    let line = std::fs::read_to_string(&toml)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("memroy"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "{}:{line}: unknown key `machine.memroy`",
            toml.display()
        )),
        "{stderr}"
    );

    let toml = common::write_guest_toml(tmp.path(), "[machine]\ncpus = \"two\"\n");
    let (ok, _, stderr) = virtest(&["guest", "check", &toml.to_string_lossy()]);
    assert!(!ok);
    assert!(stderr.contains("`machine.cpus`"), "{stderr}");
    assert!(stderr.contains("expected u32"), "{stderr}");
    assert!(
        stderr.contains(&toml.to_string_lossy().into_owned()),
        "{stderr}"
    );
}

/// Under `run`, a typo in the guest's description is said on the
/// terminal, once however many VMs and tests use the guest.
#[test]
fn unknown_keys_warn_once_on_the_terminal_under_run() {
    let _slots = common::guest_slots(1);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let toml = common::write_guest_toml(tmp.path(), "[machine]\nmemroy = 512\n");
    let out = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "boot", "--repeat", "2", "-p"])
        .arg(format!("guest={}", toml.display()))
        .arg("--results-dir")
        .arg(tmp.path().join("results"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("unknown key `machine.memroy`").count(),
        1,
        "{stderr}"
    );
    let job = std::fs::canonicalize(tmp.path().join("results/latest")).unwrap();
    let job_log = std::fs::read_to_string(job.join("job.log")).unwrap();
    assert_eq!(
        job_log.matches("unknown key `machine.memroy`").count(),
        1,
        "{job_log}"
    );
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = virtest(&["guest", "check", "/nonexistent/guest.toml"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/guest.toml"), "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");
    assert!(!stderr.contains("bootstrap"), "{stderr}");

    common::write_guest_toml(tmp.path(), "[[disks]]\npath = \"gone.qcow2\"\n");
    let (ok, _, stderr) = virtest(&["guest", "check", &tmp.path().to_string_lossy()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "disk image `{}`: it does not exist",
            tmp.path().join("gone.qcow2").display()
        )),
        "{stderr}"
    );

    let results = tmp.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "boot", "-p", "guest=/nonexistent", "--results-dir"])
        .arg(&results)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = virtest::harness::results::JobResults::load(&job).unwrap();
    let reason = json.tests[0].fail_reason.clone().unwrap_or_default();
    assert!(reason.contains("/nonexistent"), "{reason}");
    assert!(!reason.contains("bootstrap"), "{reason}");
}

/// Log lines on a stderr that is not a terminal carry no colour codes.
#[test]
fn log_lines_to_a_pipe_have_no_colours() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["-vv", "bootstrap"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// `guest check` refuses what a run would, before QEMU starts: an image
/// in another format than described, one that is not a file, a backing
/// chain that loops, memory the machine does not have.
#[test]
fn check_refuses_what_a_run_would() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("raw.img"), vec![0u8; 1 << 20]).unwrap();
    std::fs::create_dir(dir.join("a-dir")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(dir.join("a-fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("link-b", dir.join("link-a")).unwrap();
    std::os::unix::fs::symlink("link-a", dir.join("link-b")).unwrap();
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("loop.qcow2"))
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let rebased = Command::new("qemu-img")
        .args(["rebase", "-u", "-F", "qcow2", "-b", "loop.qcow2"])
        .arg(dir.join("loop.qcow2"))
        .status()
        .unwrap();
    assert!(rebased.success());
    for (disk, said) in [
        (
            "path = \"raw.img\"\nformat = \"qcow2\"",
            "it is a raw image, but its description says qcow2",
        ),
        ("path = \"a-dir\"", "it is a directory"),
        ("path = \"a-fifo\"", "not a regular file"),
        ("path = \"link-a\"", "symbolic links"),
        ("path = \"loop.qcow2\"", "infinite loop"),
    ] {
        let toml = common::write_guest_toml(dir, &format!("[[disks]]\n{disk}\n"));
        let (ok, stdout, stderr) = virtest(&["guest", "check", &toml.to_string_lossy()]);
        assert!(!ok, "{disk}: {stdout}");
        assert!(stderr.contains(said), "{disk}: {stderr}");
    }
    let toml = common::write_guest_toml(dir, "[machine]\nmemory = 99999999\n");
    let (ok, _, stderr) = virtest(&["guest", "check", &toml.to_string_lossy()]);
    assert!(!ok);
    assert!(stderr.contains("more than this machine has"), "{stderr}");
}
