//! No secret in the cache is readable by other users: the default
//! guest's initramfs (its SSH host key, root's password hash), its
//! description and manifest (the password), the keys, and the ready
//! snapshots (guest memory). Files an older virtest left open are made
//! private when next used.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// Boots from the ready snapshot and logs in.
#[derive(Default)]
struct LogsIn;
impl VirtTest for LogsIn {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?.run("true").await?;
        Ok(())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files(&entry.path()));
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    found
}

/// The files of the snapshot directories under `home`, but their records.
fn snapshot_files(home: &Path) -> Vec<PathBuf> {
    files(&home.join("snapshots"))
        .into_iter()
        .filter(|path| {
            let in_snapshot = path.parent().and_then(Path::file_name) != Some("snapshots".as_ref());
            in_snapshot && path.file_name() != Some("meta.json".as_ref())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_cache_is_readable_by_other_users() {
    let _slots = common::guest_slots(1);
    common::guest();
    let home = virtest::guest::cache::default_home().unwrap();
    let guest = home.join("guests/default");
    let defs = vec![TestDef::new("LogsIn", LogsIn::default)];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    assert_eq!(
        job.results.tests[0].status,
        Status::Pass,
        "{:?}",
        job.results
    );

    // As an older virtest left them: open to every user.
    let opened: Vec<PathBuf> = ["initramfs.cpio.gz", "guest.toml"]
        .iter()
        .map(|name| guest.join(name))
        .chain(snapshot_files(&home))
        .collect();
    for path in &opened {
        set_mode(path, mode(path) | 0o044);
    }
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(test.status, Status::Pass, "{:?}", job.results);
    assert!(
        test.vm_start
            .as_deref()
            .is_some_and(|s| s.contains("snapshot")),
        "{:?}",
        test.vm_start
    );
    let secret_files: Vec<PathBuf> = [
        "initramfs.cpio.gz",
        "id_ed25519",
        "guest.toml",
        "manifest.json",
    ]
    .iter()
    .map(|name| guest.join(name))
    .chain(
        files(&home.join("keys"))
            .into_iter()
            .filter(|path| path.extension() != Some("pub".as_ref())),
    )
    .chain(snapshot_files(&home))
    .collect();
    for path in &secret_files {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "`{}` is open to others",
            path.display()
        );
    }
    let log = std::fs::read_to_string(job.dir.join("job.log")).unwrap();
    assert!(
        log.contains("initramfs.cpio.gz` holds secrets and was readable by other users"),
        "the repair is told: {log}"
    );

    // What `find $VIRTEST_HOME -perm -o+r -type f` lists holds none of
    // the guest's secrets (the initramfs is compressed: its mode is
    // checked above).
    let password = common::description().login.password.clone().unwrap();
    for path in files(&home) {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if mode(&path) & 0o004 == 0 || size > 64 << 20 {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&password) && !text.contains("PRIVATE KEY"),
            "`{}` is readable by others and holds a secret",
            path.display()
        );
    }
}
