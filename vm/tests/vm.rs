//! The `Vm` with the default guest: the guide's boot shape, reboots,
//! pause, screendumps, forced power-off, two VMs at once.

use virtest_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use virtest_vm::{PowerOff, Reboot, Vm, VmConfig, VmState};

fn config(log_dir: &std::path::Path) -> VmConfig {
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(log_dir.to_path_buf());
    config
}

async fn boot_id(vm: &Vm) -> String {
    let out = vm
        .remote()
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id")
        .await
        .unwrap();
    out.stdout.trim().to_string()
}

#[tokio::test]
async fn the_guides_boot_test_leaves_logs_and_no_qemu() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = Vm::new(config(logs.path()));
    assert_eq!(vm.state().await.unwrap(), VmState::Off);
    vm.power_on().await.unwrap();
    let pid = vm.pid().unwrap();
    assert!(vm.is_on());
    assert_eq!(vm.state().await.unwrap(), VmState::Running);
    let mode = std::fs::metadata(vm.files().runtime_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "runtime dir must be private");

    vm.login_remote().await.unwrap();
    let uname = vm.remote().unwrap().run("uname -r").await.unwrap();
    assert_eq!(
        Some(uname.stdout.trim()),
        common::guest().kernel_release.as_deref()
    );
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    let how = vm.power_off().await.unwrap();
    assert!(
        matches!(how, PowerOff::ByGuest | PowerOff::Graceful),
        "{how:?}"
    );
    assert!(!vm.is_on());
    assert!(!common::alive(pid));
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::AlreadyOff);
    assert!(vm.remote().is_err());

    let console = std::fs::read_to_string(logs.path().join("console.log")).unwrap();
    assert!(console.contains(&common::guest().ready_marker), "{console}");
    let qmp = std::fs::read_to_string(logs.path().join("qmp.log")).unwrap();
    assert!(qmp.contains("qmp_capabilities") && qmp.contains("query-status"));
    // QEMU's last words are in it once power_off returns.
    let events = virtest_qmp::transcript::events(&qmp);
    assert_eq!(events.last().unwrap()["event"], "SHUTDOWN", "{qmp}");
    let qemu = std::fs::read_to_string(logs.path().join("qemu.log")).unwrap();
    assert!(qemu.contains("virtest: starting") && qemu.contains("-no-user-config"));
    let runtime = vm.files().runtime_dir().to_path_buf();
    drop(vm);
    assert!(!runtime.exists(), "the runtime dir is removed with the VM");
}

#[tokio::test]
async fn reboots_by_the_guest_and_forced_both_come_back() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = Vm::new(config(logs.path()));
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let first = boot_id(&vm).await;

    vm.reboot(Reboot::Guest).await.unwrap();
    assert!(vm.remote().is_err(), "the old session is gone");
    vm.login_remote().await.unwrap();
    let second = boot_id(&vm).await;
    assert_ne!(first, second);

    vm.reboot(Reboot::Forced).await.unwrap();
    vm.login_remote().await.unwrap();
    let third = boot_id(&vm).await;
    assert_ne!(second, third);
    let console = vm.console().unwrap().text_since(Default::default());
    assert_eq!(console.matches(&common::guest().ready_marker).count(), 3);
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::Graceful);
}

#[tokio::test]
async fn a_paused_guest_clock_stalls_and_screendumps_are_png() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = Vm::new(config(logs.path()));
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let uptime = async |vm: &Vm| -> f64 {
        let out = vm.remote().unwrap().run("cat /proc/uptime").await.unwrap();
        out.stdout
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = uptime(&vm).await;
    let wall = Instant::now();
    vm.pause().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Paused);
    tokio::time::sleep(Duration::from_secs(2)).await;
    vm.resume().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Running);
    let guest = uptime(&vm).await - before;
    let wall = wall.elapsed().as_secs_f64();
    assert!(
        guest < wall - 1.5,
        "the guest counted {guest:.2} s of {wall:.2} s wall, 2 s of them paused"
    );

    let png = logs.path().join("screen.png");
    vm.screendump(&png).await.unwrap();
    let (width, height) = check_png(&std::fs::read(&png).unwrap());
    // VGA text mode: 80x25 cells of 9x16 pixels.
    assert_eq!((width, height), (720, 400));
    // No time for the guest: it is not asked to shut down.
    assert_eq!(
        vm.within(Duration::ZERO).power_off().await.unwrap(),
        PowerOff::Quit
    );
    let qmp = std::fs::read_to_string(logs.path().join("qmp.log")).unwrap();
    assert!(!qmp.contains("system_powerdown"), "{qmp}");
    let events = virtest_qmp::transcript::events(&qmp);
    assert_eq!(events.last().unwrap()["event"], "SHUTDOWN", "{qmp}");
    assert_eq!(events.last().unwrap()["data"]["reason"], "host-qmp-quit");
}

