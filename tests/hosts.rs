//! The guide's migration test between hosts, from the command line:
//! `-p migration_hosts=a,b` moves the VM between two simulated hosts
//! (network namespaces with their own link, address and sshd; root only),
//! or real ones a `hosts.toml` names. Without root each test says why it
//! is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use virtest::harness::results::{JobResults, TestRecord};
use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// `virtest run migration` with `params` into `results`: its output and
/// the test's result.
fn run_migration(results: &Path, params: &[&str]) -> (std::process::Output, TestRecord) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_virtest"));
    command
        .args(["run", "migration", "--results-dir"])
        .arg(results);
    for param in params {
        command.args(["-p", param]);
    }
    let output = command.output().unwrap();
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = JobResults::load(&job).unwrap();
    (output, json.tests.into_iter().next().unwrap())
}

/// The hosts each migration went between, as the test's log says.
fn hops(test: &TestRecord) -> Vec<String> {
    let log = std::fs::read_to_string(test.logdir.join("debug.log")).unwrap();
    log.lines()
        .filter_map(|line| {
            let rest = line.split(" from host ").nth(1)?;
            let (from, rest) = rest.split_once(" to ")?;
            let to = rest.split(',').next()?;
            Some(format!("{from}>{to}"))
        })
        .collect()
}

fn passes(output: &std::process::Output, test: &TestRecord) {
    assert_eq!(
        (test.status, test.fail_reason.as_deref()),
        (Status::Pass, None),
        "{}\n{}",
        test.logdir.display(),
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.status.success());
    for log in ["qemu-a.log", "qemu-b.log"] {
        assert!(test.logdir.join(log).is_file(), "{log}");
    }
}

/// The guide's test, 4 migrations over tcp: a to b and back, twice; then
/// under TLS (x509, psk) and postcopy, there and back.
#[test]
fn the_guides_migration_moves_the_default_guest_between_hosts() {
    if !common::is_root() {
        return;
    }
    let _slot = common::guest_slots(1);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let (output, test) = run_migration(tmp.path(), &["migration_hosts=a,b"]);
    passes(&output, &test);
    assert_eq!(hops(&test), ["a>b", "b>a", "a>b", "b>a"]);
    for (n, variant) in ["tls=x509", "tls=psk", "migration_caps=postcopy"]
        .into_iter()
        .enumerate()
    {
        let results = tmp.path().join(format!("variant-{n}"));
        let params = ["migration_hosts=a,b", "migration_iterations=2", variant];
        let (output, test) = run_migration(&results, &params);
        passes(&output, &test);
        assert_eq!(hops(&test), ["a>b", "b>a"], "{variant}");
    }
}

/// The Debian guest (systemd, cloud-init, a disk on its overlay), there
/// and back twice.
#[test]
fn the_guides_migration_moves_the_debian_guest_between_hosts() {
    if !common::is_root() {
        return;
    }
    let _slot = common::guest_slots(1);
    let virtest::guest::description::DiskSource::File(base) = &common::debian().disks[0].source
    else {
        panic!("the Debian guest's disk is a file")
    };
    let before = common::sha256(base);
    let tmp = tempfile::tempdir().unwrap();
    let (output, test) = run_migration(tmp.path(), &["guest=debian", "migration_hosts=a,b"]);
    passes(&output, &test);
    assert_eq!(hops(&test), ["a>b", "b>a", "a>b", "b>a"]);
    assert_eq!(common::sha256(base), before, "the base image changed");
}

