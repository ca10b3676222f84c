//! Several VMs in one test: `t.add_vm` makes more from the test's
//! parameters, each logging under `vm-NAME/`; they reach each other's
//! forwarded ports through the host, one of them migrates meanwhile, and
//! the runner gathers every VM's failure bundle and ends them all.

mod common;
use virtest_testkit as kit;

use std::path::Path;

use virtest_harness::prelude::*;
use virtest_harness::{Status, TestDef};

/// A server VM serves its boot id; `t.vm` fetches it through the host
/// (user networking's 10.0.2.2 is the host's loopback), before and after
/// the server migrates; then the test fails, to leave its evidence.
#[derive(Default)]
struct ServerAndClient;
impl VirtTest for ServerAndClient {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        for bad in ["vm", "two words"] {
            ensure!(t.add_vm(bad, &[]).is_err(), "`{bad}` named a VM");
        }
        let pids = t.log_dir().join("pids");
        let server = t.add_vm("server", &[("forward_ports", "8080")])?;
        server.power_on().await?;
        let boot_id = server
            .login_remote()
            .await?
            .run(
                "mkdir -p /tmp/www && cat /proc/sys/kernel/random/boot_id | tee /tmp/www/id \
                 && busybox httpd -p 8080 -h /tmp/www",
            )
            .await?
            .stdout;
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        for round in 0..2 {
            let server = t.vm_named("server").expect("added");
            if round == 1 {
                server.migrate(MigrationMode::Unix).await?;
            }
            let port = server.forwarded_port(8080).expect("forwarded");
            let fetched =
                t.vm.remote()?
                    .wait_until_succeeds(
                        &format!("wget -qO- http://10.0.2.2:{port}/id"),
                        std::time::Duration::from_secs(30),
                    )
                    .await?
                    .stdout;
            ensure!(fetched == boot_id, "round {round}: fetched {fetched:?}");
        }
        let pid_list: Vec<String> = t
            .vms_mut()
            .map(|(name, vm)| format!("{name} {}", vm.pid().unwrap_or(0)))
            .collect();
        std::fs::write(pids, pid_list.join("\n"))?;
        Err(fail("both VMs answered; failing to leave their evidence"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_in_a_test_talk_and_leave_their_evidence() {
    let _slots = kit::guest_slots(2);
    kit::guest();
    let defs = vec![TestDef::new("ServerAndClient", ServerAndClient::default)];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(
        (test.status, test.fail_reason.as_deref()),
        (
            Status::Fail,
            Some("both VMs answered; failing to leave their evidence")
        )
    );
    let dir = &test.logdir;
    for file in [
        "failure/screen.png",
        "failure/vm-server/screen.png",
        "failure/vm-server/guest.txt",
    ] {
        assert!(
            test.evidence.contains(&dir.join(file)),
            "{file} not in {:?}",
            test.evidence
        );
    }
    let server_console = std::fs::read_to_string(dir.join("vm-server/console.log")).unwrap();
    assert!(!server_console.is_empty());
    assert!(Path::new(&dir.join("vm-server/qmp.log")).is_file());
    let debug = std::fs::read_to_string(&test.logfile).unwrap();
    assert!(
        debug.contains("vm=server"),
        "the server's log lines name it"
    );
    let html = std::fs::read_to_string(job.dir.join("results.html")).unwrap();
    assert_eq!(
        html.matches("<img class=\"screen\"").count(),
        2,
        "both screens"
    );
    assert!(html.contains(">vm-server/screen.png</a>"), "{html}");
    assert!(
        html.contains("Migrations of VM server"),
        "the server's migration"
    );
    for line in std::fs::read_to_string(dir.join("pids")).unwrap().lines() {
        let (name, pid) = line.split_once(' ').unwrap();
        let pid: u32 = pid.parse().unwrap();
        assert!(pid > 0, "{name} was on");
        assert!(!kit::alive(pid), "VM {name}'s QEMU {pid} is left");
    }
}

/// Three VMs on, then the action panics.
#[derive(Default)]
struct ThreeVmsThenAPanic;
impl VirtTest for ThreeVmsThenAPanic {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.add_vm("second", &[])?;
        t.add_vm("third", &[])?;
        let mut pids = Vec::new();
        for (name, vm) in t.vms_mut() {
            vm.power_on().await?;
            pids.push(format!("{name} {}", vm.pid().unwrap_or(0)));
        }
        std::fs::write(t.log_dir().join("pids"), pids.join("\n"))?;
        panic!("the action panicked with three VMs on");
    }
}

/// The default cleanup ends all three (each gets QMP `quit`), after
/// each left its failure bundle; no QEMU is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_with_three_vms_on_cleans_up_all_three() {
    let _slots = kit::guest_slots(3);
    kit::guest();
    let defs = vec![TestDef::new(
        "ThreeVmsThenAPanic",
        ThreeVmsThenAPanic::default,
    )];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(test.status, Status::Fail);
    assert!(
        test.fail_reason
            .as_deref()
            .is_some_and(|r| r.contains("the action panicked with three VMs on")),
        "{:?}",
        test.fail_reason
    );
    let dir = &test.logdir;
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    assert_eq!(pids.lines().count(), 3, "{pids}");
    for line in pids.lines() {
        let (name, pid) = line.split_once(' ').unwrap();
        let pid: u32 = pid.parse().unwrap();
        assert!(pid > 0, "{name} was on");
        assert!(!kit::alive(pid), "VM {name}'s QEMU {pid} is left");
        let vm_dir = match name {
            "vm" => dir.clone(),
            other => dir.join(format!("vm-{other}")),
        };
        let qmp = std::fs::read_to_string(vm_dir.join("qmp.log")).unwrap();
        assert!(qmp.contains("\"quit\""), "cleanup did not end {name}");
        let bundle = match name {
            "vm" => dir.join("failure/screen.png"),
            other => dir.join(format!("failure/vm-{other}/screen.png")),
        };
        assert!(
            test.evidence.contains(&bundle),
            "{name}: {:?}",
            test.evidence
        );
    }
}

/// `server`'s QEMU is killed under the test: migrating it, then a command
/// in it, fail.
#[derive(Default)]
struct ServerKilled;
impl VirtTest for ServerKilled {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        let server = t.add_vm("server", &[])?;
        server.power_on().await?;
        server.login_remote().await?;
        let pid = server.pid().expect("on");
        let dir = t.log_dir().to_path_buf();
        std::fs::write(dir.join("pid"), pid.to_string())?;
        let server = t.vm_named("server").expect("added");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        ensure!(killed.success(), "kill -KILL {pid}: {killed}");
        let why = match server.migrate(MigrationMode::Unix).await {
            Ok(_) => return Err(fail("a dead VM migrated")),
            Err(e) => TestError::from(e).reason,
        };
        std::fs::write(dir.join("migrate-error"), why)?;
        server.remote()?.run("echo still").await?;
        Err(fail("a command ran in a VM whose QEMU was killed"))
    }
}

/// The reason names the VM whose QEMU died and how it died, and so do
/// `debug.log`, the VM's `missing.txt` and the error of a migration
/// tried after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_qemu_is_killed_is_named_with_how_it_died() {
    let _slots = kit::guest_slots(1);
    kit::guest();
    let defs = vec![TestDef::new("ServerKilled", ServerKilled::default)];
    let (_tmp, job) = common::run_job(&defs, &[], 1).await;
    let test = &job.results.tests[0];
    let dir = &test.logdir;
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
    let death = format!("QEMU (pid {pid}) was killed by signal 9 (SIGKILL)");
    let reason = test.fail_reason.as_deref().unwrap_or_default();
    assert_eq!(test.status, Status::Error);
    assert!(
        reason.starts_with(&format!("VM `server`: {death}")),
        "{reason}"
    );
    let migrate = std::fs::read_to_string(dir.join("migrate-error")).unwrap();
    assert!(migrate.contains(&death), "{migrate}");
    let debug = std::fs::read_to_string(&test.logfile).unwrap();
    assert!(debug.contains(&death), "{debug}");
    let missing = std::fs::read_to_string(dir.join("failure/vm-server/missing.txt")).unwrap();
    assert!(missing.contains(&death), "{missing}");
}
