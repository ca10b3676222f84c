//! Guests with disks, on the default guest given a data disk: each VM
//! writes to its own qcow2 overlay, the base image is never written, the
//! overlay survives migrations with the disk busy, and it is removed with
//! the VM unless kept. Bad images are reported with their path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use virtest::guest::description::{Disk, DiskFormat, DiskSource};
use virtest::prelude::*;
use virtest::vm::{Error, Vm, VmConfig};

/// A raw base image of `mib` MiB whose first MiB is a known pattern.
fn base_image(dir: &Path, mib: u64) -> PathBuf {
    let path = dir.join("base.raw");
    let mut bytes = vec![0u8; (mib << 20) as usize];
    for (i, b) in bytes.iter_mut().take(1 << 20).enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The default guest with `base` as its first disk.
fn config_with_disk(base: &Path, format: DiskFormat, log_dir: &Path) -> VmConfig {
    let mut config = VmConfig::new(common::description().clone());
    config.guest.disks.push(Disk {
        source: DiskSource::File(base.to_path_buf()),
        format,
    });
    config.log_dir = Some(log_dir.to_path_buf());
    config
}

/// `sha256sum` of the first `mib` MiB of the guest's /dev/vda.
async fn guest_sha(vm: &Vm, mib: u64) -> String {
    let out = vm
        .remote()
        .unwrap()
        .run(&format!("head -c {} /dev/vda | sha256sum", mib << 20))
        .await
        .unwrap();
    out.stdout.split_whitespace().next().unwrap().to_string()
}

#[tokio::test]
async fn a_busy_disk_survives_migrations_and_the_base_is_never_written() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = base_image(tmp.path(), 64);
    let base_sha = common::sha256(&base);
    let logs = tmp.path().join("logs");
    let mut vm = Vm::new(config_with_disk(&base, DiskFormat::Raw, &logs));
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();

    // The overlay is the VM's own, backed by the base.
    let overlay = vm.files().overlays()[0].clone();
    assert!(overlay.path.starts_with(logs.join("disks")), "{overlay:?}");
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&overlay.path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["backing-filename"], base.to_string_lossy().as_ref());

    // The guest sees the base's content through the overlay.
    let pattern = vm
        .remote()
        .unwrap()
        .run("head -c 8 /dev/vda | od -An -tu1")
        .await
        .unwrap();
    let pattern: Vec<&str> = pattern.stdout.split_whitespace().collect();
    assert_eq!(pattern, ["0", "1", "2", "3", "4", "5", "6", "7"]);

    // A writer fills 24 MiB of the disk from a random file, 256 KiB at a
    // time and synced, while the VM migrates twice.
    let remote = vm.remote().unwrap();
    remote
        .run("head -c 25165824 /dev/urandom > /tmp/src && sha256sum < /tmp/src > /tmp/src.sha")
        .await
        .unwrap();
    remote
        .run(
            "(i=0; while [ $i -lt 96 ]; do \
               dd if=/tmp/src of=/dev/vda bs=256k skip=$i seek=$i count=1 conv=fsync 2>/dev/null; \
               i=$((i + 1)); done; cut -d' ' -f1 /proc/uptime > /tmp/writer) >/dev/null 2>&1 &",
        )
        .await
        .unwrap();
    let uptime = |out: String| out.trim().parse::<f64>().unwrap();
    let first_migration_at = uptime(
        remote
            .run("cut -d' ' -f1 /proc/uptime")
            .await
            .unwrap()
            .stdout,
    );
    for mode in [MigrationMode::Tcp, MigrationMode::Unix] {
        vm.migrate(mode).await.unwrap();
        vm.login_remote().await.unwrap();
        assert_eq!(
            vm.files().overlays()[0],
            overlay,
            "the destination uses the same overlay"
        );
        let cmdline = vm.instance().unwrap().cmdline().display();
        assert!(
            cmdline.contains(&overlay.path.to_string_lossy().into_owned()),
            "{cmdline}"
        );
    }
    let remote = vm.remote().unwrap();
    let mut finished_at = None;
    for _ in 0..600 {
        let out = remote
            .run("cat /tmp/writer 2>/dev/null || true")
            .await
            .unwrap();
        if !out.stdout.trim().is_empty() {
            finished_at = Some(uptime(out.stdout));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let finished_at = finished_at.expect("the writer did not finish");
    assert!(
        finished_at > first_migration_at,
        "the writer finished before the migrations began: the disk was not busy"
    );
    let wanted = remote.run("cat /tmp/src.sha").await.unwrap().stdout;
    // Read back through a fresh page cache: what is on the disk.
    remote
        .run("echo 3 > /proc/sys/vm/drop_caches")
        .await
        .unwrap();
    assert_eq!(
        guest_sha(&vm, 24).await,
        wanted.split_whitespace().next().unwrap()
    );

    vm.power_off().await.unwrap();
    assert_eq!(
        common::sha256(&base),
        base_sha,
        "the base image was written"
    );
    let disk_dir = vm.files().disk_dir().unwrap().to_path_buf();
    drop(vm);
    assert!(!disk_dir.exists(), "the overlay outlived its VM");
}

#[tokio::test]
async fn two_vms_of_one_base_write_their_own_overlays_and_kept_disks_stay() {
    let _slots = common::guest_slots(2);
    let tmp = tempfile::tempdir().unwrap();
    let base = base_image(tmp.path(), 16);
    let base_sha = common::sha256(&base);
    let mut first = Vm::new(config_with_disk(
        &base,
        DiskFormat::Raw,
        &tmp.path().join("a"),
    ));
    let mut second_config = config_with_disk(&base, DiskFormat::Raw, &tmp.path().join("b"));
    second_config.keep_disks = true;
    let mut second = Vm::new(second_config);
    let (a, b) = tokio::join!(first.power_on(), second.power_on());
    a.unwrap();
    b.unwrap();
    let (a, b) = tokio::join!(first.login_remote(), second.login_remote());
    a.unwrap();
    b.unwrap();
    for (vm, text) in [(&first, "first"), (&second, "second")] {
        vm.remote()
            .unwrap()
            .run(&format!(
                "printf {text} | dd of=/dev/vda conv=fsync 2>/dev/null"
            ))
            .await
            .unwrap();
    }
    for (vm, text) in [(&first, "first"), (&second, "second")] {
        let out = vm
            .remote()
            .unwrap()
            .run(&format!("head -c {} /dev/vda", text.len()))
            .await
            .unwrap();
        assert_eq!(out.stdout, text);
    }
    assert_ne!(
        first.files().overlays()[0].path,
        second.files().overlays()[0].path
    );
    let (a, b) = tokio::join!(first.power_off(), second.power_off());
    a.unwrap();
    b.unwrap();
    let (first_dir, second_dir) = (
        first.files().disk_dir().unwrap().to_path_buf(),
        second.files().disk_dir().unwrap().to_path_buf(),
    );
    drop((first, second));
    assert!(!first_dir.exists());
    assert!(
        second_dir.join("disk0.qcow2").exists(),
        "keep_disks kept it"
    );
    assert_eq!(common::sha256(&base), base_sha);
}

async fn power_on_error(config: VmConfig) -> Error {
    let mut vm = Vm::new(config);
    let error = vm.power_on().await.unwrap_err();
    assert!(!vm.is_on());
    error
}

#[tokio::test]
async fn a_missing_image_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-disk.qcow2");
    let error = power_on_error(config_with_disk(&missing, DiskFormat::Qcow2, tmp.path())).await;
    let text = error.to_string();
    assert!(text.contains("no-such-disk.qcow2"), "{text}");
    assert!(text.contains("it does not exist"), "{text}");
}

