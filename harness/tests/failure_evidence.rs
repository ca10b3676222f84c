//! The failure bundle: a test that fails leaves what its VM showed (its
//! screen, console tail, QMP events and the guest's own view) beside its
//! logs, listed in `results.json` and attached in JUnit; gathering is
//! bounded and never changes the status.

mod common;
use virtest_testkit as kit;

use std::path::{Path, PathBuf};

use virtest_harness::prelude::*;
use virtest_harness::results::TestRecord;
use virtest_harness::runner::Job;
use virtest_harness::{Status, TestDef};

/// Writes a marker into the kernel log, migrates, then fails (before it
/// logs in again: gathering logs in).
#[derive(Default)]
struct FailsAfterMigration;
impl VirtTest for FailsAfterMigration {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        // Between two hosts, when the parameters name them.
        let hosts = t
            .params
            .value_if_set(&virtest_harness::params::MIGRATION_HOSTS)?
            .unwrap_or_default();
        let to = match hosts.as_slice() {
            [from, to] => {
                let from = t.add_host(from).await?;
                t.vm.set_host(from)?;
                Some(t.add_host(to).await?)
            }
            _ => None,
        };
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        t.vm.remote()?
            .run("echo virtest-marker-before-migration > /dev/kmsg")
            .await?;
        match to {
            Some(to) => t.vm.migrate_to(&to, MigrationMode::Tcp).await?,
            None => t.vm.migrate(MigrationMode::Unix).await?,
        };
        Err(fail("the check after the migration failed"))
    }
}

/// Fails before its VM is ever powered on.
#[derive(Default)]
struct FailsWithoutVm;
impl VirtTest for FailsWithoutVm {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        Err(fail("nothing to see"))
    }
}

/// Takes the guest's network down (SSH with it), then fails.
#[derive(Default)]
struct FailsWithItsNetworkDown;
impl VirtTest for FailsWithItsNetworkDown {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        t.vm.remote()?
            .run(
                "echo virtest-marker-network-down > /dev/kmsg; \
                 (sleep 1; ip link set \"$(ip -o -4 route show default | cut -d' ' -f5)\" down) \
                 >/dev/null 2>&1 &",
            )
            .await?;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        Err(fail("the guest's network went down"))
    }
}

/// Stops its QEMU (SIGSTOP), then fails: QMP and SSH hang.
#[derive(Default)]
struct FailsWithAHungVm;
impl VirtTest for FailsWithAHungVm {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let pid = t.vm.pid().expect("on");
        std::fs::write(t.log_dir().join("qemu-pid"), pid.to_string())?;
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()?;
        ensure!(stopped.success(), "kill -STOP {pid} failed");
        Err(fail("the guest hung"))
    }
}

fn by_name<'a>(job: &'a Job, name: &str) -> &'a TestRecord {
    job.results
        .tests
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no test {name}"))
}

/// The width and height of a PNG file, checking its signature and that
/// its first chunk is the header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

