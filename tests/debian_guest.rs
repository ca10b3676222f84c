//! The Debian guest (`virtest bootstrap --guest debian`): a distro image
//! booting from its own disk under SeaBIOS and UEFI, its keys from a
//! cloud-init seed, its host key trusted on first use; a busy disk through
//! migrations over every transport; the built-in tests on it; and a
//! user's own image made from it another way (raw, kernel boot, password
//! only, no cloud-init). (A shared folder on it is in `secure_boot.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use virtest::guest::description::{DiskSource, Firmware};
use virtest::prelude::*;
use virtest::vm::{Error, Vm, VmConfig};

fn base_image() -> PathBuf {
    match &common::debian().disks[0].source {
        DiskSource::File(path) => path.clone(),
        DiskSource::Url { url, .. } => panic!("the Debian guest is a file, not {url}"),
    }
}

fn config(log_dir: &Path) -> VmConfig {
    let mut config = VmConfig::new(common::debian().clone());
    config.log_dir = Some(log_dir.to_path_buf());
    config
}

async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

async fn uptime(vm: &Vm) -> f64 {
    let out = run(vm, "cut -d' ' -f1 /proc/uptime").await;
    out.trim().parse().unwrap()
}

/// From the cache's ready snapshot: the guide's boot test below boots the
/// disk fresh under SeaBIOS, and one boot of Debian under TCG is a minute
/// of CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_keeps_a_busy_disk_and_its_host_key_through_every_transport() {
    let _slot = common::guest_slots(1);
    let base = base_image();
    let base_sha = common::sha256(&base);
    let logs = common::test_logs();
    let mut config = config(logs.path());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let host_key = vm
        .ssh_access()
        .and_then(|a| a.host_key)
        .expect("pinned at first login");
    assert!(host_key.starts_with("ssh-ed25519 "), "{host_key}");
    let kernel = run(&vm, "uname -r").await;
    assert_eq!(
        Some(kernel.trim()),
        common::debian().kernel_release.as_deref()
    );
    let boot_id = run(&vm, "cat /proc/sys/kernel/random/boot_id").await;

    // A writer copies 32 MiB into a file, 256 KiB at a time and synced,
    // while the VM migrates over each transport.
    run(
        &vm,
        "head -c 33554432 /dev/urandom > /root/src && sha256sum < /root/src | cut -d' ' -f1 > /root/src.sha",
    )
    .await;
    run(
        &vm,
        "nohup sh -c 'i=0; while [ $i -lt 128 ]; do \
           dd if=/root/src of=/root/busy bs=256k skip=$i seek=$i count=1 conv=notrunc,fsync status=none; \
           i=$((i + 1)); done; cut -d\" \" -f1 /proc/uptime > /root/writer-done' >/dev/null 2>&1 &",
    )
    .await;
    let first_migration_at = uptime(&vm).await;
    for mode in [
        MigrationMode::Tcp,
        MigrationMode::Unix,
        MigrationMode::Exec,
        MigrationMode::Fd,
    ] {
        let report = vm.migrate(mode).await.unwrap();
        assert!(report.total_time_ms > 0, "{report:?}");
        vm.login_remote().await.unwrap();
        assert_eq!(
            run(&vm, "cat /proc/sys/kernel/random/boot_id").await,
            boot_id
        );
        assert_eq!(
            vm.ssh_access().and_then(|a| a.host_key),
            Some(host_key.clone())
        );
    }
    // Bounded generously: on a loaded machine the synced writes crawl,
    // and only whether they all landed is checked.
    let mut finished_at = None;
    let waiting = std::time::Instant::now();
    while waiting.elapsed() < Duration::from_secs(600) {
        let out = run(&vm, "cat /root/writer-done 2>/dev/null || true").await;
        if let Ok(at) = out.trim().parse::<f64>() {
            finished_at = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let finished_at = finished_at.expect("the writer did not finish");
    assert!(
        finished_at > first_migration_at,
        "the writer finished before the migrations: the disk was not busy"
    );
    run(&vm, "sync; echo 3 > /proc/sys/vm/drop_caches").await;
    assert_eq!(
        run(&vm, "sha256sum < /root/busy | cut -d' ' -f1").await,
        run(&vm, "cat /root/src.sha").await,
        "the file written through the migrations is not what was written"
    );

    // The host key seen first is held for the VM's life: a guest that
    // makes new keys is refused, and the error's first line says why.
    run(
        &vm,
        "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh",
    )
    .await;
    let error = vm
        .within(Duration::from_secs(60))
        .login_remote()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Login { .. }), "{error:?}");
    let first = error.to_string().lines().next().unwrap().to_string();
    assert!(first.contains("another SSH host key"), "{error}");

    vm.power_off().await.unwrap();
    assert_eq!(
        common::sha256(&base),
        base_sha,
        "the base image was written"
    );
}

