//! Jobs end to end: the `virtest` command running boot and migration over
//! every transport as variants, the results directory, JUnit, failing,
//! panicking and timed-out tests, bad input (SIGINT: `interrupts.rs`).

mod common;

use std::path::Path;
use std::process::Command;

use virtest::harness::params::ParamSources;
use virtest::harness::results::JobResults;
use virtest::harness::runner::{self, Filter, JobOptions};
use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

fn virtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_virtest"))
}

#[test]
fn a_job_of_boot_and_migration_over_every_transport() {
    let _slots = common::guest_slots(2);
    let tmp = tempfile::tempdir().unwrap();
    let params = tmp.path().join("params.toml");
    std::fs::write(
        &params,
        "migration_mode = [\"tcp\", \"unix\", \"exec\", \"fd\"]\nmigration_iterations = 1\n",
    )
    .unwrap();
    let results = tmp.path().join("results");
    let password = &common::guest().credentials.password;
    let output = virtest()
        .args([
            "run",
            "boot",
            "migration",
            "--max-parallel",
            "2",
            "--params-file",
        ])
        .arg(&params)
        .arg("--results-dir")
        .arg(&results)
        .arg("-p")
        .arg(format!("guest_password={password}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    assert!(
        job.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("job-")
    );
    let json = JobResults::load(&job).unwrap();
    let names: Vec<&str> = json.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "boot@migration_mode=tcp",
            "boot@migration_mode=unix",
            "boot@migration_mode=exec",
            "boot@migration_mode=fd",
            "migration@migration_mode=tcp",
            "migration@migration_mode=unix",
            "migration@migration_mode=exec",
            "migration@migration_mode=fd",
        ]
    );
    assert_eq!((json.total, json.pass), (8, 8));
    // avocado's field names, read as plain JSON.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.join("results.json")).unwrap()).unwrap();
    for key in [
        "job_id",
        "debuglog",
        "tests",
        "total",
        "pass",
        "failures",
        "errors",
        "skip",
        "cancel",
        "warn",
        "interrupt",
        "time",
    ] {
        assert!(raw.get(key).is_some(), "results.json lacks {key}");
    }
    assert_eq!(raw["tests"][0]["status"], "PASS");
    assert!(stdout.contains("RESULTS    : PASS 8"), "{stdout}");
    // Boot tests boot; the others start from one ready snapshot (made by
    // the first that needed it, unless an earlier job made it).
    let starts: Vec<&str> = json
        .tests
        .iter()
        .map(|t| t.vm_start.as_deref().unwrap())
        .collect();
    assert_eq!(starts[..4], ["fresh"; 4], "{starts:?}");
    let keys: std::collections::BTreeSet<&str> = starts[4..]
        .iter()
        .map(|s| {
            s.strip_prefix("made snapshot ")
                .or_else(|| s.strip_prefix("from snapshot "))
                .unwrap_or_else(|| panic!("{s}"))
        })
        .collect();
    assert_eq!(keys.len(), 1, "{starts:?}");
    let made = starts.iter().filter(|s| s.starts_with("made")).count();
    assert!(made <= 1, "{starts:?}");
    let line = |test: &str, start: &str| {
        stdout
            .lines()
            .any(|l| l.contains(test) && l.contains(": PASS (") && l.contains(start))
    };
    assert!(line("boot@", " s, fresh)"), "{stdout}");
    assert!(line("migration@", " s, from snapshot "), "{stdout}");

    let xml = std::fs::read_to_string(job.join("results.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 8);
    assert!(cases.iter().all(|c| c.children().all(|k| !k.is_element())));
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));

    assert!(std::fs::metadata(job.join("job.log")).unwrap().len() > 0);
    for test in &json.tests {
        let dir = &test.logdir;
        assert!(dir.starts_with(job.join("test-results")));
        for file in ["debug.log", "console.log", "qmp.log", "qemu.log"] {
            let len = std::fs::metadata(dir.join(file))
                .map(|m| m.len())
                .unwrap_or(0);
            assert!(len > 0, "{}/{file} is missing or empty", dir.display());
        }
        let migrated = test.name.starts_with("migration");
        assert_eq!(
            dir.join("migration-1.json").exists(),
            migrated,
            "{}",
            test.name
        );
        // The default cleanup ends a VM whose disks are not kept at once:
        // no guest shutdown to wait for.
        if migrated {
            let log = std::fs::read_to_string(dir.join("debug.log")).unwrap();
            assert!(log.contains("powered off how=Quit"), "{log}");
        }
        assert_eq!(test.params["guest_password"], "<redacted>");
    }
    for file in common::files_under(tmp.path()).unwrap() {
        if file == params {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(
            !text.contains(password.as_str()),
            "the password is in {}",
            file.display()
        );
    }

    // `virtest results` reads the job back.
    let summary = virtest()
        .args(["results", "--results-dir"])
        .arg(&results)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.contains("8-migration@migration_mode=fd"),
        "{summary}"
    );
    assert!(summary.contains("PASS 8"), "{summary}");
}

