//! Ready snapshots on the default guest: made once, restored many times;
//! clones that are not twins; a restored VM that reboots and powers on
//! again (`migration/tests/restored.rs` migrates one);
//! stale, damaged and refused snapshots never used; a store that cannot
//! be written. Each test has its own store, so each makes its snapshot.

use virtest_testkit as common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use virtest_vm::{BootMode, Reboot, Start, Vm, VmConfig};

fn config(logs: &Path, store: &Path) -> VmConfig {
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.to_path_buf());
    config.boot = BootMode::Snapshot;
    config.snapshot_dir = Some(store.to_path_buf());
    config
}

fn key_of(start: &Start) -> String {
    match start {
        Start::MadeSnapshot { key } | Start::FromSnapshot { key } => key.clone(),
        other => panic!("not started from a snapshot: {other}"),
    }
}

/// The only snapshot directory in `store`.
fn snapshot_dir(store: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Snapshot files are read-only: makes one writable to damage it.
fn writable(path: &Path) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
}

async fn run(vm: &Vm, command: &str) -> String {
    let out = vm.remote().unwrap().run(command).await.unwrap();
    out.stdout.trim().to_string()
}

/// Starts a VM from `store` and logs in.
async fn started(logs: &Path, store: &Path) -> Vm {
    let mut vm = Vm::new(config(logs, store));
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm
}

/// Two VMs that want the same snapshot at once: one makes it (under the
/// lock), the other waits and restores it; both are restored clones.
#[tokio::test]
async fn clones_are_not_twins() {
    let _slots = common::guest_slots(2);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    let (dir_a, dir_b) = (logs.path().join("a"), logs.path().join("b"));
    let (a, b) = tokio::join!(started(&dir_a, store.path()), started(&dir_b, store.path()));
    let key = key_of(a.start());
    assert_eq!(key_of(b.start()), key);
    let made = [a.start(), b.start()]
        .iter()
        .filter(|s| matches!(s, Start::MadeSnapshot { .. }))
        .count();
    assert_eq!(made, 1, "{} / {}", a.start(), b.start());
    let random = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    let (ra, rb) = tokio::join!(run(&a, random), run(&b, random));
    assert_eq!(ra.len(), 32, "{ra}");
    assert_ne!(ra, rb, "two clones drew the same random bytes");
    for vm in [&a, &b] {
        let guest: f64 = run(vm, "date +%s").await.parse().unwrap();
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (host - guest).abs() <= 1.5,
            "the clone's clock is {guest}, the host's {host}"
        );
        let dmesg = run(vm, "dmesg").await;
        assert!(
            dmesg.contains("reseeded due to virtual machine fork"),
            "the kernel did not reseed on the new generation id:\n{dmesg}"
        );
    }
}

#[tokio::test]
async fn a_restored_vm_reboots_and_restores_again() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    drop(started(&logs.path().join("maker"), store.path()).await);
    let mut vm = started(&logs.path().join("vm"), store.path()).await;
    assert!(matches!(vm.start(), Start::FromSnapshot { .. }));
    let boot_id = run(&vm, "cat /proc/sys/kernel/random/boot_id").await;
    vm.reboot(Reboot::Guest).await.unwrap();
    vm.login_remote().await.unwrap();
    assert_ne!(
        run(&vm, "cat /proc/sys/kernel/random/boot_id").await,
        boot_id,
        "the reboot did not boot"
    );
    let png = logs.path().join("screen.png");
    vm.screendump(&png).await.unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
    vm.power_off().await.unwrap();
    // Powered on again, it restores again.
    vm.power_on().await.unwrap();
    assert!(matches!(vm.start(), Start::FromSnapshot { .. }));
    vm.login_remote().await.unwrap();
    vm.power_off().await.unwrap();
}

