//! Migrations between hosts that do not share storage: the VM's disk is
//! copied live (the destination's new overlay served over NBD, the
//! source's mirrored into it), its base image copied once per host.
//! Simulated hosts, real OpenSSH, QEMU and guest. Needs root; without it
//! each test says why it is skipped.

mod common;

use std::path::{Path, PathBuf};

use common::lab;
use virtest_guest::GuestDescription;
use virtest_migration::{Migrate, MigrationMode, MigrationSpec, Tls};
use virtest_vm::{Vm, VmConfig};

/// The guest's disk: 32 MiB, the first MiB a pattern the guest checks.
const DISK_MIB: usize = 32;

/// A VM of the default guest with a raw disk of [`DISK_MIB`] made in
/// `dir`, its logs there too; and the disk's base image.
fn config_with_disk(dir: &Path) -> (VmConfig, PathBuf) {
    let base = dir.join("base.img");
    let mut bytes = b"virtest-base-pattern\n".repeat((1 << 20) / 21);
    bytes.resize(DISK_MIB << 20, 0);
    std::fs::write(&base, bytes).unwrap();
    let toml = common::write_guest_toml(
        dir,
        &format!(
            "[[disks]]\npath = \"{}\"\nformat = \"raw\"\n",
            base.display()
        ),
    );
    (config_of(dir, &toml), base)
}

/// A VM of the guest `toml` describes, its logs in `dir`.
fn config_of(dir: &Path, toml: &Path) -> VmConfig {
    let mut config = VmConfig::new(GuestDescription::load(toml).unwrap().0);
    config.log_dir = Some(dir.to_path_buf());
    config
}

/// Runs `script` in the guest; its stdout.
async fn guest(vm: &Vm, script: &str) -> String {
    let out = vm.remote().unwrap().run(script).await.unwrap();
    assert_eq!(out.exit_status, 0, "{script}: {}", out.stderr);
    out.stdout
}

/// The checksums of the disk's second 8 MiB as the guest sees it (its
/// page cache), then as the disk holds it (the cache dropped), and of
/// its first MiB, the base's pattern.
async fn disk_sums(vm: &Vm) -> (String, String, String) {
    let sum = "dd if=/dev/vda bs=1M skip=8 count=8 2>/dev/null | md5sum";
    let out = guest(
        vm,
        &format!(
            "sync; {sum}; echo 3 > /proc/sys/vm/drop_caches; {sum}; \
             dd if=/dev/vda bs=1M count=1 2>/dev/null | md5sum"
        ),
    )
    .await;
    let sums: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    (sums[0].clone(), sums[1].clone(), sums[2].clone())
}

/// A VM whose disk is written on host a moves to b, to this machine,
/// back to a (TLS, x509) and to b (TLS, psk: the disk copied under the
/// same credentials, which are copied to the hosts), to a on QEMU 10.0
/// and back to b on 7.2, the disk written while it moves. After each hop
/// the disk holds what the guest wrote (read back with its cache
/// dropped), the base image here is unchanged, each host holds one copy
/// of the base (under its SHA-256), and the report has the copy's
/// figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_moves_with_its_vm_between_hosts_of_their_own_storage() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    let (mut config, base) = config_with_disk(logs.path());
    let base_sum = common::sha256(&base);
    let a = lab.add_host("a").await.unwrap();
    let b = lab.add_host("b").await.unwrap();
    config.host = a.clone();
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    guest(
        &vm,
        "dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=8 conv=fsync 2>/dev/null",
    )
    .await;
    let (written, on_disk, pattern) = disk_sums(&vm).await;
    assert_eq!(written, on_disk);
    let local = lab.local();
    // The fifth hop runs QEMU 10.0 on a (its NBD server, then its mirror
    // back to 7.2 on b).
    let newer = Some(common::qemu_build("10.0"));
    let system = Some(vm.instance().unwrap().cmdline().binary.clone());
    let hops = [
        (&b, None, None),
        (&local, None, None),
        (&a, Some(Tls::X509), None),
        (&b, Some(Tls::Psk), None),
        (&a, None, newer),
        (&b, None, system),
    ];
    for (round, (to, tls, qemu)) in hops.into_iter().enumerate() {
        // A writer keeps rewriting a MiB of the region while it moves.
        guest(
            &vm,
            "setsid sh -c 'while :; do dd if=/dev/urandom of=/dev/vda bs=64k seek=160 \
             count=16 conv=fsync 2>/dev/null; done' </dev/null >/dev/null 2>&1 & \
             echo $! > /run/writer.pid",
        )
        .await;
        let from = vm.host().name().to_string();
        let mut spec = MigrationSpec::new(MigrationMode::Tcp);
        spec.to = Some(to.clone());
        spec.tls = tls;
        spec.destination_qemu = qemu;
        let report = vm
            .migrate_with(&spec)
            .await
            .unwrap_or_else(|e| panic!("{from} to {}: {}", to.name(), common::error_chain(&e)));
        let copied = report.measurements.get("disk_copy_mib").copied();
        assert!(
            copied.is_some_and(|mib| mib >= 8.0),
            "round {round}: {copied:?} MiB copied, {:?}",
            report.measurements
        );
        eprintln!(
            "{from} > {}: {:?}, downtime {} ms",
            to.name(),
            report.measurements,
            report.downtime_ms
        );
        vm.login_remote().await.unwrap();
        guest(&vm, "kill $(cat /run/writer.pid); sleep 0.2").await;
        let (cached, read_back, base_part) = disk_sums(&vm).await;
        assert_eq!(cached, read_back, "round {round}: {from} to {}", to.name());
        assert_eq!(base_part, pattern, "round {round}: the base's part");
    }
    assert_eq!(
        common::sha256(&base),
        base_sum,
        "the base image is unchanged"
    );
    for host in [&a, &b] {
        let images = host.storage_dir().unwrap().join("images");
        let copies: Vec<_> = std::fs::read_dir(&images).unwrap().collect();
        let names: Vec<String> = copies
            .iter()
            .map(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert!(
            names.contains(&format!("{base_sum}.img")),
            "{}: {names:?}",
            host.name()
        );
    }
    vm.power_off().await.unwrap();
}