/// The README's example: here to b and back.
struct AcrossHosts;
impl VirtTest for AcrossHosts {
    async fn action(&mut self, t: &mut Test) -> virtest::prelude::TestResult {
        // README hosts begin
        let b = t.add_host("b").await?;
        t.vm.power_on().await?;
        let boot_id = "cat /proc/sys/kernel/random/boot_id";
        let before = t.vm.login_remote().await?.run(boot_id).await?;
        t.vm.migrate_to(&b, MigrationMode::Tcp).await?; // here -> b
        t.vm.login_remote().await?;
        let home = t.local_host();
        t.vm.migrate_to(&home, MigrationMode::Tcp).await?; // b -> here
        let after = t.vm.login_remote().await?.run(boot_id).await?;
        ensure!(after.stdout == before.stdout, "another guest answered");
        // README hosts end
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_example_moves_a_vm_to_b_and_back() {
    if !common::is_root() {
        return;
    }
    let _slot = common::guest_slots(2);
    common::guest();
    let defs = [TestDef::new("AcrossHosts", || AcrossHosts)];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(
        (test.status, test.fail_reason.as_deref()),
        (Status::Pass, None),
        "{}",
        test.logdir.display()
    );
    assert!(test.logdir.join("qemu-b.log").is_file());
    assert_eq!(job.results.tests.len(), 1);
}

/// A hosts.toml that cannot be used is the test's error, naming the file
/// and what is wrong, before any VM starts.
#[test]
fn a_bad_hosts_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing_field = tmp.path().join("hosts.toml");
    std::fs::write(
        &missing_field,
        "[hosts.a]\naddress = \"192.0.2.1\"\nuser = \"root\"\nkey = \"/k\"\nqemu = \"/q\"\n",
    )
    .unwrap();
    let cases: [(PathBuf, &str); 2] = [
        (tmp.path().join("absent.toml"), "No such file"),
        (missing_field, "missing field `storage`"),
    ];
    for (n, (file, expected)) in cases.into_iter().enumerate() {
        let results = tmp.path().join(format!("results-{n}"));
        let hosts = format!("hosts={}", file.display());
        let (output, test) = run_migration(&results, &["migration_hosts=a,b", &hosts]);
        assert!(!output.status.success());
        assert_eq!(test.status, Status::Error);
        let reason = test.fail_reason.unwrap_or_default();
        assert!(reason.contains("the hosts file"), "{reason}");
        assert!(reason.contains(expected), "{reason}");
        assert!(!test.logdir.join("qemu.log").exists(), "a VM started");
    }
}

/// SIGKILL of the runner mid-migration between hosts: within 10 s no
/// QEMU, sshd, namespace or link of that job is left.
#[test]
fn a_sigkilled_runner_leaves_nothing_on_any_host() {
    if !common::is_root() {
        return;
    }
    let _slot = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    // 1 MiB/s: a migration lasts long enough to be killed in.
    let mut runner = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(["run", "migration", "--results-dir"])
        .arg(&results)
        .args(["-p", "migration_hosts=a,b", "-p", "migrate_max_bandwidth=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let test_dir = loop {
        let dir = results.join("latest/test-results/1-migration");
        if dir.join("qemu-b.log").exists() {
            break std::fs::canonicalize(dir).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no migration to b began"
        );
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the runner ended first"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The destination is up on b: its QEMU runs in b's namespace.
    let in_test = |needle: &Path| common::processes_with(&needle.to_string_lossy());
    let known_hosts = std::fs::read_to_string(test_dir.join("hosts/known_hosts")).unwrap();
    let lab = known_hosts.split('.').nth(2).unwrap().to_string();
    let link = PathBuf::from(format!("/sys/class/net/vtlab{lab}"));
    let host_dirs = [
        std::env::temp_dir().join(format!("vt{lab}-a")),
        std::env::temp_dir().join(format!("vt{lab}-b")),
    ];
    let qemus = || -> Vec<u32> {
        host_dirs
            .iter()
            .flat_map(|dir| in_test(dir))
            .filter(|&pid| common::is_qemu(pid))
            .collect()
    };
    assert!(
        common::eventually(Duration::from_secs(30), || qemus().len() == 2),
        "source on a and destination on b: {:?}",
        qemus()
    );
    assert!(
        !in_test(&test_dir.join("hosts")).is_empty(),
        "the sshds run"
    );
    assert!(link.exists());

    let killed = Instant::now();
    runner.kill().unwrap();
    runner.wait().unwrap();
    let gone =
        || qemus().is_empty() && in_test(&test_dir.join("hosts")).is_empty() && !link.exists();
    assert!(
        common::eventually(Duration::from_secs(10), gone),
        "left after 10 s: QEMU {:?}, sshd {:?}, link {}",
        qemus(),
        in_test(&test_dir.join("hosts")),
        link.exists()
    );
    eprintln!("all gone {:?} after the SIGKILL", killed.elapsed());
}
