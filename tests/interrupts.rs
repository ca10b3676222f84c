//! Interrupting a job: SIGINT ends the running test with its cleanup
//! and writes the results, a second one cuts cleanup short, a third
//! exits at once; no QEMU outlives any of them. Each job runs in a child
//! process (`sigint_child`), which the test signals.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use virtest::harness::TestDef;
use virtest::harness::params::ParamSources;
use virtest::harness::results::JobResults;
use virtest::harness::runner::{self, Filter, JobOptions};
use virtest::prelude::*;

/// The SIGINT test's job, in a child process (see below).
#[test]
#[ignore = "run by sigint_to_a_job_leaves_results_and_no_qemu in a child process"]
fn sigint_child() {
    // Run alone (`--ignored`), it must not pass for a test.
    let results = std::env::var("VIRTEST_SIGINT_RESULTS").expect(
        "not a test of its own: sigint_to_a_job_leaves_results_and_no_qemu runs it in a child process",
    );
    let defs = match std::env::var("VIRTEST_SIGINT_CLEANUP").as_deref() {
        Ok("hang") => vec![TestDef::new("SlowAction", || HangingCleanup)],
        Ok("stopped") => vec![TestDef::new("SlowAction", || StoppedVm)],
        _ => vec![TestDef::new("SlowAction", || common::slow::SlowAction)],
    };
    let sources = ParamSources::default();
    let (mut planned, _) = runner::plan(&defs, &sources, &Filter::default()).unwrap();
    // Two copies, one at a time: the second never starts.
    let mut second = planned[0].clone();
    second.name = "slow_action_again".into();
    planned.push(second);
    let options = JobOptions {
        results_dir: results.into(),
        max_parallel: 1,
        ..JobOptions::new()
    };
    let _ = runner::run_and_report(&defs, planned, &options);
}

/// A test whose cleanup hangs, with its VM on.
struct HangingCleanup;
impl VirtTest for HangingCleanup {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
    async fn cleanup(&mut self, _t: &mut Test) -> TestResult {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
}

/// A test whose QEMU is stopped (SIGSTOP: QMP does not answer, so
/// killing the VM takes a while) and whose cleanup hangs.
struct StoppedVm;
impl VirtTest for StoppedVm {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        let pid = t.vm.pid().expect("on");
        // SAFETY: stopping the VM's own QEMU.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
    async fn cleanup(&mut self, _t: &mut Test) -> TestResult {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
}

/// Whether process `pid` is stopped (`T` in its stat).
fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        == Some("T")
}

/// Starts `sigint_child` (with `cleanup` = `hang`, `stopped` or not)
/// writing into `results`; returns it once its test's VM is on (and, for
/// `stopped`, its QEMU stopped), and QEMU's pid.
fn sigint_job(results: &Path, cleanup: &str) -> (std::process::Child, u32) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["sigint_child", "--exact", "--ignored", "--nocapture"])
        .env("VIRTEST_SIGINT_RESULTS", results)
        .env("VIRTEST_SIGINT_CLEANUP", cleanup)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the test's VM is on (its power_on returned, so a signal
    // interrupts a running VM, not its start) and find its QEMU: a child
    // of the job's process.
    let powered_on = || {
        let test = results.join("latest/test-results/1-slow_action/debug.log");
        std::fs::read_to_string(test).is_ok_and(|log| log.contains("powered on"))
    };
    let mut found = None;
    assert!(common::eventually(Duration::from_secs(60), || {
        found = common::children_of(pid)
            .into_iter()
            .find(|p| common::is_qemu(*p));
        found.is_some_and(|qemu| cleanup != "stopped" || is_stopped(qemu)) && powered_on()
    }));
    (child, found.unwrap())
}

/// A second SIGINT cuts a hanging cleanup short (the VM is killed, the
/// results written); a third exits at once, leaving no QEMU.
#[test]
fn a_second_sigint_cuts_cleanup_short_and_a_third_exits() {
    let _slot = common::guest_slots(1);
    let signal_after = |child: &std::process::Child, pause: u64| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(pause));
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, qemu) = sigint_job(tmp.path(), "hang");
    let began = std::time::Instant::now();
    signal_after(&child, 500);
    signal_after(&child, 0);
    child.wait().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    assert!(!common::alive(qemu), "QEMU {qemu} outlived the job");
    let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
    let results = JobResults::load(&job).unwrap();
    assert!(results.complete, "the results were not written at the end");
    assert_eq!(
        results.tests[0].fail_reason.as_deref(),
        Some("interrupted by SIGINT")
    );

    let tmp = tempfile::tempdir().unwrap();
    // A stopped QEMU takes a while to kill: the third comes meanwhile.
    let (mut child, qemu) = sigint_job(tmp.path(), "stopped");
    for _ in 0..3 {
        signal_after(&child, 20);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        common::eventually(Duration::from_secs(5), || !common::alive(qemu)),
        "QEMU {qemu} outlived the job"
    );
    let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
    assert!(!JobResults::load(&job).unwrap().complete);
}

#[test]
fn sigint_to_a_job_leaves_results_and_no_qemu() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, qemu) = sigint_job(tmp.path(), "");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        lines.push(line.unwrap());
    }
    child.wait().unwrap();
    assert!(
        !common::alive(qemu),
        "QEMU {qemu} outlived the interrupted job"
    );
    let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
    let results = JobResults::load(&job).unwrap();
    assert_eq!(results.total, 2, "{lines:?}");
    assert_eq!(results.interrupt, 2);
    let first = &results.tests[0];
    assert_eq!(first.fail_reason.as_deref(), Some("interrupted by SIGINT"));
    assert!(
        first.logdir.join("cleanup-ran").exists(),
        "cleanup did not run"
    );
    assert!(
        results.tests[1]
            .fail_reason
            .as_deref()
            .unwrap()
            .starts_with("not started")
    );
    roxmltree::Document::parse(&std::fs::read_to_string(job.join("results.xml")).unwrap()).unwrap();
}
