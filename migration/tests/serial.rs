//! `vm.serial()` and `vm.within(d).exec_command_and_wait_for_pattern`: the serial
//! console of a running VM, logged in at its prompt, kept across a live
//! migration, recorded in `console.log` all along; the error paths.

use virtest_testkit as common;

use std::time::Duration;

use virtest_migration::{Migrate, MigrationMode};
use virtest_remote::Session;
use virtest_vm::{BootMode, Error, Vm, VmConfig};

fn config(logs: &std::path::Path) -> VmConfig {
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.to_path_buf());
    config.boot = BootMode::Snapshot;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serial_console_session_outlives_a_migration() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = Vm::new(config(logs.path()));
    let off = vm.serial().await.unwrap_err();
    assert!(matches!(off, Error::Off { .. }), "{off}");
    vm.power_on().await.unwrap();

    let serial = vm.serial().await.unwrap();
    assert_eq!(serial.run("echo $((6*7))").await.unwrap().stdout, "42\n");
    let failed = serial
        .run_unchecked("exit 3", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed.exit_status, 3);
    let boot_id = serial
        .run("cat /proc/sys/kernel/random/boot_id")
        .await
        .unwrap()
        .stdout;
    vm.login_remote().await.unwrap();
    let over_ssh = vm
        .remote()
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id")
        .await
        .unwrap()
        .stdout;
    assert_eq!(boot_id, over_ssh, "the console and SSH reach one guest");
    // With the network down (after SSH's command returned), the console
    // still runs commands and tells their status.
    vm.remote()
        .unwrap()
        .run("(sleep 1; ip link set eth0 down) >/dev/null 2>&1 &")
        .await
        .unwrap();
    let serial = vm.serial().await.unwrap();
    serial
        .wait_until_succeeds(
            "[ \"$(cat /sys/class/net/eth0/operstate)\" = down ]",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let failed = serial
        .run_unchecked("false", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed.exit_status, 1);

    let printed = vm
        .within(Duration::from_secs(30))
        .exec_command_and_wait_for_pattern("echo mark-$((2+3))-done", "mark-5-done")
        .await
        .unwrap();
    assert!(printed.ends_with("mark-5-done"), "{printed:?}");
    let timeout = vm
        .within(Duration::from_secs(2))
        .exec_command_and_wait_for_pattern("true", "never-printed")
        .await
        .unwrap_err();
    assert!(matches!(timeout, Error::ConsoleTimeout { .. }), "{timeout}");

    for mode in [MigrationMode::Unix, MigrationMode::Tcp] {
        vm.migrate(mode).await.unwrap();
        let serial = vm.serial().await.unwrap();
        let after = serial
            .run("cat /proc/sys/kernel/random/boot_id; echo after-$((40+2))")
            .await
            .unwrap()
            .stdout;
        assert_eq!(
            after,
            format!("{boot_id}after-42\n"),
            "after a {mode} migration"
        );
        let operstate = serial
            .run("cat /sys/class/net/eth0/operstate")
            .await
            .unwrap();
        assert_eq!(operstate.stdout, "down\n", "the network stays down");
    }

    vm.within(Duration::ZERO).power_off().await.unwrap();
    assert!(matches!(vm.serial().await, Err(Error::Off { .. })));
    let log = std::fs::read_to_string(logs.path().join("console.log")).unwrap();
    assert!(
        log.contains("after-42") && log.contains("mark-5-done"),
        "{log}"
    );
}

/// The built-in Debian guest has no password (it logs in with virtest's
/// key), and its console logs root in by itself: the serial console
/// works from a ready snapshot, and after a migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_console_needs_no_password() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut config = VmConfig::new(common::debian().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(vm.start().is_restored(), "{}", vm.start());
    let root = vm
        .serial()
        .await
        .unwrap()
        .run("id -u")
        .await
        .unwrap()
        .stdout;
    assert_eq!(root, "0\n");
    vm.migrate(MigrationMode::Unix).await.unwrap();
    let after = vm
        .serial()
        .await
        .unwrap()
        .run("echo still")
        .await
        .unwrap()
        .stdout;
    assert_eq!(after, "still\n");
    vm.within(Duration::ZERO).power_off().await.unwrap();
}