/// `migrate_max_bandwidth` (MiB/s) reaches QEMU's `max-bandwidth`; a
/// bad value is refused before anything runs; without it, a migration is
/// not capped (QEMU's own default would be 128 MiB/s).
#[test]
fn the_migration_bandwidth_parameter_reaches_qemu() {
    let _slot = common::guest_slots(1);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let run = |assignments: &[String]| {
        let mut command = virtest();
        command.args(["run", "migration", "-p", "migration_iterations=1"]);
        for assignment in assignments {
            command.arg("-p").arg(assignment);
        }
        command
            .arg("--results-dir")
            .arg(tmp.path())
            .output()
            .unwrap()
    };
    let qmp_log = || {
        let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
        std::fs::read_to_string(job.join("test-results/1-migration/qmp.log")).unwrap()
    };
    let output = run(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let uncapped = format!(
        "\"max-bandwidth\":{}",
        virtest::qmp::outgoing::UNCAPPED_BANDWIDTH
    );
    assert!(qmp_log().contains(&uncapped), "{}", qmp_log());
    let refused = run(&["migrate_max_bandwidth=fast".into()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("migrate_max_bandwidth"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let output = run(&["migrate_max_bandwidth=512".into()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        qmp_log().contains("\"max-bandwidth\":536870912"),
        "{}",
        qmp_log()
    );
}

/// A ready snapshot that cannot be stored: the VM boots, and the test
/// says why as a warning (WARN, the reason naming the path).
#[test]
fn a_snapshot_that_cannot_be_stored_is_a_warning() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let guest = common::description().path.clone();
    let output = virtest()
        .env("VIRTEST_HOME", "/etc/hostname/virtest")
        .args(["run", "migration", "-p", "migration_iterations=1", "-p"])
        .arg(format!("guest={}", guest.display()))
        .arg("--results-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let json =
        JobResults::load(&std::fs::canonicalize(tmp.path().join("latest")).unwrap()).unwrap();
    let test = &json.tests[0];
    assert_eq!(test.status, Status::Warn, "{stdout}");
    let reason = test.fail_reason.as_deref().unwrap();
    assert!(
        reason.contains("its ready snapshot failed")
            && reason.contains("/etc/hostname/virtest/snapshots"),
        "{reason}"
    );
    assert!(
        test.vm_start
            .as_deref()
            .unwrap()
            .starts_with("fresh, its snapshot failed"),
        "{:?}",
        test.vm_start
    );
}

/// A password listed in a params file makes variants without showing
/// itself: not in test names, directories, results, logs or the output.
#[test]
fn listed_passwords_name_variants_by_place_and_appear_nowhere() {
    let _slots = common::guest_slots(2);
    let tmp = tempfile::tempdir().unwrap();
    let real = common::guest().credentials.password.clone();
    let wrong = "wrong-pw-7f3a9c";
    let params = tmp.path().join("params.toml");
    std::fs::write(
        &params,
        format!("guest_password = [\"{real}\", \"{wrong}\"]\nlogin_timeout = 30\n"),
    )
    .unwrap();
    let results = tmp.path().join("results");
    let output = virtest()
        .args(["run", "boot", "--max-parallel", "2", "--params-file"])
        .arg(&params)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the wrong password must fail\n{stdout}"
    );

    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let json = JobResults::load(&job).unwrap();
    let names: Vec<&str> = json.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["boot@guest_password=#1", "boot@guest_password=#2"]);
    assert_eq!(json.tests[0].status, Status::Pass, "{stdout}");
    assert_ne!(json.tests[1].status, Status::Pass, "{stdout}");
    for secret in [real.as_str(), wrong] {
        assert!(
            !stdout.contains(secret),
            "a password is on stdout:\n{stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "a password is on stderr:\n{stderr}"
        );
        for file in common::files_under(&results).unwrap() {
            let name = file.to_string_lossy();
            assert!(!name.contains(secret), "a password names {name}");
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            assert!(!text.contains(secret), "a password is in {name}");
        }
    }
}

struct FailingCheck;
impl VirtTest for FailingCheck {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        let exit = 3;
        ensure!(exit == 0, "the command exited with {exit}");
        Ok(())
    }
}

struct PanickingAction;
impl VirtTest for PanickingAction {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        assert_eq!(1 + 1, 3, "arithmetic is broken");
        Ok(())
    }
    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        common::slow::mark_cleanup(t).await
    }
}

