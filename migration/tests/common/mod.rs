//! What the migration tests share: a VM of the default guest, ready to
//! migrate, and the checks made after a migration failed.
// Each test file uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use virtest_host::{Error as HostError, Lab};
pub use virtest_testkit::*;
use virtest_vm::{Vm, VmConfig};

/// A VM of the default guest, its logs in `logs`.
pub fn config(logs: &std::path::Path) -> VmConfig {
    let mut config = VmConfig::new(description().clone());
    config.log_dir = Some(logs.to_path_buf());
    config
}

/// A VM of the default guest, logged in. It starts from the cache's
/// ready snapshot: these tests are about migrating, not booting.
pub async fn running_vm(logs: &std::path::Path) -> Vm {
    let mut config = config(logs);
    config.boot = virtest_vm::BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm
}

/// The guest's boot id and uptime.
pub async fn identity(vm: &Vm) -> (String, f64) {
    let out = vm
        .remote()
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id /proc/uptime")
        .await
        .unwrap();
    let mut lines = out.stdout.lines();
    let boot_id = lines.next().unwrap().to_string();
    let uptime = lines.next().unwrap().split_whitespace().next().unwrap();
    (boot_id, uptime.parse().unwrap())
}

/// QEMU processes of this VM (its runtime directory is in their sockets).
pub fn qemus(vm: &Vm) -> Vec<u32> {
    processes_with(&vm.files().runtime_dir().to_string_lossy())
}

/// Starts a workload that dirties 32 MiB of guest memory in a loop, with
/// data that is not zero (zero pages cost QEMU almost nothing to send).
/// The data is made once: a guest reading /dev/urandom in that loop was
/// lost twice in six auto-converge runs (a kernel oops in chacha_permute,
/// a soft lockup in dd), which is QEMU's TCG to investigate, not this
/// test's subject.
pub async fn dirty_memory(vm: &Vm) {
    vm.remote()
        .unwrap()
        .run(
            "dd if=/dev/urandom of=/dev/shm/random bs=1M count=32 2>/dev/null; \
             setsid sh -c 'while :; do cp /dev/shm/random /dev/shm/dirty; done' \
             </dev/null >/dev/null 2>&1 & echo $! > /run/dirty.pid",
        )
        .await
        .unwrap();
}

/// After a failed migration: the same QEMU, still running, still
/// answering over the same session, and no destination left.
pub async fn source_survives(vm: &Vm, source: u32) {
    assert_eq!(vm.pid(), Some(source));
    assert_eq!(vm.state().await.unwrap(), virtest_vm::VmState::Running);
    let out = vm.remote().unwrap().run("echo still-here").await.unwrap();
    assert_eq!(out.stdout.trim(), "still-here");
    assert!(
        eventually(Duration::from_secs(2), || qemus(vm) == vec![source]),
        "{:?}",
        qemus(vm)
    );
}

/// An error and its causes, one a line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push('\n');
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A lab in `dir`, or `None` (the reason printed) without root.
pub async fn lab(dir: &std::path::Path) -> Option<Lab> {
    match Lab::new(&dir.join("lab")).await {
        Ok(lab) => Some(lab),
        Err(error @ HostError::NeedsRoot { .. }) => {
            eprintln!("skipped: {error}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}
