//! Host folders shared into the guest (virtio-9p): files cross both ways,
//! a read-only share stays read-only, and the errors a user can hit
//! (a missing folder, a bad tag, a share while QEMU runs) say what to do
//! and start nothing.

use virtest_testkit as common;

use std::path::Path;

use virtest_guest::description::Share;
use virtest_vm::{BootMode, Error, Start, Vm, VmConfig};

/// Runs `command` in the guest and returns its output (a non-zero exit
/// is an error).
async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

/// Mounts `share` at `/mnt/<tag>` in the guest.
async fn mount(vm: &Vm, share: &Share) {
    let point = format!("/mnt/{}", share.tag);
    run(
        vm,
        &format!("mkdir -p {point} && {}", share.mount_command(&point)),
    )
    .await;
}

/// Files written on each side are read on the other, through a mounted
/// share of `data` and a read-only one of `docs`.
async fn round_trip(vm: &mut Vm, data: &Path, docs: &Path) {
    std::fs::write(data.join("from-host"), "written on the host\n").unwrap();
    std::fs::write(docs.join("manual"), "read only\n").unwrap();
    let shares = vm.config().shares.clone();
    for share in &shares {
        mount(vm, share).await;
    }
    assert_eq!(
        run(vm, "cat /mnt/data/from-host").await,
        "written on the host\n"
    );
    run(
        vm,
        "mkdir /mnt/data/dir && echo written in the guest > /mnt/data/dir/from-guest && sync",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(data.join("dir/from-guest")).unwrap(),
        "written in the guest\n"
    );
    // A file the host writes after the mount is seen at once (9p caches
    // nothing by default).
    std::fs::write(data.join("later"), "after the mount\n").unwrap();
    assert_eq!(run(vm, "cat /mnt/data/later").await, "after the mount\n");
    assert_eq!(run(vm, "cat /mnt/docs/manual").await, "read only\n");
    let refused = vm
        .remote()
        .unwrap()
        .run("echo x > /mnt/docs/new")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(!docs.join("new").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_a_shared_folder_both_ways_on_a_restored_guest() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let (data, docs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.share(data.path(), "data").unwrap();
    let docs_share = Share {
        readonly: true,
        ..Share::new(docs.path(), "docs").unwrap()
    };
    // A read-only share, as a guest.toml gives one.
    let mut config = vm.config().clone();
    config.shares.push(docs_share);
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(vm.start().is_restored(), "{}", vm.start());
    vm.login_remote().await.unwrap();
    round_trip(&mut vm, data.path(), docs.path()).await;

    let error = vm.share(data.path(), "more").unwrap_err();
    assert!(
        matches!(&error, Error::Share { reason } if reason.contains("before power_on")),
        "{error}"
    );
    vm.power_off().await.unwrap();

    // A second VM with shares of other folders restores from the same
    // snapshot: a share's path is not part of what the guest sees.
    let other = tempfile::tempdir().unwrap();
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.path().join("second"));
    config.boot = BootMode::Snapshot;
    config.shares = vec![
        Share::new(other.path(), "data").unwrap(),
        Share {
            readonly: true,
            ..Share::new(docs.path(), "docs").unwrap()
        },
    ];
    let mut second = Vm::new(config);
    second.power_on().await.unwrap();
    assert!(
        matches!(second.start(), Start::FromSnapshot { .. }),
        "{}",
        second.start()
    );
    second.login_remote().await.unwrap();
    std::fs::write(other.path().join("mine"), "the second VM's\n").unwrap();
    mount(&second, &second.config().shares[0].clone()).await;
    assert_eq!(
        run(&second, "cat /mnt/data/mine").await,
        "the second VM's\n"
    );
    second.power_off().await.unwrap();
}

#[tokio::test]
async fn a_bad_share_is_refused_and_starts_nothing() {
    let missing = tempfile::tempdir().unwrap().path().join("not-there");
    let mut vm = Vm::new(VmConfig::new(common::description().clone()));
    let error = vm.share(&missing, "data").unwrap_err().to_string();
    assert!(error.contains(&*missing.to_string_lossy()), "{error}");
    assert!(error.contains("no such directory"), "{error}");
    let error = vm.share("/tmp", "a,b").unwrap_err().to_string();
    assert!(error.contains("share tag `a,b`"), "{error}");
    vm.share("/tmp", "tmp").unwrap();
    let error = vm.share("/var/tmp", "tmp").unwrap_err().to_string();
    assert!(
        error.contains("already shares a folder as `tmp`"),
        "{error}"
    );

    // A guest.toml's share of a folder that is gone by the time the VM
    // starts: power_on says so before QEMU starts.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let path = common::write_guest_toml(
        dir.path(),
        &format!(
            "[[shares]]\npath = \"{}\"\ntag = \"gone\"\n",
            gone.display()
        ),
    );
    let (guest, warnings) = virtest_guest::GuestDescription::load(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    std::fs::remove_dir(&gone).unwrap();
    let mut vm = Vm::new(VmConfig::new(guest));
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let error = vm.power_on().await.unwrap_err();
    assert!(matches!(error, Error::Share { .. }), "{error:?}");
    assert!(error.to_string().contains("no such directory"), "{error}");
    assert!(!vm.is_on());
    assert!(common::processes_with(&marker).is_empty());
    assert!(common::processes_with(&gone.to_string_lossy()).is_empty());
}