struct Skipped;
impl VirtTest for Skipped {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        Err(skip("needs KVM"))
    }
}

struct Warned;
impl VirtTest for Warned {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.warn("the guest clock drifted");
        Ok(())
    }
}

struct BadCleanup;
impl VirtTest for BadCleanup {
    async fn action(&mut self, _t: &mut Test) -> TestResult {
        Ok(())
    }
    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        t.vm.remote()?;
        Ok(())
    }
}

struct HungCommand;
impl VirtTest for HungCommand {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        t.vm.remote()?.run("sleep 600").await?;
        Ok(())
    }
}

/// Serves the guest's boot id on guest port 8080 and fetches it through
/// the port the `forward_ports` parameter had forwarded.
struct ServesHttp;
impl VirtTest for ServesHttp {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let boot_id =
            t.vm.remote()?
                .run(
                    "mkdir -p /tmp/www && cat /proc/sys/kernel/random/boot_id | tee /tmp/www/id \
                 && busybox httpd -p 8080 -h /tmp/www",
                )
                .await?
                .stdout;
        let Some(port) = t.vm.forwarded_port(8080) else {
            return Err(fail("guest port 8080 is not forwarded"));
        };
        let body = http_get(port, "/id").await?;
        ensure!(
            body.trim() == boot_id.trim(),
            "port {port} answered {body:?}, not the guest's boot id {boot_id:?}"
        );
        Ok(())
    }
}

/// The body of an HTTP/1.0 GET to 127.0.0.1:`port`.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response))
}

/// `-p forward_ports=8080` forwards the guest port in a job's VMs; a port
/// that is not one is refused before any test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_ports_parameter_forwards_guest_ports() {
    let _slot = common::guest_slots(1);
    let tmp = tempfile::tempdir().unwrap();
    let defs = vec![TestDef::new("ServesHttp", || ServesHttp)];
    let sources = |ports: &str| ParamSources {
        file: None,
        assignments: vec![format!("forward_ports={ports}")],
    };
    let Err(refused) = runner::plan(&defs, &sources("http"), &Filter::default()) else {
        panic!("a port that is not one is refused");
    };
    assert!(refused.to_string().contains("forward_ports"), "{refused}");

    let (planned, _) = runner::plan(&defs, &sources("8080"), &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: tmp.path().to_path_buf(),
        max_parallel: 1,
        ..JobOptions::new()
    };
    let job = runner::run_job(&defs, planned, &options).await.unwrap();
    let test = &job.results.tests[0];
    assert_eq!(test.status, Status::Pass, "{:?}", test.fail_reason);
}

