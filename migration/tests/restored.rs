//! A VM restored from a ready snapshot migrates over every transport,
//! and the same guest answers after each.

use std::path::Path;

use virtest_migration::{Migrate, MigrationMode};
use virtest_testkit as common;
use virtest_vm::{BootMode, Start, Vm, VmConfig};

/// Starts a VM from the snapshots in `store` (making one the first
/// time) and logs in.
async fn started(logs: &Path, store: &Path) -> Vm {
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.to_path_buf());
    config.boot = BootMode::Snapshot;
    config.snapshot_dir = Some(store.to_path_buf());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm
}

async fn boot_id(vm: &Vm) -> String {
    let out = vm
        .remote()
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id");
    out.await.unwrap().stdout.trim().to_string()
}

#[tokio::test]
async fn a_restored_vm_migrates_over_every_transport() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    drop(started(&logs.path().join("maker"), store.path()).await);
    let mut vm = started(&logs.path().join("vm"), store.path()).await;
    assert!(matches!(vm.start(), Start::FromSnapshot { .. }));
    let before = boot_id(&vm).await;
    for mode in MigrationMode::STREAMED {
        let source = vm.pid().unwrap();
        vm.migrate(mode).await.unwrap();
        assert!(!common::alive(source));
        vm.login_remote().await.unwrap();
        assert_eq!(
            boot_id(&vm).await,
            before,
            "after {mode}: another guest answered"
        );
    }
    vm.power_off().await.unwrap();
}