/// UEFI, with a user-data snippet of the user's merged into the seed,
/// and the firmware's variable store going along with a migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_boots_under_uefi_with_a_users_snippet_and_migrates() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let snippet = logs.path().join("snippet.yaml");
    std::fs::write(
        &snippet,
        "#cloud-config\nbootcmd:\n  - [sh, -c, \"echo from-the-snippet > /run/virtest-snippet\"]\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut config = config(logs.path());
    config.guest.boot.firmware = Firmware::Uefi;
    config.guest.cloud_init.user_data = vec![snippet];
    // Started from a ready snapshot (made by this start): the variable
    // store is frozen with it and copied back for the VM.
    config.boot = BootMode::Snapshot;
    config.snapshot_dir = Some(store.path().to_path_buf());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(
        matches!(vm.start(), Start::MadeSnapshot { .. }),
        "{}",
        vm.start()
    );
    let cmdline = vm.instance().unwrap().cmdline().display();
    assert!(cmdline.contains("OVMF_CODE_4M.fd"), "{cmdline}");
    let vars = vm.files().disk_dir().unwrap().join("uefi-vars.fd");
    assert!(
        cmdline.contains(&vars.to_string_lossy().into_owned()),
        "{cmdline}"
    );
    vm.login_remote().await.unwrap();
    let efi = vm
        .remote()
        .unwrap()
        .run("test -d /sys/firmware/efi && echo uefi")
        .await
        .unwrap();
    assert_eq!(efi.stdout.trim(), "uefi");
    assert_eq!(
        run(&vm, "cat /run/virtest-snippet").await.trim(),
        "from-the-snippet"
    );
    vm.migrate(MigrationMode::Unix).await.unwrap();
    let cmdline = vm.instance().unwrap().cmdline().display();
    assert!(
        cmdline.contains(&vars.to_string_lossy().into_owned()),
        "{cmdline}"
    );
    vm.login_remote().await.unwrap();
    assert_eq!(
        run(&vm, "test -d /sys/firmware/efi && echo uefi")
            .await
            .trim(),
        "uefi"
    );
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    vm.power_off().await.unwrap();
}

/// Two VMs restored at once from one ready snapshot of the Debian guest:
/// each on its own overlay over the frozen one (never written), not
/// twins (random bytes, clock), and one of them migrated over every
/// transport with its disk's content. The snapshot is the cache's, which
/// the built-in migration test on Debian (below) uses too: whichever runs
/// first makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_clones_start_from_one_snapshot_and_migrate() {
    let _slots = common::guest_slots(2);
    let logs = common::test_logs();
    let base_sha = common::sha256(&base_image());
    let config = |name: &str| {
        let mut config = config(&logs.path().join(name));
        config.boot = BootMode::Snapshot;
        config
    };
    let mut first = Vm::new(config("first"));
    first.power_on().await.unwrap();
    let key = match first.start().clone() {
        Start::MadeSnapshot { key } | Start::FromSnapshot { key } => key,
        other => panic!("{other}"),
    };
    first.login_remote().await.unwrap();
    first.power_off().await.unwrap();
    let home = virtest::guest::cache::default_home().unwrap();
    let frozen = virtest::guest::snapshots::SnapshotStore::in_cache(&home)
        .root()
        .join(&key)
        .join("disk0.qcow2");
    let frozen_sha = common::sha256(&frozen);

    let started = async |name: &str| {
        let mut vm = Vm::new(config(name));
        vm.power_on().await.unwrap();
        vm.login_remote().await.unwrap();
        vm
    };
    let (mut a, b) = tokio::join!(started("a"), started("b"));
    for vm in [&a, &b] {
        assert_eq!(vm.start(), &Start::FromSnapshot { key: key.clone() });
    }
    let random = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    assert_ne!(run(&a, random).await, run(&b, random).await, "twins");
    for vm in [&a, &b] {
        let guest: f64 = run(vm, "date +%s.%N").await.trim().parse().unwrap();
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (host - guest).abs() <= 1.5,
            "guest clock {guest}, host {host}"
        );
    }
    run(&a, "echo only-a > /root/mark && sync").await;
    assert_eq!(
        run(&b, "cat /root/mark 2>/dev/null || echo none")
            .await
            .trim(),
        "none",
        "the clones share a disk"
    );
    drop(b);
    let boot_id = run(&a, "cat /proc/sys/kernel/random/boot_id").await;
    for mode in MigrationMode::STREAMED {
        a.migrate(mode).await.unwrap();
        a.login_remote().await.unwrap();
        assert_eq!(
            run(&a, "cat /proc/sys/kernel/random/boot_id").await,
            boot_id
        );
        assert_eq!(
            run(&a, "cat /root/mark").await.trim(),
            "only-a",
            "after {mode}"
        );
    }
    a.power_off().await.unwrap();
    assert_eq!(
        common::sha256(&frozen),
        frozen_sha,
        "the frozen disk was written"
    );
    assert_eq!(
        common::sha256(&base_image()),
        base_sha,
        "the base image was written"
    );
}