/// Hosts that share this machine's storage see the VM's overlay where
/// it is: nothing is copied, and what the guest wrote is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_storage_moves_no_disk() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    lab.share_storage(true);
    let (config, _) = config_with_disk(logs.path());
    let b = lab.add_host("b").await.unwrap();
    assert!(b.sees_local_files());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    guest(
        &vm,
        "dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=8 conv=fsync 2>/dev/null",
    )
    .await;
    let (written, _, _) = disk_sums(&vm).await;
    for to in [&b, &lab.local()] {
        let report = vm.migrate_to(to, MigrationMode::Tcp).await;
        let report = report.unwrap_or_else(|e| panic!("{}", common::error_chain(&e)));
        assert!(!report.measurements.contains_key("disk_copy_mib"));
        vm.login_remote().await.unwrap();
        let (cached, read_back, _) = disk_sums(&vm).await;
        assert_eq!((&cached, &read_back), (&written, &written));
    }
    vm.power_off().await.unwrap();
}

/// A copy that fails leaves the source whole: the source runs on its
/// own disk, with no mirror or NBD client left on it and no QEMU on b,
/// and the next migration works. Two ways: a destination with other TLS
/// credentials (the disk goes under the migration's TLS, so NBD refuses
/// it before any RAM moves), and a copy that cannot finish in time (24
/// MiB through 8 Mbit/s within 10 s, the base on b already). A VM whose
/// disks are on b's storage then powers on there, not here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_leaves_the_source_whole() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    let (config, _) = config_with_disk(logs.path());
    let b = lab.add_host("b").await.unwrap();
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    guest(
        &vm,
        "dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=24 conv=fsync 2>/dev/null",
    )
    .await;
    let (written, _, _) = disk_sums(&vm).await;
    // The base reaches b at full speed.
    vm.migrate_to(&b, MigrationMode::Tcp).await.unwrap();
    vm.migrate_to(&lab.local(), MigrationMode::Tcp)
        .await
        .unwrap();
    vm.login_remote().await.unwrap();
    let source = vm.pid().unwrap();

    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.to = Some(b.clone());
    spec.tls = Some(Tls::X509);
    spec.tls_foreign_destination = true;
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let shown = common::error_chain(&error);
    assert!(shown.contains("`blockdev-add`"), "{shown}");
    assert_eq!(vm.pid(), Some(source));
    assert_no_copy_left(&vm).await;

    let link = b.link().unwrap();
    link.limit_rate(8).await.unwrap();
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.to = Some(b.clone());
    spec.timeout = std::time::Duration::from_secs(10);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let shown = common::error_chain(&error);
    assert!(shown.contains("mirrors to be in sync"), "{shown}");
    assert_eq!(vm.pid(), Some(source));
    assert_no_copy_left(&vm).await;
    vm.login_remote().await.unwrap();
    let (cached, read_back, _) = disk_sums(&vm).await;
    assert_eq!((&cached, &read_back), (&written, &written));

    link.clear().await.unwrap();
    vm.migrate_to(&b, MigrationMode::Tcp).await.unwrap();
    vm.power_off().await.unwrap();
    let error = vm.power_on().await.unwrap_err().to_string();
    assert!(
        error.contains("the VM's disks are on host `b`'s storage"),
        "{error}"
    );
    vm.set_host(b.clone()).unwrap();
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let (_, read_back, _) = disk_sums(&vm).await;
    assert_eq!(read_back, written, "b's disk, after a power cycle there");
    vm.power_off().await.unwrap();
}