/// The `[[ATTACHMENT|path]]` lines of test `name` in the job's JUnit.
fn junit_attachments(job: &Job, name: &str) -> Vec<PathBuf> {
    let xml = std::fs::read_to_string(job.dir.join("results.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
        .unwrap();
    case.children()
        .filter(|n| n.has_tag_name("system-out"))
        .flat_map(|n| {
            n.text()
                .unwrap_or("")
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| {
            line.strip_prefix("[[ATTACHMENT|")
                .and_then(|rest| rest.strip_suffix("]]"))
                .map(PathBuf::from)
        })
        .collect()
}

/// Checks the bundle `FailsAfterMigration` left; `guest_inet` is the
/// guest's address as `ip addr` shows it.
fn check_bundle_after_migration(job: &Job, guest_inet: &str) {
    let test = by_name(job, "fails_after_migration");
    assert_eq!(test.status, Status::Fail);
    assert_eq!(
        test.fail_reason.as_deref(),
        Some("the check after the migration failed"),
        "gathering changed the reason"
    );
    let bundle = test.logdir.join("failure");
    let names: Vec<String> = test
        .evidence
        .iter()
        .map(|f| {
            assert_eq!(f.parent(), Some(bundle.as_path()));
            f.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "screen.png",
            "console-tail.txt",
            "events.jsonl",
            "guest.txt"
        ],
        "screen first, nothing missing"
    );
    let (width, height) = png_size(&bundle.join("screen.png"));
    assert!(width >= 320 && height >= 200, "{width}x{height}");

    let console = std::fs::read_to_string(bundle.join("console-tail.txt")).unwrap();
    assert!(!console.trim().is_empty(), "an empty console tail");

    let events: Vec<serde_json::Value> = std::fs::read_to_string(bundle.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let named = |name: &str| events.iter().filter(|e| e["event"] == name).count();
    assert!(
        named("RESUME") >= 1 && named("MIGRATION") >= 1,
        "the destination's resume and the migration's events: {events:?}"
    );

    let guest = std::fs::read_to_string(bundle.join("guest.txt")).unwrap();
    for expected in [
        "$ dmesg | tail -n 100",
        "virtest-marker-before-migration",
        "$ ip addr",
        guest_inet,
        "$ df -h",
        "[exit 0]",
    ] {
        assert!(guest.contains(expected), "no {expected:?} in:\n{guest}");
    }

    assert_eq!(
        junit_attachments(job, "fails_after_migration"),
        test.evidence
    );
}

/// A test that fails after a migration leaves its bundle; one that never
/// powered on leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_after_a_migration_leaves_its_evidence() {
    let _slot = kit::guest_slots(1);
    kit::guest();
    let defs = vec![
        TestDef::new("FailsAfterMigration", FailsAfterMigration::default),
        TestDef::new("FailsWithoutVm", FailsWithoutVm::default),
    ];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    check_bundle_after_migration(&job, "inet 10.0.2.15");
    let early = by_name(&job, "fails_without_vm");
    assert_eq!(early.status, Status::Fail);
    assert!(early.evidence.is_empty(), "{:?}", early.evidence);
    assert!(!early.logdir.join("failure").exists());
    assert!(junit_attachments(&job, "fails_without_vm").is_empty());
}

/// Between hosts, the bundle comes from the destination host: its
/// screen copied back over SSH, the console and events forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_on_another_host_leaves_its_evidence() {
    if !kit::is_root() {
        return;
    }
    let _slot = kit::guest_slots(1);
    kit::guest();
    let defs = vec![TestDef::new(
        "FailsAfterMigration",
        FailsAfterMigration::default,
    )];
    let (_tmp, job) = common::run_job(&defs, &["migration_hosts=a,b"], 1).await;
    check_bundle_after_migration(&job, "inet 10.0.2.15");
    let test = by_name(&job, "fails_after_migration");
    for log in ["qemu-a.log", "qemu-b.log", "qmp.log", "console.log"] {
        assert!(test.logdir.join(log).is_file(), "{log}");
    }
}

/// On the Debian guest, the guest's view includes the systemd journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_debian_test_leaves_the_journal_too() {
    let _slot = kit::guest_slots(1);
    let guest = format!("guest={}", kit::debian().path.display());
    let defs = vec![TestDef::new(
        "FailsAfterMigration",
        FailsAfterMigration::default,
    )];
    let (_tmp, job) = common::run_job(&defs, &[&guest], 1).await;
    check_bundle_after_migration(&job, "inet 10.0.2.15");
    let test = by_name(&job, "fails_after_migration");
    let view = std::fs::read_to_string(test.logdir.join("failure/guest.txt")).unwrap();
    let journal = view
        .split("$ journalctl -n 100 --no-pager\n")
        .nth(1)
        .and_then(|rest| rest.split("[exit 0]").next())
        .unwrap_or_else(|| panic!("no journal that exited 0 in:\n{view}"));
    assert!(journal.contains("systemd[1]:"), "{journal}");
}

/// With its network down, the Debian guest's view comes through the
/// guest agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ssh_the_guests_view_comes_through_the_agent() {
    let _slot = kit::guest_slots(1);
    let guest = format!("guest={}", kit::debian().path.display());
    let defs = vec![TestDef::new(
        "FailsWithItsNetworkDown",
        FailsWithItsNetworkDown::default,
    )];
    let (_tmp, job) = common::run_job(&defs, &[&guest], 1).await;
    let test = by_name(&job, "fails_with_its_network_down");
    assert_eq!(
        test.fail_reason.as_deref(),
        Some("the guest's network went down")
    );
    let view = std::fs::read_to_string(test.logdir.join("failure/guest.txt")).unwrap();
    assert!(view.starts_with("# through the guest agent: "), "{view}");
    assert!(view.contains("virtest-marker-network-down"), "{view}");
    assert!(
        view.contains("state DOWN"),
        "ip addr shows the link down:\n{view}"
    );
}

/// A VM that hangs (its QEMU stopped): gathering ends within its budget,
/// says what it could not get, keeps the status, and cleanup still
/// leaves no QEMU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathering_from_a_hung_vm_is_bounded() {
    let _slot = kit::guest_slots(1);
    kit::guest();
    let defs = vec![TestDef::new("FailsWithAHungVm", FailsWithAHungVm::default)];
    let (_tmp, job) = common::run_job(&defs, &["evidence_timeout=5"], 1).await;
    let test = by_name(&job, "fails_with_a_hung_vm");
    assert_eq!(
        (test.status, test.fail_reason.as_deref()),
        (Status::Fail, Some("the guest hung"))
    );
    let bundle = test.logdir.join("failure");
    let missing = std::fs::read_to_string(bundle.join("missing.txt")).unwrap();
    assert!(
        missing.contains("screen.png")
            && (missing.contains("guest.txt") || missing.contains("evidence_timeout")),
        "{missing}"
    );
    for local in ["console-tail.txt", "events.jsonl"] {
        assert!(
            test.evidence.contains(&bundle.join(local)),
            "{:?}",
            test.evidence
        );
    }
    let pid: u32 = std::fs::read_to_string(test.logdir.join("qemu-pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!kit::alive(pid), "QEMU {pid} is left");
    let debug = std::fs::read_to_string(&test.logfile).unwrap();
    assert!(debug.contains("gathering the failure bundle"), "{debug}");
    // Bounded: the 5 s budget, not a hang (cleanup of a stopped QEMU
    // included).
    assert!(test.time < 120.0, "the test took {} s", test.time);
}