/// Checks a PNG's structure, chunk CRCs and image data size; returns its
/// dimensions.
fn check_png(data: &[u8]) -> (u32, u32) {
    use std::io::Read;
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n");
    let (mut at, mut idat, mut header) = (8, Vec::new(), None);
    loop {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind = &data[at + 4..at + 8];
        let body = &data[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(data[at + 8 + len..at + 12 + len].try_into().unwrap());
        let mut hasher = flate2::Crc::new();
        hasher.update(&data[at + 4..at + 8 + len]);
        assert_eq!(hasher.sum(), crc, "CRC of chunk {kind:?}");
        match kind {
            b"IHDR" => header = Some(body.to_vec()),
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let header = header.expect("IHDR");
    let width = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(header[4..8].try_into().unwrap());
    let (depth, color) = (header[8], header[9]);
    let channels = match color {
        2 => 3,
        6 => 4,
        other => panic!("unexpected color type {other}"),
    };
    assert_eq!(depth, 8);
    let mut pixels = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut pixels)
        .unwrap();
    assert_eq!(
        pixels.len(),
        height as usize * (1 + width as usize * channels)
    );
    (width, height)
}

#[tokio::test]
async fn power_off_forces_a_hung_guest_and_a_frozen_qemu() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = Vm::new(config(logs.path()));
    vm.power_on().await.unwrap();
    vm.within(Duration::from_secs(60))
        .wait_for_console(&common::guest().ready_marker)
        .await
        .unwrap();
    // A paused guest cannot answer the power button: QEMU must be told
    // to quit.
    vm.pause().await.unwrap();
    let pid = vm.pid().unwrap();
    let how = vm.within(Duration::from_secs(1)).power_off().await.unwrap();
    assert_eq!(how, PowerOff::Quit);
    assert!(!common::alive(pid));

    // A stopped QEMU answers neither QMP nor SIGTERM: only SIGKILL.
    vm.power_on().await.unwrap();
    let pid = vm.pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let start = Instant::now();
    let how = vm.within(Duration::from_secs(1)).power_off().await.unwrap();
    assert_eq!(how, PowerOff::Killed);
    assert!(!common::alive(pid));
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn two_vms_run_at_once_on_distinct_ports() {
    let _slots = common::guest_slots(2);
    let logs = common::test_logs();
    let mut a = Vm::new(config(&logs.path().join("a")));
    let mut b = Vm::new(config(&logs.path().join("b")));
    assert_ne!(a.id(), b.id());
    let (ra, rb) = tokio::join!(a.power_on(), b.power_on());
    ra.unwrap();
    rb.unwrap();
    assert_ne!(a.ssh_access().unwrap().port, b.ssh_access().unwrap().port);
    let (ra, rb) = tokio::join!(a.login_remote(), b.login_remote());
    ra.unwrap();
    rb.unwrap();
    assert_ne!(boot_id(&a).await, boot_id(&b).await);
    for vm in [&mut a, &mut b] {
        vm.remote().unwrap().run("shutdown -h now").await.unwrap();
        vm.power_off().await.unwrap();
    }
    for dir in ["a", "b"] {
        let console = std::fs::read_to_string(logs.path().join(dir).join("console.log")).unwrap();
        assert_eq!(console.matches(&common::guest().ready_marker).count(), 1);
    }
}