/// No mirror or NBD client is left on the VM's QEMU, and no destination
/// QEMU runs beside it.
async fn assert_no_copy_left(vm: &Vm) {
    let qmp = vm.qmp().unwrap();
    let jobs = qmp
        .execute_raw("query-block-jobs", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(jobs, serde_json::json!([]), "no mirror left");
    let nodes = qmp
        .execute_raw("query-named-block-nodes", serde_json::json!({}))
        .await
        .unwrap()
        .to_string();
    assert!(!nodes.contains("vt-copy"), "no NBD client left: {nodes}");
    let qemus = || {
        common::processes_with(vm.id())
            .into_iter()
            .filter(|&pid| common::is_qemu(pid))
            .count()
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || qemus() == 1),
        "the destination's QEMU is gone"
    );
}

/// A UEFI guest's variable store is not copied to a host of its own
/// storage yet: starting one there is refused before QEMU starts, with
/// what to do instead, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uefi_guest_is_refused_on_a_host_of_its_own_storage() {
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    let toml = common::write_guest_toml(logs.path(), "");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[boot]\n", "[boot]\nfirmware = \"uefi\"\n");
    std::fs::write(&toml, text).unwrap();
    let b = lab.add_host("b").await.unwrap();
    let mut config = config_of(logs.path(), &toml);
    config.host = b;
    let mut vm = Vm::new(config);
    let error = vm.power_on().await.unwrap_err().to_string();
    assert!(error.contains("UEFI guest's variable store"), "{error}");
    assert!(error.contains("storage = \"shared\""), "{error}");
    assert!(!vm.is_on());
    assert!(common::processes_with(vm.id()).is_empty());
}

/// A hot-plugged disk's file is made here, and not yet copied to a host
/// of its own storage: a VM with one is refused there before anything
/// starts (it runs on where it was), and so is hot-plugging a disk on
/// such a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_plugged_disk_is_refused_on_a_host_of_its_own_storage() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    let b = lab.add_host("b").await.unwrap();
    let mut vm = Vm::new(common::config(logs.path()));
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm.hotplug().disk("data", 16).await.unwrap();
    let source = vm.pid().unwrap();
    let error = vm.migrate_to(&b, MigrationMode::Tcp).await.unwrap_err();
    let shown = common::error_chain(&error);
    assert!(shown.contains("hot-plugged disk"), "{shown}");
    assert_eq!(vm.pid(), Some(source));
    vm.hotplug().unplug("data").await.unwrap();
    vm.migrate_to(&b, MigrationMode::Tcp).await.unwrap();
    vm.login_remote().await.unwrap();
    let error = vm.hotplug().disk("data", 16).await.unwrap_err().to_string();
    assert!(error.contains("not hot-plugged on host `b`"), "{error}");
    vm.power_off().await.unwrap();
}

/// A VM restored from its ready snapshot has a chain under its overlay
/// (the snapshot's frozen overlay over the base): both are copied to b,
/// the frozen one rebased onto the base's copy there, and the disk holds
/// what the guest wrote after the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_over_a_snapshot_moves_with_its_chain() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let Some(lab) = lab(logs.path()).await else {
        return;
    };
    let (mut config, base) = config_with_disk(logs.path());
    let base_sum = common::sha256(&base);
    let b = lab.add_host("b").await.unwrap();
    config.boot = virtest_vm::BootMode::Snapshot;
    config.snapshot_dir = Some(logs.path().join("snapshots"));
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(
        matches!(vm.start(), virtest_vm::Start::MadeSnapshot { .. }),
        "{}",
        vm.start()
    );
    vm.login_remote().await.unwrap();
    guest(
        &vm,
        "dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=8 conv=fsync 2>/dev/null",
    )
    .await;
    let (written, _, pattern) = disk_sums(&vm).await;
    vm.migrate_to(&b, MigrationMode::Tcp).await.unwrap();
    vm.login_remote().await.unwrap();
    let (cached, read_back, base_part) = disk_sums(&vm).await;
    assert_eq!((&cached, &read_back), (&written, &written));
    assert_eq!(base_part, pattern);
    // The snapshot's overlay, under its hash, backed by the base's copy.
    let images = b.storage_dir().unwrap().join("images");
    let frozen: Vec<PathBuf> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .collect();
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&frozen[0])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let backing = info["backing-filename"].as_str().unwrap();
    assert!(backing.starts_with(images.to_str().unwrap()), "{backing}");
    assert!(backing.ends_with(&format!("{base_sum}.img")), "{backing}");
    vm.power_off().await.unwrap();
}