#[tokio::test]
async fn a_file_not_in_its_described_format_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let notes = tmp.path().join("notes.qcow2");
    std::fs::write(&notes, "these are notes, not a disk\n").unwrap();
    let error = power_on_error(config_with_disk(&notes, DiskFormat::Qcow2, tmp.path())).await;
    let text = error.to_string();
    assert!(text.contains("notes.qcow2"), "{text}");
    assert!(
        text.contains("it is a raw image, but its description says qcow2"),
        "{text}"
    );
    assert!(matches!(error, Error::Disk { .. }), "{error:?}");
    assert!(
        !tmp.path().join("disks").exists(),
        "a failed start leaves no disk directory"
    );
}

/// The `virtest` command on a guest.toml of the user's: a failing test
/// keeps its VM's overlay and says where; a passing one leaves none.
#[test]
fn a_failed_test_keeps_its_overlay_and_a_passing_one_does_not() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = base_image(tmp.path(), 8);
    let toml = common::write_guest_toml(
        tmp.path(),
        &format!(
            "[[disks]]\npath = \"{}\"\nformat = \"raw\"\n",
            base.display()
        ),
    );
    let run = |extra: &[&str]| {
        let results = tmp.path().join("results");
        let output = Command::new(env!("CARGO_BIN_EXE_virtest"))
            .args(["run", "boot", "--results-dir"])
            .arg(&results)
            .arg("-p")
            .arg(format!("guest={}", toml.display()))
            .args(extra)
            .output()
            .unwrap();
        let job = std::fs::canonicalize(results.join("latest")).unwrap();
        let json = virtest::harness::results::JobResults::load(&job).unwrap();
        (output, json.tests.into_iter().next().unwrap())
    };

    let (output, failed) = run(&[
        "-p",
        "guest_password=wrong-password",
        "-p",
        "login_timeout=20",
    ]);
    assert!(!output.status.success());
    assert_ne!(failed.status, virtest::harness::Status::Pass);
    assert_eq!(failed.kept_disks.len(), 1, "{failed:?}");
    assert!(failed.kept_disks[0].starts_with(&failed.logdir));
    assert!(failed.kept_disks[0].is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&failed.kept_disks[0])
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the overlay holds the guest's host keys");

    let (output, passed) = run(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(passed.kept_disks.is_empty());
    assert!(
        !passed.logdir.join("disks").exists(),
        "the overlay of a passing test is removed"
    );
}

