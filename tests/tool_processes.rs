//! The tools virtest runs beside QEMU (qemu-img) die with their test,
//! on its timeout, and with virtest itself, even under SIGKILL; and a
//! disk whose backing chain loops fails the run at once, naming it,
//! where qemu-img used to grow without end.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A disk guest in `dir` whose qemu-img is a wrapper that sleeps (for a
/// duration no other process has), and that duration.
fn guest_with_sleeping_qemu_img(dir: &Path) -> (std::path::PathBuf, String) {
    std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let toml = common::write_guest_toml(dir, "[[disks]]\npath = \"disk.img\"\n");
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("1000.{}{call}", std::process::id());
    let wrapper = dir.join("qemu-img");
    common::write_script(&wrapper, &format!("#!/bin/sh\nexec sleep {marker}\n"));
    (toml, marker)
}

fn virtest_run(dir: &Path, toml: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_virtest"));
    command
        .args(["run", "boot", "-p"])
        .arg(format!("guest={}", toml.display()))
        .arg("-p")
        .arg(format!("qemu_img_bin={}", dir.join("qemu-img").display()))
        .args(["-p", "boot=fresh"])
        .args(extra)
        .arg("--results-dir")
        .arg(dir.join("results"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn a_tool_dies_with_its_tests_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (toml, marker) = guest_with_sleeping_qemu_img(tmp.path());
    let status = virtest_run(tmp.path(), &toml, &["-p", "timeout=3"])
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(
        common::eventually(Duration::from_secs(5), || common::processes_with(&marker)
            .is_empty()),
        "qemu-img outlived its test: {:?}",
        common::processes_with(&marker)
    );
}

#[test]
fn a_tool_dies_with_virtest_under_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (toml, marker) = guest_with_sleeping_qemu_img(tmp.path());
    let mut virtest = virtest_run(tmp.path(), &toml, &[]).spawn().unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || !common::processes_with(&marker)
            .is_empty()),
        "qemu-img never ran"
    );
    virtest.kill().unwrap();
    virtest.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || common::processes_with(&marker)
            .is_empty()),
        "qemu-img outlived virtest: {:?}",
        common::processes_with(&marker)
    );
}

#[test]
fn a_backing_chain_that_loops_fails_the_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("loop.qcow2");
    let qemu_img = |args: &[&str]| {
        let status = Command::new("qemu-img")
            .args(args)
            .arg(&image)
            .status()
            .unwrap();
        assert!(status.success());
    };
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "size=16M"]);
    qemu_img(&["rebase", "-u", "-F", "qcow2", "-b", "loop.qcow2"]);
    let toml = common::write_guest_toml(tmp.path(), "[[disks]]\npath = \"loop.qcow2\"\n");
    let results = tmp.path().join("results");
    let began = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "boot", "-p"])
        .arg(format!("guest={}", toml.display()))
        .args(["-p", "timeout=120", "--results-dir"])
        .arg(&results)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let took = began.elapsed();
    assert!(!status.success());
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = virtest::harness::results::JobResults::load(&job).unwrap();
    let reason = json.tests[0].fail_reason.clone().unwrap_or_default();
    assert!(reason.contains("infinite loop"), "{reason}");
    assert!(reason.contains(&image.display().to_string()), "{reason}");
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    assert!(
        common::processes_with(&image.display().to_string()).is_empty(),
        "a qemu-img of the loop is left"
    );
}
