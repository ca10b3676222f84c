//! No QEMU outlives its owner: a process killed with SIGKILL, a process
//! that panics, a task cancelled in the middle of `power_on`.

use virtest_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use virtest_vm::{Vm, VmConfig};

/// What the child role does once its VM is on.
const ROLE: &str = "VIRTEST_ORPHAN_ROLE";

/// Runs in a child process (see `orphan`): powers on a VM, prints QEMU's
/// pid, then waits to be killed or panics. Run alone, it fails.
#[tokio::test]
#[ignore = "a helper the orphan tests run in a child process"]
async fn child_role() {
    // Run alone (`--ignored`), it must not pass for a test.
    let role = std::env::var(ROLE)
        .expect("not a test of its own: the orphan tests run it in a child process");
    let mut vm = Vm::new(VmConfig::new(common::description().clone()));
    vm.power_on().await.unwrap();
    println!("qemu-pid={}", vm.pid().unwrap());
    match role.as_str() {
        "wait" => tokio::time::sleep(Duration::from_secs(120)).await,
        "panic" => panic!("the test panics with its VM on"),
        other => panic!("unknown role {other}"),
    }
}

/// Starts this binary's `child_role` with `role`; returns it and QEMU's pid.
fn orphan(role: &str) -> (std::process::Child, u32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_role", "--exact", "--ignored", "--nocapture"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if let Some(pid) = line.unwrap().strip_prefix("qemu-pid=") {
            return (child, pid.parse().unwrap());
        }
    }
    panic!("the child printed no QEMU pid: {:?}", child.wait());
}

#[test]
fn sigkill_of_the_owner_takes_qemu_with_it() {
    let _slot = common::guest_slots(1);
    let (mut child, qemu) = orphan("wait");
    assert!(common::alive(qemu));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(2), || !common::alive(qemu)),
        "QEMU {qemu} outlived its SIGKILLed owner"
    );
}

#[test]
fn a_panicking_owner_leaves_no_qemu() {
    let _slot = common::guest_slots(1);
    let (mut child, qemu) = orphan("panic");
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        common::eventually(Duration::from_secs(2), || !common::alive(qemu)),
        "QEMU {qemu} outlived its panicking owner"
    );
}

#[tokio::test]
async fn a_task_cancelled_in_power_on_leaves_no_qemu() {
    let _slot = common::guest_slots(1);
    let mut vm = Vm::new(VmConfig::new(common::description().clone()));
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = tokio::spawn({
        let finished = finished.clone();
        async move {
            vm.power_on().await.unwrap();
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    });
    let started = tokio::task::spawn_blocking(move || {
        common::eventually(Duration::from_secs(10), || {
            !common::processes_with(&marker).is_empty()
        })
        .then_some(marker)
    })
    .await
    .unwrap()
    .expect("QEMU never started");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "power_on had already finished: the test did not cancel it midway"
    );
    assert!(
        common::eventually(Duration::from_secs(2), || common::processes_with(&started)
            .is_empty()),
        "QEMU outlived the cancelled power_on"
    );
}