/// A cloud-init guest whose seed never runs (the tiny guest has no
/// cloud-init): the login error says what was waited for and where the
/// seed is, with the console's tail.
#[tokio::test]
async fn a_cloud_init_guest_that_never_gets_ready_names_its_seed() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let mut config = VmConfig::new(common::description().clone());
    config.guest.cloud_init.enabled = true;
    config.guest.ready = virtest::guest::description::Ready::CloudInit;
    config.log_dir = Some(tmp.path().to_path_buf());
    // Kept disks land in results: a seed holding a password is not kept.
    config.keep_disks = true;
    config.login = virtest::vm::Login::Password("pw-in-the-seed".into());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    let seed = vm.files().disk_dir().unwrap().join("seed.img");
    assert!(seed.is_file());
    let cmdline = vm.instance().unwrap().cmdline().display();
    assert!(
        cmdline.contains("seed.img") && cmdline.contains("readonly=on"),
        "{cmdline}"
    );
    let error = vm
        .within(std::time::Duration::from_secs(8))
        .login_remote()
        .await
        .unwrap_err();
    let text = error.to_string();
    let first = text.lines().next().unwrap();
    assert!(first.contains("virtest-cloud-init-ready"), "{text}");
    assert!(
        first.contains(&seed.to_string_lossy().into_owned()),
        "{text}"
    );
    assert!(
        text.contains("virtest-guest-ready"),
        "the console tail is there: {text}"
    );
    vm.power_off().await.unwrap();
    let disk_dir = vm.files().disk_dir().unwrap().to_path_buf();
    drop(vm);
    assert!(disk_dir.is_dir(), "keep_disks keeps the disk directory");
    assert!(!seed.exists(), "a seed with a password outlived its VM");
}

