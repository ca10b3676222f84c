//! The arm64 default guest (`default-arm64`) on `qemu-system-aarch64
//! -machine virt` under TCG: the guide's boot and migration tests beside
//! the x86 guest, and what a VM offers besides SSH (the agent, the serial
//! console, a hot-plugged disk, a ready snapshot, the power button)
//! through live migrations; and the errors a user can hit with it.

mod common;

use std::time::Duration;

use virtest::guest::description::Arch;
use virtest::harness::Status;
use virtest::prelude::*;
use virtest::vm::{PowerOff, Vm, VmConfig};

/// An error and its sources, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// Powers on a VM of `config`, which must be refused with nothing left
/// running (neither on, nor any process naming its runtime directory);
/// returns the error and its sources.
async fn refused(config: VmConfig) -> String {
    let mut vm = Vm::new(config);
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let err = chain(&vm.power_on().await.unwrap_err());
    assert!(!vm.is_on(), "{err}");
    assert!(common::processes_with(&marker).is_empty(), "{err}");
    err
}

/// The x86 system emulator.
fn x86_qemu() -> std::path::PathBuf {
    use virtest::qemu_cmdline::binary::{BinaryKind, find_for};
    find_for(BinaryKind::System, Arch::X86_64, None).unwrap()
}

async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

/// Runs `command` in the guest through the agent and returns its output.
async fn run_by_agent(vm: &mut Vm, command: &[&str]) -> String {
    let done = vm
        .agent()
        .await
        .unwrap()
        .exec(command, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.exit_code, Some(0), "{command:?}");
    String::from_utf8_lossy(&done.stdout).into_owned()
}

/// What proves the guest is the same boot, and that SSH, the agent and
/// the serial console all reach it: each reads its boot id.
async fn same_guest_everywhere(vm: &mut Vm, boot_id: &str) {
    assert_eq!(
        run(vm, "cat /proc/sys/kernel/random/boot_id").await,
        boot_id
    );
    assert_eq!(
        run_by_agent(vm, &["cat", "/proc/sys/kernel/random/boot_id"]).await,
        boot_id,
        "the agent's guest"
    );
    let serial = vm
        .serial()
        .await
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id")
        .await
        .unwrap();
    assert_eq!(serial.stdout, boot_id, "the serial console's guest");
}

/// A fresh boot of the arm64 guest: an aarch64 kernel on a Cortex-A72,
/// its login on the serial port `ttyAMA0`. The agent and the serial
/// console reach it; a hot-plugged disk (on one of the `virt` machine's
/// spare PCIe root ports) takes data; two live migrations (tcp, unix)
/// keep the same boot, the disk's data, the agent and the console (a
/// migration to the x86 emulator is refused before it starts); the
/// disk is then unplugged, and `power_off` presses the power button
/// (the `virt` machine's GPIO key), on which the guest shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_and_keeps_working_through_migrations_and_powers_off_by_its_button() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let guest = common::default_arm64().clone();
    assert_eq!(guest.arch, Arch::Aarch64);
    assert_eq!(guest.machine.machine_type, "virt");
    let mut config = VmConfig::new(guest);
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Fresh;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    assert_eq!(run(&vm, "uname -m").await, "aarch64\n");
    // Cortex-A72 is Arm's part 0xd08.
    let cpuinfo = run(&vm, "cat /proc/cpuinfo").await;
    assert!(cpuinfo.contains("CPU part\t: 0xd08"), "{cpuinfo}");
    assert!(
        run(&vm, "cat /proc/cmdline")
            .await
            .contains("console=ttyAMA0"),
        "the serial console is the PL011's"
    );
    let boot_id = run(&vm, "cat /proc/sys/kernel/random/boot_id").await;
    same_guest_everywhere(&mut vm, &boot_id).await;

    // The x86 emulator as the destination: refused before it starts,
    // and the guest runs on.
    let pid = vm.pid().unwrap();
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.destination_qemu = Some(x86_qemu());
    let error = chain(&vm.migrate_with(&spec).await.unwrap_err());
    assert!(error.contains("qemu-system-aarch64"), "{error}");
    assert_eq!(vm.pid().unwrap(), pid);
    same_guest_everywhere(&mut vm, &boot_id).await;

    let device = vm.hotplug().disk("data", 16).await.unwrap();
    run(
        &vm,
        &format!("echo written-before-migrating | dd of={device} conv=fsync 2>/dev/null"),
    )
    .await;
    for mode in [MigrationMode::Tcp, MigrationMode::Unix] {
        vm.migrate(mode).await.unwrap();
        vm.login_remote().await.unwrap();
        same_guest_everywhere(&mut vm, &boot_id).await;
        assert_eq!(
            run(&vm, &format!("head -c 25 {device}")).await,
            "written-before-migrating\n",
            "the hot-plugged disk after a {mode:?} migration"
        );
    }
    assert_ne!(vm.pid().unwrap(), pid, "the guest moved to new QEMUs");
    vm.hotplug().unplug("data").await.unwrap();
    assert_eq!(
        run(
            &vm,
            &format!("test -e {device} && echo present || echo gone")
        )
        .await,
        "gone\n"
    );
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::Graceful);
    let console = std::fs::read_to_string(logs.path().join("console.log")).unwrap();
    assert!(
        console.contains("reboot: Power down"),
        "the guest shut itself down on the power button:\n{console}"
    );
}