/// A test that times out in a command names the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_in_a_guest_command_names_the_command() {
    let _slot = common::guest_slots(1);
    let defs = vec![TestDef::new("HungCommand", || HungCommand)];
    let (_tmp, job) = common::run_job(&defs, &["timeout=20"], 1).await;
    let test = &job.results.tests[0];
    assert_eq!(test.status, Status::Interrupted);
    assert_eq!(
        test.fail_reason.as_deref(),
        Some("timed out after 20s while running `sleep 600` in the guest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reasons_and_cleanup_after_panics_and_timeouts() {
    let _slots = common::guest_slots(2);
    let defs = vec![
        TestDef::new("FailingCheck", || FailingCheck),
        TestDef::new("PanickingAction", || PanickingAction),
        TestDef::new("SlowAction", || common::slow::SlowAction),
        TestDef::new("Skipped", || Skipped),
        TestDef::new("Warned", || Warned),
        TestDef::new("BadCleanup", || BadCleanup),
    ];
    let (_tmp, job) = common::run_job(&defs, &["timeout=3"], 2).await;
    let by_name = |name: &str| job.results.tests.iter().find(|t| t.name == name).unwrap();
    let status = |name| {
        (
            by_name(name).status,
            by_name(name).fail_reason.clone().unwrap_or_default(),
        )
    };

    let (s, reason) = status("failing_check");
    assert_eq!(
        (s, reason.as_str()),
        (Status::Fail, "the command exited with 3")
    );

    let (s, reason) = status("panicking_action");
    assert_eq!(s, Status::Fail);
    assert!(
        reason.contains("tests/job.rs") && reason.contains("arithmetic is broken"),
        "{reason}"
    );

    let (s, reason) = status("slow_action");
    assert_eq!(
        (s, reason.as_str()),
        (Status::Interrupted, "timed out after 3s")
    );

    assert_eq!(status("skipped"), (Status::Skip, "needs KVM".into()));
    assert_eq!(
        status("warned"),
        (Status::Warn, "the guest clock drifted".into())
    );
    let (s, reason) = status("bad_cleanup");
    assert_eq!(s, Status::Error);
    assert!(reason.starts_with("cleanup: no remote session"), "{reason}");

    for name in ["panicking_action", "slow_action"] {
        let record = by_name(name);
        let pid: u32 = std::fs::read_to_string(record.logdir.join("cleanup-ran"))
            .unwrap_or_else(|_| panic!("{name}: cleanup did not run"))
            .parse()
            .unwrap();
        assert!(pid > 0, "{name}: its VM was on in cleanup");
        assert!(!common::alive(pid), "{name}: QEMU {pid} is left");
        let debug = std::fs::read_to_string(record.logfile.clone()).unwrap();
        assert!(
            debug.contains("powered on") && debug.contains("test ends"),
            "{debug}"
        );
    }
    assert!(!job.results.success());
    let xml = std::fs::read_to_string(job.dir.join("results.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(
        failure.attribute("message"),
        Some("the command exited with 3")
    );
    let suite = doc.root_element();
    assert_eq!(suite.attribute("failures"), Some("2"));
    assert_eq!(suite.attribute("errors"), Some("2"));
    assert_eq!(suite.attribute("skipped"), Some("1"));
}

#[test]
fn bad_params_and_an_unwritable_results_dir_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |args: &[&str], params: Option<&Path>| {
        let mut command = virtest();
        command.args(args);
        if let Some(params) = params {
            command.arg("--params-file").arg(params);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let unknown = file("unknown.toml", "migration_mod = \"unix\"\n");
    let (code, stderr) = run(&["list"], Some(&unknown));
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("warning") && stderr.contains("`migration_mod`"),
        "{stderr}"
    );

    let wrong = file("wrong.toml", "migration_iterations = \"many\"\n");
    let (code, stderr) = run(&["list"], Some(&wrong));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`migration_iterations`") && stderr.contains("a whole number"),
        "{stderr}"
    );

    let (code, stderr) = run(&["list", "-p", "boot=sometimes"], None);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`boot` is `sometimes`") && stderr.contains("one of snapshot, fresh"),
        "{stderr}"
    );

    let broken = file("broken.toml", "cpus = 1\n\nmemory = [512,\n");
    let (code, stderr) = run(&["list"], Some(&broken));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("broken.toml") && stderr.contains("line "),
        "{stderr}"
    );

    let (code, stderr) = run(
        &["run", "boot", "--results-dir", "/etc/hostname/results"],
        None,
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("cannot write job results under `/etc/hostname/results`"),
        "{stderr}"
    );

    let (code, stderr) = run(&["run", "no_such_test"], None);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("virtest list"), "{stderr}");

    // A runtime directory other users can reach is refused, named.
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("virtest")).unwrap();
    std::fs::set_permissions(
        xdg.join("virtest"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let results = tmp.path().join("results");
    let out = virtest()
        .env("XDG_RUNTIME_DIR", &xdg)
        .args(["run", "boot", "--results-dir"])
        .arg(&results)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let job = JobResults::load(&std::fs::canonicalize(results.join("latest")).unwrap()).unwrap();
    let reason = job.tests[0].fail_reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!("`{}`", xdg.join("virtest").display()))
            && reason.contains("its mode is 0777"),
        "{reason}"
    );

    // One good name beside a typo runs nothing and names the typo.
    let (code, stderr) = run(&["run", "boot", "nosuchtest"], None);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no test matches `nosuchtest`"), "{stderr}");
    assert!(!stderr.contains("`boot`"), "{stderr}");
}

/// `virtest results` on a job killed mid-run (its results.json written
/// while it ran) says the job is incomplete and exits non-zero.
#[test]
fn results_of_a_killed_job_are_marked_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let job = tmp.path().join("job-2026-11-28T01.00.00-0000000");
    std::fs::create_dir(&job).unwrap();
    JobResults::partial("0000000", job.join("job.log"), 0.0, Vec::new(), 3)
        .write(&job)
        .unwrap();
    let out = virtest().arg("results").arg(&job).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("INCOMPLETE") && stdout.contains("3 of its 3 tests have no result"),
        "{stdout}"
    );
}