#[test]
fn the_guides_tests_pass_on_debian_unchanged() {
    let _slots = common::guest_slots(2);
    common::debian();
    let tmp = tempfile::tempdir().unwrap();
    let (output, json) = common::virtest_run(
        &[
            "boot",
            "migration",
            "-p",
            "guest=debian",
            "-p",
            "migration_iterations=2",
            "--max-parallel",
            "2",
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!((json.total, json.pass), (2, 2), "{stdout}");
    for test in &json.tests {
        assert!(
            !test.logdir.join("disks").exists(),
            "a passing test left its overlay"
        );
    }
}

/// A user's own image, made another way than virtest makes its guests:
/// the Debian root file system alone as a raw disk (no partition table,
/// no boot loader), booted with its kernel and initrd and
/// `root=/dev/vda`, a root password and a host key put in with debugfs,
/// cloud-init disabled, and a guest.toml written as the README says.
#[test]
fn a_users_own_raw_image_runs_the_guides_tests() {
    let _slots = common::guest_slots(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("own");
    std::fs::create_dir(&dir).unwrap();
    let release = common::debian().kernel_release.clone().unwrap();
    let password = "own-image-pw-4711";
    let host_key = make_own_image(&dir, &release, password);
    std::fs::write(
        dir.join("guest.toml"),
        format!(
            r#"name = "own"
kernel_release = "{release}"

[boot]
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "root=/dev/vda ro console=ttyS0 quiet"

[[disks]]
path = "root.raw"
format = "raw"

[login]
user = "root"
password = "{password}"
host_key = "{host_key}"
timeout = 240

[ready]
wait_for = "ssh"

[machine]
memory = 512
"#
        ),
    )
    .unwrap();
    let base_sha = common::sha256(&dir.join("root.raw"));
    let results = tmp.path().join("results");
    let guest = format!("guest={}", dir.display());
    let (output, json) = common::virtest_run(
        &[
            "boot",
            "migration",
            "-p",
            &guest,
            "-p",
            "migration_iterations=2",
            "--max-parallel",
            "2",
        ],
        &results,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!((json.total, json.pass), (2, 2), "{stdout}");
    assert_eq!(common::sha256(&dir.join("root.raw")), base_sha);
    // The password was given in the guest's own file: it stays out of
    // the results.
    for entry in common::files_under(&results).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(
            !text.contains(password),
            "the password is in {}",
            entry.display()
        );
    }
}

/// Makes `dir/root.raw`, `dir/vmlinuz` and `dir/initrd.img` from the
/// Debian guest's image; returns the host key line put in.
fn make_own_image(dir: &Path, release: &str, password: &str) -> String {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let base = base_image();
    sh(&format!(
        "qemu-img convert -O raw '{}' full.raw",
        base.display()
    ));
    let table: serde_json::Value = serde_json::from_str(&sh("sfdisk --json full.raw")).unwrap();
    let root = &table["partitiontable"]["partitions"][2];
    sh(&format!(
        "dd if=full.raw of=root.raw bs=512 skip={} count={} conv=sparse status=none && rm full.raw",
        root["start"], root["size"]
    ));
    let hash = sh(&format!("openssl passwd -6 '{password}'"));
    sh(&format!(
        "debugfs -R 'dump /boot/vmlinuz-{release} vmlinuz' root.raw 2>/dev/null
         debugfs -R 'dump /boot/initrd.img-{release} initrd.img' root.raw 2>/dev/null
         debugfs -R 'dump /etc/shadow shadow' root.raw 2>/dev/null
         sed -i 's|^root:[^:]*:|root:{hash}:|' shadow
         ssh-keygen -q -t ed25519 -N '' -C own-host -f hostkey
         printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' > sshd.conf
         : > disabled
         debugfs -w root.raw <<EOF
rm /etc/shadow
write shadow /etc/shadow
sif /etc/shadow mode 0100640
sif /etc/shadow gid 42
write hostkey /etc/ssh/ssh_host_ed25519_key
sif /etc/ssh/ssh_host_ed25519_key mode 0100600
write hostkey.pub /etc/ssh/ssh_host_ed25519_key.pub
write sshd.conf /etc/ssh/sshd_config.d/50-own.conf
write disabled /etc/cloud/cloud-init.disabled
EOF
         test -s vmlinuz && test -s initrd.img",
        hash = hash.trim().replace('$', "\\$").replace('|', "\\|"),
    ));
    let public = std::fs::read_to_string(dir.join("hostkey.pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
