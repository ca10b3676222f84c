//! `virtest snapshot make | list | prune` and `virtest doctor`'s line on
//! snapshots, on a copy of the default guest in a cache of their own.

mod common;

use std::path::Path;
use std::process::Command;

fn virtest(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .env("VIRTEST_HOME", home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the default guest in `home/mine`, to rebuild.
fn copy_of_the_default_guest(home: &Path) -> String {
    let guest = home.join("mine");
    std::fs::create_dir(&guest).unwrap();
    let original = common::description().path.parent().unwrap().to_path_buf();
    for file in ["guest.toml", "vmlinux", "initramfs.cpio.gz", "id_ed25519"] {
        std::fs::copy(original.join(file), guest.join(file)).unwrap();
    }
    guest.to_string_lossy().into_owned()
}

#[test]
fn make_list_and_prune_in_a_cache_of_their_own() {
    let _slot = common::guest_slots(1);
    let home = tempfile::tempdir().unwrap();
    let guest = copy_of_the_default_guest(home.path());

    let (ok, stdout, stderr) = virtest(home.path(), &["snapshot", "list"]);
    assert!(
        ok && stdout.starts_with("no snapshots in "),
        "{stdout}{stderr}"
    );

    let (ok, stdout, stderr) = virtest(home.path(), &["snapshot", "make", &guest]);
    assert!(ok, "{stdout}{stderr}");
    let key = stdout
        .trim()
        .strip_prefix("made snapshot ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let (ok, stdout, _) = virtest(home.path(), &["snapshot", "make", &guest]);
    assert!(ok);
    assert_eq!(stdout.trim(), format!("snapshot {key} is current"));

    let (ok, stdout, _) = virtest(home.path(), &["snapshot", "list"]);
    assert!(ok);
    let line = stdout.lines().find(|l| l.starts_with(&key)).unwrap();
    assert!(line.contains(" MiB") && line.ends_with("current"), "{line}");
    let (_, doctor, _) = virtest(home.path(), &["doctor"]);
    assert!(
        doctor.contains("Ready snapshots ") && doctor.contains(&key),
        "{doctor}"
    );

    // Rebuilt: listed as stale, pruned.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let initrd = Path::new(&guest).join("initramfs.cpio.gz");
    std::fs::write(&initrd, std::fs::read(&initrd).unwrap()).unwrap();
    let (_, stdout, _) = virtest(home.path(), &["snapshot", "list"]);
    assert!(
        stdout.contains("stale: `") && stdout.contains("initramfs.cpio.gz"),
        "{stdout}"
    );
    let (ok, stdout, _) = virtest(home.path(), &["snapshot", "prune"]);
    assert!(
        ok && stdout.contains(&key) && stdout.contains("1 removed"),
        "{stdout}"
    );
    let (_, stdout, _) = virtest(home.path(), &["snapshot", "list"]);
    assert!(stdout.starts_with("no snapshots in "), "{stdout}");

    // A guest with a disk: its overlay is frozen into the snapshot.
    let disk_guest = home.path().join("with-disk");
    std::fs::create_dir(&disk_guest).unwrap();
    std::fs::write(disk_guest.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    common::write_guest_toml(&disk_guest, "[[disks]]\npath = \"disk.img\"\n");
    let disk_guest = disk_guest.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = virtest(home.path(), &["snapshot", "make", &disk_guest]);
    assert!(
        ok && stdout.starts_with("made snapshot "),
        "{stdout}{stderr}"
    );
    let key = stdout.trim().strip_prefix("made snapshot ").unwrap();
    let frozen = home.path().join("snapshots").join(key).join("disk0.qcow2");
    assert!(frozen.is_file(), "{} is missing", frozen.display());

    // A cloud-init guest logging in with a password has none, and says why.
    let password_guest = home.path().join("cloud");
    std::fs::create_dir(&password_guest).unwrap();
    common::write_guest_toml(&password_guest, "[cloud_init]\nenabled = true\n");
    let (ok, _, stderr) = virtest(
        home.path(),
        &["snapshot", "make", &password_guest.to_string_lossy()],
    );
    assert!(!ok);
    assert!(
        stderr.contains("logging in with a password has no ready snapshot"),
        "{stderr}"
    );
}

/// A make killed with SIGKILL leaves its half-made snapshot; QEMU dies
/// with it, and the next command of any kind removes what it left.
#[test]
fn a_killed_make_leaves_nothing_for_long() {
    let _slot = common::guest_slots(1);
    let home = tempfile::tempdir().unwrap();
    let guest = copy_of_the_default_guest(home.path());
    let mut make = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .env("VIRTEST_HOME", home.path())
        .args(["snapshot", "make", &guest])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = home.path().join("snapshots");
    let parts = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&store)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains(".part-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Killed once QEMU runs for the make.
    let qemu_running = || !common::children_of(make.id()).is_empty() && !parts().is_empty();
    assert!(common::eventually(
        std::time::Duration::from_secs(30),
        qemu_running
    ));
    let qemus = common::children_of(make.id());
    make.kill().unwrap();
    make.wait().unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || qemus
            .iter()
            .all(|&pid| !common::alive(pid))),
        "the maker's QEMU outlived it"
    );
    let left = parts();
    assert_eq!(left.len(), 1, "{left:?}");

    let (ok, stdout, stderr) = virtest(home.path(), &["snapshot", "list"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        !left[0].exists(),
        "`snapshot list` left {}",
        left[0].display()
    );
    assert!(
        stdout.contains("left by an interrupted make")
            || stderr.contains("left by an interrupted make"),
        "{stdout}{stderr}"
    );
}

/// `snapshot_format=mapped-ram` makes a snapshot of its own where the
/// QEMU has mapped-ram (10.0), and is refused, with the reason, where it
/// has not (7.2).
#[test]
fn a_mapped_ram_snapshot_is_made_by_a_qemu_that_has_it() {
    let _slot = common::guest_slots(1);
    let built = common::qemu_build("10.0");
    let home = tempfile::tempdir().unwrap();
    // The cache's QEMU builds (`<cache>/qemu/<version>/bin/<binary>`),
    // seen from this cache.
    let builds = built.ancestors().nth(3).unwrap();
    assert!(builds.ends_with("qemu"), "{}", built.display());
    std::os::unix::fs::symlink(builds, home.path().join("qemu")).unwrap();
    let guest = copy_of_the_default_guest(home.path());
    let mapped = ["-p", "snapshot_format=mapped-ram"];
    let (ok, stdout, stderr) = virtest(
        home.path(),
        &[&["snapshot", "make", &guest][..], &mapped].concat(),
    );
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("QEMU 7.2.") && stderr.contains("offers no `mapped-ram` capability"),
        "{stderr}"
    );
    let on_10 = [
        &["snapshot", "make", &guest][..],
        &mapped,
        &["-p", "qemu_bin=10.0"],
    ]
    .concat();
    let (ok, stdout, stderr) = virtest(home.path(), &on_10);
    assert!(ok, "{stdout}{stderr}");
    let key = stdout.trim().strip_prefix("made snapshot ").unwrap();
    let meta =
        std::fs::read_to_string(home.path().join("snapshots").join(key).join("meta.json")).unwrap();
    assert!(meta.contains("\"state_format\": \"mapped-ram\""), "{meta}");
    assert!(
        meta.contains("state: mapped-ram"),
        "its key says so: {meta}"
    );
}