/// A user's own arm64 guest: a `guest.toml` naming `arch = "aarch64"`
/// and `firmware = "uefi"`, which boots the arm64 kernel through AAVMF
/// (Arm's UEFI build; the kernel then sees ACPI rather than a device
/// tree). From its ready snapshot (the variable store frozen with it),
/// it logs in, runs under UEFI, migrates keeping its boot, and powers
/// off by its (ACPI) power button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_arm64_guest_boots_through_uefi_and_migrates() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_guest_toml_of(
        common::default_arm64(),
        dir.path(),
        "firmware = \"uefi\"",
        "",
    );
    let (guest, warnings) = virtest::guest::GuestDescription::load(&file).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(guest.arch, Arch::Aarch64);
    let mut config = VmConfig::new(guest);
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(vm.start().is_restored(), "{}", vm.start());
    vm.login_remote().await.unwrap();
    assert_eq!(run(&vm, "uname -m").await, "aarch64\n");
    assert_eq!(
        run(&vm, "test -d /sys/firmware/efi && echo uefi").await,
        "uefi\n"
    );
    let boot_id = run(&vm, "cat /proc/sys/kernel/random/boot_id").await;
    vm.migrate(MigrationMode::Tcp).await.unwrap();
    vm.login_remote().await.unwrap();
    assert_eq!(
        run(&vm, "cat /proc/sys/kernel/random/boot_id").await,
        boot_id
    );
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::Graceful);
}