/// UEFI without OVMF installed: the test errors before QEMU starts,
/// naming the package.
#[test]
fn uefi_without_ovmf_names_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = common::write_guest_toml(tmp.path(), "");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[boot]\n", "[boot]\nfirmware = \"uefi\"\n");
    std::fs::write(&toml, text).unwrap();
    let results = tmp.path().join("results");
    let output = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "boot", "--results-dir"])
        .arg(&results)
        .arg("-p")
        .arg(format!("guest={}", toml.display()))
        .env("VIRTEST_OVMF_DIR", tmp.path().join("no-ovmf-here"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = virtest::harness::results::JobResults::load(&job).unwrap();
    let reason = json.tests[0].fail_reason.clone().unwrap_or_default();
    assert!(reason.contains("apt-get install ovmf"), "{reason}");
    assert!(reason.contains("OVMF_CODE_4M.fd"), "{reason}");
}

/// Python's http.server on 127.0.0.1 serving `dir`: a real HTTP server
/// whose request log (its stderr) tells how often an image was fetched.
struct HttpServer {
    child: std::process::Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl HttpServer {
    fn serve(dir: &Path) -> HttpServer {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 serves HTTP");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 43211 (http://127.0.0.1:43211/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        HttpServer { child, port, log }
    }

    fn gets(&self, name: &str) -> usize {
        let needle = format!("\"GET /{name} ");
        self.log.lock().unwrap().matches(&needle).count()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image by URL: fetched once (with progress) into the cache keyed by
/// its hash, verified, reused without a second request; a wrong hash is
/// an error naming both, and nothing half-written stays.
#[test]
fn an_image_by_url_is_fetched_once_verified_and_reused() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let base = base_image(&served, 8);
    // Unique content, so no earlier run's cache entry answers.
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[(2 << 20)..(2 << 20) + 16].copy_from_slice(&rand_bytes());
    std::fs::write(&base, &bytes).unwrap();
    let sha = common::sha256(&base);
    let server = HttpServer::serve(&served);
    let url = format!("http://127.0.0.1:{}/base.raw", server.port);
    let cached = virtest::guest::images::cached_path(
        &virtest::guest::cache::default_home().unwrap(),
        &url,
        &sha,
    );
    let run = |sha: &str| {
        let toml = common::write_guest_toml(
            tmp.path(),
            &format!("[[disks]]\nurl = \"{url}\"\nsha256 = \"{sha}\"\nformat = \"raw\"\n"),
        );
        Command::new(env!("CARGO_BIN_EXE_virtest"))
            .args(["run", "boot", "--results-dir"])
            .arg(tmp.path().join("results"))
            .arg("-p")
            .arg(format!("guest={}", toml.display()))
            .output()
            .unwrap()
    };

    let first = run(&sha);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("downloaded and verified"), "{stderr}");
    assert_eq!(server.gets("base.raw"), 1);
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);

    let second = run(&sha);
    assert!(second.status.success());
    assert!(!String::from_utf8_lossy(&second.stderr).contains("downloading"));
    assert_eq!(
        server.gets("base.raw"),
        1,
        "the cached image was fetched again"
    );

    let wrong = "0".repeat(64);
    let bad = run(&wrong);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains(&sha) && stderr.contains(&wrong), "{stderr}");
    let wrong_dir = virtest::guest::images::cached_path(
        &virtest::guest::cache::default_home().unwrap(),
        &url,
        &wrong,
    );
    let left: Vec<_> = std::fs::read_dir(wrong_dir.parent().unwrap())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(cached.parent().unwrap());
    let _ = std::fs::remove_dir_all(wrong_dir.parent().unwrap());
}

/// 16 bytes that differ from run to run.
fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    bytes
}
