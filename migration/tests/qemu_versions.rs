//! A live migration between QEMU versions: the host's QEMU 7.2 and the
//! cache's 10.0 (`virtest bootstrap --qemu 10.0`). A VM asking for `q35`
//! migrates to the newer QEMU on the versioned type it runs
//! (`pc-q35-7.2`), and back; one whose type the destination lacks is
//! refused before anything starts, and keeps running.

mod common;

use common::*;
use virtest_migration::{Migrate, MigrationMode, MigrationSpec};
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_vm::Vm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_q35_vm_moves_to_qemu_10_on_its_own_type_and_back() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    let host = binary::find(BinaryKind::System, None).unwrap();
    let newer = qemu_build("10.0");
    let mut vm = running_vm(logs.path()).await;
    let (boot_id, _) = identity(&vm).await;
    for (to, version) in [(&newer, "10.0"), (&host, "7.2")] {
        let mut spec = MigrationSpec::new(MigrationMode::Tcp);
        spec.destination_qemu = Some(to.clone());
        let report = vm.migrate_with(&spec).await.unwrap();
        assert_eq!(report.machine_type, "pc-q35-7.2", "to {version}");
        assert!(report.destination_qemu.starts_with(version), "{report:?}");
        assert_eq!(vm.instance().unwrap().cmdline().binary, *to);
        vm.login_remote().await.unwrap();
        assert_eq!(identity(&vm).await.0, boot_id, "after moving to {version}");
    }
    assert_eq!(qemus(&vm).len(), 1, "only the VM's QEMU is left");
    vm.power_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_the_older_qemu_lacks_is_refused_and_the_vm_keeps_running() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    let mut config = config(logs.path());
    config.qemu = Some(qemu_build("10.0"));
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let (boot_id, _) = identity(&vm).await;
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.destination_qemu = Some(binary::find(BinaryKind::System, None).unwrap());
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    let error = text;
    assert!(error.contains("no machine type for `q35`"), "{error}");
    assert!(
        error.contains("`pc-q35-10.0`, which the VM runs"),
        "{error}"
    );
    assert!(error.contains("start the VM on `pc-q35-7.2`"), "{error}");
    assert_eq!(qemus(&vm).len(), 1, "no destination QEMU is left");
    assert_eq!(identity(&vm).await.0, boot_id, "the source runs on");
    vm.power_off().await.unwrap();
}
