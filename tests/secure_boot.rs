//! Secure Boot (`firmware = "uefi-secure"`): OVMF's SMM build with
//! Microsoft's keys enrolled boots the Debian guest through its signed
//! chain (shim, GRUB, kernel) with Secure Boot enforcing, and refuses an
//! unsigned boot loader, which the firmware says on the console. The
//! Secure Boot guest also shares a host folder (a Debian VM that must
//! boot anyway, since neither has a ready snapshot to start from): its
//! kernel loads 9p on the mount, files cross both ways, and `migrate`
//! refuses the VM before it starts anything.

mod common;

use std::time::{Duration, Instant};

use virtest::guest::description::{DiskFormat, DiskSource, Firmware, Ready};
use virtest::prelude::*;
use virtest::vm::{Vm, VmConfig};

async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_boots_with_secure_boot_enforcing_and_shares_a_folder() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("from-host"), "written on the host\n").unwrap();
    let mut config = VmConfig::new(common::debian().clone());
    config.guest.boot.firmware = Firmware::UefiSecure;
    config.log_dir = Some(logs.path().to_path_buf());
    let mut vm = Vm::new(config);
    let share = vm.share(folder.path(), "results").unwrap();
    vm.power_on().await.unwrap();
    let cmdline = vm.instance().unwrap().cmdline().display();
    for expected in [
        "OVMF_CODE_4M.secboot.fd",
        "smm=on",
        "property=secure,value=on",
    ] {
        assert!(cmdline.contains(expected), "{expected}: {cmdline}");
    }
    vm.login_remote().await.unwrap();
    assert_eq!(
        run(&vm, "mokutil --sb-state").await.trim(),
        "SecureBoot enabled"
    );
    // The kernel checked what booted it, and locks itself down for it.
    let kernel = run(&vm, "dmesg | grep -i -e 'secure boot' -e lockdown").await;
    assert!(kernel.contains("Secure boot enabled"), "{kernel}");

    run(&vm, &share.mount_command("/mnt")).await;
    assert_eq!(
        run(&vm, "cat /mnt/from-host").await,
        "written on the host\n"
    );
    run(&vm, "uname -r > /mnt/from-guest && sync").await;
    let written = std::fs::read_to_string(folder.path().join("from-guest")).unwrap();
    assert_eq!(
        written.trim(),
        common::debian().kernel_release.as_deref().unwrap()
    );
    let error = vm.migrate(MigrationMode::Tcp).await.unwrap_err();
    assert!(error.to_string().contains("`results`"), "{error}");
    assert_eq!(
        run(&vm, "cat /mnt/from-host").await,
        "written on the host\n"
    );
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    vm.power_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_boot_loader_is_refused_by_the_firmware() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    // A disk whose only boot loader is GRUB as Debian builds it before
    // signing (grub-efi-amd64-bin's), alone on a FAT file system.
    let unsigned = std::fs::read("/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi")
        .expect("grub-efi-amd64-bin (.ci/install installs it)");
    let image = virtest::guest::fat::volume(
        8 << 20,
        "UNSIGNED",
        &[("EFI/BOOT/BOOTX64.EFI", &unsigned[..])],
    )
    .unwrap();
    let disk = logs.path().join("unsigned.img");
    std::fs::write(&disk, image).unwrap();
    let mut guest = common::debian().clone();
    guest.name = "unsigned".into();
    guest.boot.firmware = Firmware::UefiSecure;
    guest.disks[0].source = DiskSource::File(disk);
    guest.disks[0].format = DiskFormat::Raw;
    guest.cloud_init.enabled = false;
    guest.ready = Ready::Console("never printed".into());
    guest.login.password = Some("unused".into());
    let mut config = VmConfig::new(guest);
    config.log_dir = Some(logs.path().to_path_buf());
    config.agent = false;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    let console = vm.console().unwrap().clone();
    let start = console.cursor();
    let deadline = Instant::now() + Duration::from_secs(120);
    let refused = loop {
        if let Some(at) = console.find(start, "Access Denied") {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the firmware did not refuse within 120 s; the console:\n{}",
            console.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let said = console.text_since(start);
    assert!(said.contains("BdsDxe: failed to load"), "{said}");
    assert!(console.find(refused, "GRUB").is_none(), "GRUB ran: {said}");
    vm.within(Duration::ZERO).power_off().await.unwrap();
}