#[tokio::test]
async fn a_damaged_snapshot_is_made_again_and_the_vm_starts() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    let key = key_of(
        started(&logs.path().join("maker"), store.path())
            .await
            .start(),
    );
    let state = snapshot_dir(store.path()).join("state");
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 2] = [
        ("truncated", |state| {
            let file = std::fs::OpenOptions::new().write(true).open(state).unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len / 2).unwrap();
        }),
        ("a flipped byte", |state| {
            let mut bytes = std::fs::read(state).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(state, bytes).unwrap();
        }),
    ];
    for (what, damage) in damages {
        writable(&state);
        damage(&state);
        let vm = started(&logs.path().join(what), store.path()).await;
        assert_eq!(
            vm.start(),
            &Start::MadeSnapshot { key: key.clone() },
            "{what}: the damaged snapshot was not made again"
        );
        assert_eq!(run(&vm, "echo ok").await, "ok");
    }
}

#[tokio::test]
async fn a_stale_snapshot_is_not_used() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    // A copy of the guest, to rebuild.
    let guest_dir = tempfile::tempdir().unwrap();
    let original = common::description();
    let kernel = original.boot.kernel.as_ref().unwrap();
    std::fs::copy(&kernel.kernel, guest_dir.path().join("vmlinux")).unwrap();
    let initrd = guest_dir.path().join("initramfs.cpio.gz");
    std::fs::copy(kernel.initrd.as_ref().unwrap(), &initrd).unwrap();
    let mut guest = original.clone();
    let copied = guest.boot.kernel.as_mut().unwrap();
    copied.kernel = guest_dir.path().join("vmlinux");
    copied.initrd = Some(initrd.clone());

    let start_with = async |name: &str, guest: &virtest_guest::GuestDescription, memory| {
        let mut config = config(&logs.path().join(name), store.path());
        config.guest = guest.clone();
        config.memory_mib = memory;
        let mut vm = Vm::new(config);
        vm.power_on().await.unwrap();
        vm.login_remote().await.unwrap();
        vm.start().clone()
    };
    let first = key_of(&start_with("first", &guest, None).await);
    assert_eq!(
        start_with("again", &guest, None).await,
        Start::FromSnapshot { key: first.clone() }
    );
    // A guest-visible option.
    let more_memory = start_with("memory", &guest, Some(320)).await;
    assert!(matches!(&more_memory, Start::MadeSnapshot { key } if *key != first));
    // A rebuilt guest (same content, newer file).
    std::thread::sleep(Duration::from_millis(20));
    let bytes = std::fs::read(&initrd).unwrap();
    std::fs::write(&initrd, bytes).unwrap();
    let rebuilt = start_with("rebuilt", &guest, None).await;
    assert!(matches!(&rebuilt, Start::MadeSnapshot { key } if *key != first));
    // The rebuilt guest's snapshot replaced both stale ones (they were
    // made of the old initramfs).
    assert!(snapshot_dir(store.path()).ends_with(key_of(&rebuilt)));

    // Another QEMU binary (a wrapper of the same one) is another key.
    let wrapper = guest_dir.path().join("qemu-wrapper");
    common::write_script(&wrapper, "#!/bin/sh\nexec qemu-system-x86_64 \"$@\"\n");
    let mut config = config(&logs.path().join("wrapper"), store.path());
    config.guest = guest.clone();
    config.qemu = Some(wrapper);
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(matches!(vm.start(), Start::MadeSnapshot { key } if *key != key_of(&rebuilt)));
}

#[tokio::test]
async fn a_snapshot_qemu_refuses_is_removed_and_the_vm_boots() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    drop(started(&logs.path().join("maker"), store.path()).await);
    // A stream QEMU refuses, recorded as whole: it passes the checks.
    let dir = snapshot_dir(store.path());
    writable(&dir.join("state"));
    std::fs::write(dir.join("state"), b"not a migration stream").unwrap();
    let meta_path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let state = &mut meta["files"][0];
    assert_eq!(state["name"], "state");
    state["size"] = 22.into();
    state["sha256"] = common::sha256(&dir.join("state")).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();

    let vm = started(&logs.path().join("vm"), store.path()).await;
    let Start::SnapshotFailed { why } = vm.start() else {
        panic!("not a fresh boot: {}", vm.start());
    };
    assert!(
        why.contains("restoring snapshot") && why.contains("removed"),
        "{why}"
    );
    assert!(!dir.exists(), "the refused snapshot is still there");
    assert_eq!(run(&vm, "echo ok").await, "ok");
}

