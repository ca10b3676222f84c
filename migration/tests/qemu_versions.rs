//! A live migration between QEMU versions: the host's QEMU 7.2 and the
//! cache's 10.0 (`virtest bootstrap --qemu 10.0`). A VM asking for `q35`
//! migrates to the newer QEMU on the versioned type it runs
//! (`pc-q35-7.2`), and back, on both guests, keeping its file and its
//! hot-plugged disk; one whose type the destination lacks is refused
//! before anything starts, and keeps running.

mod common;

use common::*;
use virtest_migration::{Migrate, MigrationMode, MigrationSpec};
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_vm::{BootMode, Vm, VmConfig};

/// Migrations between the host's 7.2 and 10.0 and back, one per
/// transport, with a file written before and a hot-plugged disk written
/// to: after each, the same guest, the same file and the same disk.
async fn back_and_forth(mut config: VmConfig) {
    let host = binary::find(BinaryKind::System, None).unwrap();
    let newer = qemu_build("10.0");
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let (boot_id, _) = identity(&vm).await;
    let device = vm.hotplug().disk("data", 8).await.unwrap();
    let written = vm
        .remote()
        .unwrap()
        .run(&format!(
            "head -c 1048576 /dev/urandom > /root/before && \
             dd if=/root/before of={device} bs=1M count=1 conv=fsync 2>/dev/null && \
             sha256sum < /root/before"
        ))
        .await
        .unwrap()
        .stdout;
    // 10.0 to 10.0 goes through a file, its RAM mapped (neither is in
    // 7.2).
    let hops = [
        (&newer, "10.0", MigrationMode::Tcp),
        (&host, "7.2", MigrationMode::Unix),
        (&newer, "10.0", MigrationMode::Exec),
        (&newer, "10.0", MigrationMode::File),
        (&host, "7.2", MigrationMode::Fd),
    ];
    for (to, version, mode) in hops {
        let mut spec = MigrationSpec::new(mode);
        spec.destination_qemu = Some(to.clone());
        if mode == MigrationMode::File {
            spec.enable("mapped-ram");
        }
        let report = vm.migrate_with(&spec).await.unwrap();
        assert_eq!(report.machine_type, "pc-q35-7.2", "to {version}");
        assert!(report.destination_qemu.starts_with(version), "{report:?}");
        assert_eq!(vm.instance().unwrap().cmdline().binary, *to);
        vm.login_remote().await.unwrap();
        assert_eq!(identity(&vm).await.0, boot_id, "after moving to {version}");
        let read = vm
            .remote()
            .unwrap()
            .run(&format!(
                "sha256sum < /root/before && head -c 1048576 {device} | sha256sum"
            ))
            .await
            .unwrap()
            .stdout;
        assert_eq!(
            read,
            format!("{written}{written}"),
            "after {mode} to {version}"
        );
        assert_eq!(vm.hotplug().devices(), ["data"]);
        let state_files = std::fs::read_dir(vm.files().runtime_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "state")
            })
            .count();
        assert_eq!(state_files, 0, "the state file is removed after {mode}");
    }
    assert_eq!(qemus(&vm).len(), 1, "only the VM's QEMU is left");
    vm.power_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_guest_goes_between_7_2_and_10_0_over_every_transport() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    back_and_forth(config(logs.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_guest_goes_between_7_2_and_10_0_over_every_transport() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    let mut config = VmConfig::new(debian().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    back_and_forth(config).await;
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

/// A ready snapshot asked for as mapped-ram, on 10.0, is saved as a
/// mapped-ram file; a VM restored from it runs the guest that was saved,
/// and it migrates on as a stream (the capability its restore turned on
/// is turned off again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_ram_snapshot_restores_and_its_vm_migrates_on() {
    use virtest_guest::snapshots::{SnapshotStore, StateFormat};
    use virtest_vm::Start;
    let _slot = guest_slots(1);
    let logs = test_logs();
    let store = tempfile::tempdir().unwrap();
    let mut config = config(logs.path());
    config.qemu = Some(qemu_build("10.0"));
    config.snapshot_dir = Some(store.path().to_path_buf());
    config.snapshot_format = StateFormat::MappedRam;
    config.boot = BootMode::Snapshot;
    let mut maker = Vm::new(config.clone());
    maker.power_on().await.unwrap();
    assert!(
        matches!(maker.start(), Start::MadeSnapshot { .. }),
        "{}",
        maker.start()
    );
    maker.power_off().await.unwrap();
    let made = SnapshotStore::new(store.path())
        .list()
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(made.meta.state_format, StateFormat::MappedRam);
    assert!(made.meta.save_ms > 0, "{:?}", made.meta);
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(
        matches!(vm.start(), Start::FromSnapshot { .. }),
        "{}",
        vm.start()
    );
    vm.login_remote().await.unwrap();
    let (boot_id, _) = identity(&vm).await;
    let report = vm.migrate(MigrationMode::Tcp).await.unwrap();
    assert!(
        !report.capabilities.iter().any(|c| c == "mapped-ram"),
        "{report:?}"
    );
    vm.login_remote().await.unwrap();
    assert_eq!(identity(&vm).await.0, boot_id);
    vm.power_off().await.unwrap();
}