/// The guide's migration test in one run, the x86 and the arm64 guests
/// side by side: each migration over tcp, unix, exec and fd, from each
/// guest's ready snapshot. Then the guide's boot test on the arm64 guest
/// (a fresh boot, its kernel release checked).
#[test]
fn the_guides_tests_pass_on_both_guests_in_one_run() {
    let _slot = common::guest_slots(2);
    common::guest();
    common::default_arm64();
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("params.toml");
    std::fs::write(
        &params,
        "guest = [\"default\", \"default-arm64\"]\n\
         migration_mode = [\"tcp\", \"unix\", \"exec\", \"fd\"]\n",
    )
    .unwrap();
    let (output, json) = common::virtest_run(
        &[
            "migration",
            "--params-file",
            &params.to_string_lossy(),
            "--max-parallel",
            "2",
        ],
        &dir.path().join("results"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(json.tests.len(), 8, "{stdout}");
    for test in &json.tests {
        assert_eq!(test.status, Status::Pass, "{}: {stdout}", test.name);
        let start = test.vm_start.as_deref().unwrap_or_default();
        assert!(start.contains("snapshot"), "{}: {start}", test.name);
    }
    let arm: Vec<_> = json
        .tests
        .iter()
        .filter(|t| t.params["guest"] == "default-arm64")
        .collect();
    assert_eq!(arm.len(), 4, "{stdout}");
    for test in arm {
        // Its migration ran on Arm's machine, in qemu-system-aarch64.
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(test.logdir.join("migration-1.json")).unwrap())
                .unwrap();
        let machine = report["machine_type"].as_str().unwrap_or_default();
        assert!(machine.starts_with("virt"), "{}: {machine}", test.name);
        let qemu_log = std::fs::read_to_string(test.logdir.join("qemu.log")).unwrap();
        assert!(qemu_log.contains("qemu-system-aarch64"), "{}", test.name);
    }

    let (output, json) = common::virtest_run(
        &["boot", "-p", "guest=default-arm64"],
        &dir.path().join("boot-results"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!((json.total, json.pass), (1, 1), "{stdout}");
    assert_eq!(json.tests[0].vm_start.as_deref(), Some("fresh"), "{stdout}");
}

/// The arm64 guest given the x86 emulator is refused before it starts,
/// naming the emulator and the package it needs; with `accel=kvm`, it
/// says KVM runs only this machine's architecture. No QEMU is left.
#[tokio::test]
async fn the_wrong_emulator_or_kvm_is_refused_with_what_to_do() {
    let logs = common::test_logs();
    let mut config = VmConfig::new(common::default_arm64().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    config.qemu = Some(x86_qemu());
    let err = refused(config.clone()).await;
    for part in [
        "`virt`",
        "qemu-system-aarch64",
        "apt-get install qemu-system-arm",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }

    config.qemu = None;
    config.accel = "kvm".parse().unwrap();
    let err = refused(config).await;
    assert!(
        err.contains("aarch64") && err.contains("KVM runs only the machine's own"),
        "{err}"
    );
}

/// A TPM asked of the arm64 guest is refused before anything starts:
/// virtest's TPM is x86's `tpm-tis`.
#[tokio::test]
async fn a_tpm_is_refused_for_the_arm64_guest() {
    let mut config = VmConfig::new(common::default_arm64().clone());
    config.tpm = true;
    let err = refused(config).await;
    assert!(
        err.contains("aarch64") && err.contains("x86_64 guests only"),
        "{err}"
    );
}

/// A host folder shared into the arm64 guest (virtio-9p on `virt`):
/// files cross both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folder_works_on_the_arm64_guest() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("from-host"), "written on the host\n").unwrap();
    let mut config = VmConfig::new(common::default_arm64().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.share(data.path(), "data").unwrap();
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let share = vm.config().shares[0].clone();
    run(
        &vm,
        &format!("mkdir -p /mnt/data && {}", share.mount_command("/mnt/data")),
    )
    .await;
    assert_eq!(
        run(&vm, "cat /mnt/data/from-host").await,
        "written on the host\n"
    );
    run(
        &vm,
        "echo written in the guest > /mnt/data/from-guest && sync",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(data.path().join("from-guest")).unwrap(),
        "written in the guest\n"
    );
    vm.power_off().await.unwrap();
}

/// A `guest.toml` naming an architecture virtest does not run is refused
/// when loaded, naming the key and the ones it runs.
#[test]
fn an_unknown_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_guest_toml(dir.path(), "");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("arch = \"x86_64\"", "arch = \"sparc\"")).unwrap();
    let (ok, _, stderr) = common::virtest(&["guest", "check", &file.to_string_lossy()]);
    assert!(!ok);
    assert!(
        stderr.contains("`arch`")
            && stderr.contains("`sparc`")
            && stderr.contains("x86_64, aarch64"),
        "{stderr}"
    );
}