#[tokio::test]
async fn a_store_that_cannot_be_written_boots_fresh_and_says_where() {
    let _slots = common::guest_slots(1);
    let logs = common::test_logs();
    let file = logs.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let store = file.join("snapshots");
    let vm = started(&logs.path().join("vm"), &store).await;
    let Start::SnapshotFailed { why } = vm.start() else {
        panic!("not a fresh boot: {}", vm.start());
    };
    assert!(why.contains(&store.display().to_string()), "{why}");
    assert_eq!(run(&vm, "echo ok").await, "ok");
}

/// A guest with a raw disk, described in `dir`.
fn disk_guest(dir: &Path) -> virtest_guest::GuestDescription {
    std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let toml = common::write_guest_toml(dir, "[[disks]]\npath = \"disk.img\"\n");
    virtest_guest::GuestDescription::load(&toml).unwrap().0
}

/// A disk guest's VM runs on overlays over its snapshot's frozen disks:
/// pruning, even with `--all`, leaves that snapshot while the VM lives,
/// and removes it once the VM is gone.
#[tokio::test]
async fn a_snapshot_in_use_is_not_pruned() {
    let _slots = common::guest_slots(1);
    let (logs, store, guest_dir) = (
        common::test_logs(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut config = config(logs.path(), store.path());
    config.guest = disk_guest(guest_dir.path());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let dir = snapshot_dir(store.path());
    let snapshots = virtest_guest::snapshots::SnapshotStore::new(store.path().to_path_buf());
    let pruned = snapshots.prune(true).unwrap();
    assert!(pruned.removed.is_empty(), "{pruned:?}");
    assert_eq!(pruned.in_use, vec![dir.clone()]);
    assert!(dir.join("state").is_file());
    assert_eq!(run(&vm, "echo ok").await, "ok");
    vm.power_off().await.unwrap();
    drop(vm);
    let pruned = snapshots.prune(true).unwrap();
    assert_eq!(pruned.removed.len(), 1, "{pruned:?}");
    assert!(!dir.exists());
}

/// A snapshot whose stream ends before it begins (an empty state,
/// recorded as whole): the restore fails as soon as QEMU reads it, not
/// at the start timeout, and the VM boots fresh.
#[tokio::test]
async fn a_stream_that_ends_at_once_is_noticed_at_once() {
    let _slots = common::guest_slots(1);
    let (logs, store) = (common::test_logs(), tempfile::tempdir().unwrap());
    drop(started(&logs.path().join("maker"), store.path()).await);
    let dir = snapshot_dir(store.path());
    writable(&dir.join("state"));
    std::fs::write(dir.join("state"), b"").unwrap();
    let meta_path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["files"][0]["size"] = 0.into();
    meta["files"][0]["sha256"] = common::sha256(&dir.join("state")).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();

    let mut config = config(&logs.path().join("vm"), store.path());
    config.start_timeout = Duration::from_secs(60);
    let mut vm = Vm::new(config);
    let began = std::time::Instant::now();
    vm.power_on().await.unwrap();
    let took = began.elapsed();
    let Start::SnapshotFailed { why } = vm.start() else {
        panic!("not a fresh boot: {}", vm.start());
    };
    assert!(why.contains("restoring snapshot"), "{why}");
    assert!(
        took < Duration::from_secs(30),
        "the failed restore took {took:?}, as long as the start timeout"
    );
}

/// A store on a disk too small for the guest's state (a 4 MiB tmpfs;
/// needs root): the VM boots fresh, and the reason says the disk is full
/// and where.
#[tokio::test]
async fn a_full_disk_while_saving_is_named() {
    let _slots = common::guest_slots(1);
    let logs = common::test_logs();
    let Some(mount) = common::small_disk(4) else {
        return;
    };
    let vm = started(logs.path(), mount.path()).await;
    let Start::SnapshotFailed { why } = vm.start() else {
        panic!("not a fresh boot: {}", vm.start());
    };
    assert!(why.contains("no space left"), "{why}");
    assert!(why.contains(&mount.path().display().to_string()), "{why}");
    assert_eq!(run(&vm, "echo ok").await, "ok");
}
