//! A job in a terminal (tmux's pseudo-terminal), driven as a person
//! would: the live display while tests run; `--pause-on-failure`, where
//! the printed `ssh` command and `virtest ssh` both run a command in the
//! paused guest, Enter resumes, cleanup runs, and no QEMU is left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use virtest::harness::params::ParamSources;
use virtest::harness::pause::VmAccess;
use virtest::harness::results::JobResults;
use virtest::harness::runner::{self, Filter, JobOptions};
use virtest::harness::{Status, TestDef};
use virtest::prelude::*;

/// Logs in, leaves a mark in the guest, migrates it, then fails: the
/// ways in are the destination's.
#[derive(Default)]
struct FailsAfterLogin;
impl VirtTest for FailsAfterLogin {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        t.vm.remote()?.run("echo paused-guest > /tmp/mark").await?;
        t.vm.migrate(MigrationMode::Unix).await?;
        Err(fail("the guest is not as expected"))
    }
}

/// Runs a command that takes a while in the guest.
#[derive(Default)]
struct SleepsInGuest;
impl VirtTest for SleepsInGuest {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        t.vm.remote()?.run("sleep 6").await?;
        Ok(())
    }
}

/// The jobs of the tests below, in a child process (in a terminal):
/// `VIRTEST_CHILD_JOB=pause` pauses on a failure, `live` runs two tests
/// at once.
#[test]
#[ignore = "run by the tests of this file in a child process"]
fn child_job() {
    // Run alone (`--ignored`), it must not pass for a test.
    let results = std::env::var("VIRTEST_CHILD_RESULTS")
        .expect("not a test of its own: the tests of this file run it in a child process");
    let live = std::env::var("VIRTEST_CHILD_JOB").as_deref() == Ok("live");
    let defs = match live {
        true => vec![TestDef::new("SleepsInGuest", SleepsInGuest::default)],
        false => vec![TestDef::new("FailsAfterLogin", FailsAfterLogin::default)],
    };
    let sources = ParamSources {
        file: None,
        assignments: std::env::var("VIRTEST_CHILD_GUEST")
            .map(|guest| vec![format!("guest={guest}")])
            .unwrap_or_default(),
    };
    let (planned, _) = runner::plan(&defs, &sources, &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: results.into(),
        max_parallel: if live { 2 } else { 1 },
        pause_on_failure: !live,
        repeat: if live { 2 } else { 1 },
        ..JobOptions::new()
    };
    let _ = runner::run_and_report(&defs, planned, &options);
}

/// `child_job` in a terminal of its own, `width` columns wide, on the
/// default guest or `guest`; the screen says `JOB-EXITED` when it ends.
fn child_in_tmux(job: &str, results: &Path, width: u32, guest: Option<&Path>) -> Tmux {
    let command = format!(
        "{} child_job --exact --ignored --nocapture; echo JOB-EXITED; sleep 60",
        std::env::current_exe().unwrap().display()
    );
    let mut env = vec![
        ("VIRTEST_CHILD_RESULTS", results),
        ("VIRTEST_CHILD_JOB", Path::new(job)),
    ];
    env.extend(guest.map(|guest| ("VIRTEST_CHILD_GUEST", guest)));
    Tmux::start(&command, &env, width)
}

/// A tmux server of our own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `command` in a terminal `width` columns wide.
    fn start(command: &str, env: &[(&str, &Path)], width: u32) -> Tmux {
        static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tmux = Tmux {
            socket: format!("virtest-test-{}-{n}", std::process::id()),
        };
        let mut new = tmux.command();
        new.args(["new-session", "-d", "-s", "job", "-n", "main"]);
        new.args(["-x", &width.to_string(), "-y", "60"]);
        for (key, value) in env {
            new.arg("-e").arg(format!("{key}={}", value.display()));
        }
        let status = new.arg(command).status().expect("tmux is installed");
        assert!(status.success());
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    /// The text of the job's window, wrapped lines joined.
    fn screen(&self) -> String {
        self.window_screen("main")
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str, deadline: Duration) -> String {
        let mut screen = String::new();
        let shown = common::eventually(deadline, || {
            screen = self.screen();
            screen.contains(text)
        });
        assert!(shown, "no {text:?} on the screen:\n{screen}");
        screen
    }

    /// Opens a window named `name` running `command`.
    fn window(&self, name: &str, command: &str) {
        let status = self
            .command()
            .args(["new-window", "-t", "job", "-n", name, command])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The text of window `name`, wrapped lines joined.
    fn window_screen(&self, name: &str) -> String {
        let target = format!("job:{name}");
        let output = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-500", "-t", &target])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until window `name` shows `text` after what it showed
    /// before (`shown`, its length in characters).
    fn wait_in_window(&self, name: &str, text: &str, shown: usize) -> String {
        let mut screen = String::new();
        let seen = common::eventually(Duration::from_secs(60), || {
            screen = self.window_screen(name);
            screen.get(shown..).is_some_and(|new| new.contains(text))
        });
        assert!(seen, "no {text:?} in window {name}:\n{screen}");
        screen
    }

    /// Types `keys` (tmux's key names) into `target` (`job`, `job:NAME`).
    fn keys(&self, target: &str, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", target])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn press_enter(&self) {
        self.keys("job:main", &["Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The rest of the screen line that starts (after spaces) with `label`.
fn line_after<'a>(screen: &'a str, label: &str) -> &'a str {
    screen
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no line {label:?} on the screen:\n{screen}"))
        .trim()
}

fn shell(line: &str) -> Output {
    Command::new("sh").arg("-c").arg(line).output().unwrap()
}

#[test]
fn a_failed_test_pauses_with_working_ways_in() {
    let _slot = common::guest_slots(1);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let tmux = child_in_tmux("pause", &results, 400, None);
    let screen = tmux.wait_for("PAUSED     :", Duration::from_secs(180));
    assert!(
        screen.contains("fails_after_login failed; its VM runs until you press Enter"),
        "{screen}"
    );

    // The printed ssh command works as printed: no prompt, no password.
    let ssh = line_after(&screen, "ssh      :");
    let output = shell(&format!("{ssh} cat /tmp/mark </dev/null"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "paused-guest\n",
        "`{ssh}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shell(&format!("{ssh} true </dev/null")).status.success());

    // So does `virtest ssh JOB TEST`.
    let virtest_ssh = line_after(&screen, "or: virtest");
    let virtest = env!("CARGO_BIN_EXE_virtest");
    let output = shell(&format!(
        "{virtest} {virtest_ssh} -- cat /tmp/mark </dev/null"
    ));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "paused-guest\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The serial console, from another terminal: log in at its prompt,
    // run a command, leave with Ctrl-]; console.log records it all.
    let attach = line_after(&screen, "console  :");
    let attach = attach.split("   (").next().unwrap();
    tmux.window(
        "console",
        &format!(
            "{virtest} {} ; echo CONSOLE-LEFT; sleep 60",
            attach.trim_start_matches("virtest ")
        ),
    );
    let seen = tmux.wait_in_window("console", "login:", 0);
    let password = &common::guest().credentials.password;
    tmux.keys("job:console", &["root", "Enter"]);
    let seen = tmux.wait_in_window("console", "Password:", seen.trim_end().len());
    tmux.keys("job:console", &[password.as_str(), "Enter"]);
    tmux.keys("job:console", &["echo console-$((6*7))", "Enter"]);
    tmux.wait_in_window("console", "console-42", seen.trim_end().len());
    tmux.keys("job:console", &["C-]"]);
    tmux.wait_in_window("console", "CONSOLE-LEFT", 0);

    // The QMP socket is the running QEMU's: the migration's destination,
    // the VM's second QEMU.
    let qmp = PathBuf::from(line_after(&screen, "QMP      :"));
    assert!(qmp.exists(), "{}", qmp.display());
    assert!(qmp.ends_with("qmp-2.sock"), "{}", qmp.display());
    let job = std::fs::canonicalize(results.join("latest")).unwrap();
    let test_dir = job.join("test-results/1-fails_after_login");
    let access = VmAccess::read(&test_dir).unwrap();
    assert_eq!(access[0].qmp_socket, qmp);
    let pid = access[0].pid;
    assert!(common::alive(pid), "the VM runs while paused");

    // A console still attached when the job goes on says so and ends.
    tmux.window(
        "console2",
        &format!(
            "{virtest} {} ; echo CONSOLE2-LEFT; sleep 60",
            attach.trim_start_matches("virtest ")
        ),
    );
    tmux.wait_in_window("console2", "Ctrl-] leaves", 0);

    tmux.press_enter();
    let screen = tmux.wait_for("JOB-EXITED", Duration::from_secs(120));
    let console2 = tmux.wait_in_window("console2", "CONSOLE2-LEFT", 0);
    assert!(
        console2.contains("[the console closed: the job went on]"),
        "{console2}"
    );
    assert!(
        screen.contains("RESUMED    : fails_after_login's cleanup runs"),
        "{screen}"
    );
    assert!(
        common::eventually(Duration::from_secs(10), || !common::alive(pid)),
        "QEMU {pid} is left"
    );
    assert!(
        !test_dir.join("access.json").exists(),
        "access.json is left"
    );
    let json = JobResults::load(&job).unwrap();
    assert_eq!(json.tests[0].status, Status::Fail);
    assert_eq!(
        json.tests[0].fail_reason.as_deref(),
        Some("the guest is not as expected")
    );

    // The job is over: `virtest ssh` and `virtest console` say its VMs
    // are gone, and which job.
    let console = virtest_ssh.replacen("ssh", "console", 1);
    for command in [format!("{virtest_ssh} -- true"), console] {
        let output = shell(&format!("{virtest} {command} </dev/null"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("no VM of test `1-fails_after_login`")
                && stderr.contains(&job.display().to_string())
                && stderr.contains("--pause-on-failure"),
            "{stderr}"
        );
    }
}

/// On the Debian guest (cloud-init, virtest's own key), after a
/// migration: the printed ssh command and `virtest ssh` get in.
#[test]
fn a_paused_debian_guest_lets_you_in() {
    let _slot = common::guest_slots(1);
    let guest = common::debian().path.clone();
    let tmp = tempfile::tempdir().unwrap();
    let tmux = child_in_tmux("pause", tmp.path(), 400, Some(&guest));
    let screen = tmux.wait_for("PAUSED     :", Duration::from_secs(300));
    let ssh = line_after(&screen, "ssh      :");
    let output = shell(&format!("{ssh} cat /tmp/mark </dev/null"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "paused-guest\n",
        "`{ssh}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let virtest = env!("CARGO_BIN_EXE_virtest");
    let virtest_ssh = line_after(&screen, "or: virtest");
    let output = shell(&format!(
        "{virtest} {virtest_ssh} -- systemctl is-system-running --wait </dev/null"
    ));
    let state = String::from_utf8_lossy(&output.stdout);
    assert!(
        ["running\n", "degraded\n"].contains(&state.as_ref()),
        "{state}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pid = VmAccess::read(
        &std::fs::canonicalize(tmp.path().join("latest"))
            .unwrap()
            .join("test-results/1-fails_after_login"),
    )
    .unwrap()[0]
        .pid;
    tmux.press_enter();
    tmux.wait_for("JOB-EXITED", Duration::from_secs(120));
    assert!(
        common::eventually(Duration::from_secs(10), || !common::alive(pid)),
        "QEMU {pid} is left"
    );
}

/// Without a terminal to answer (stdin closed, as in CI), a pause goes
/// on at once.
#[test]
fn a_pause_with_stdin_closed_goes_on() {
    let _slot = common::guest_slots(1);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["child_job", "--exact", "--ignored", "--nocapture"])
        .env("VIRTEST_CHILD_RESULTS", tmp.path())
        .env("VIRTEST_CHILD_JOB", "pause")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("PAUSED     :"), "{stdout}");
    assert!(
        stdout.contains("RESUMED    : stdin is closed: fails_after_login's cleanup runs"),
        "{stdout}"
    );
    let job = std::fs::canonicalize(tmp.path().join("latest")).unwrap();
    assert_eq!(
        JobResults::load(&job).unwrap().tests[0].status,
        Status::Fail
    );
}

/// The live display in a terminal narrower than its lines: a line per
/// running test with what it does (cut to the width, so redrawing it
/// leaves nothing behind), the count, then each result and the summary.
#[test]
fn the_live_display_shows_each_running_test() {
    let _slots = common::guest_slots(2);
    common::guest();
    let tmp = tempfile::tempdir().unwrap();
    let tmux = child_in_tmux("live", tmp.path(), 60, None);
    let screen = tmux.wait_for("@repeat=2: running `sleep", Duration::from_secs(120));
    let live: Vec<&str> = screen
        .lines()
        .filter(|line| line.starts_with("   ("))
        .collect();
    assert!(
        live.iter()
            .any(|line| line.contains("(1/2) sleeps_in_guest@repeat=1: "))
            && live
                .iter()
                .any(|line| line.contains("(2/2) sleeps_in_guest@repeat=2: ")),
        "{screen}"
    );
    assert!(screen.contains("0 of 2 done, 2 running"), "{screen}");
    for line in &live {
        assert!(line.chars().count() < 60, "wider than the terminal: {line}");
    }

    let screen = tmux.wait_for("JOB-EXITED", Duration::from_secs(120));
    for n in 1..=2 {
        let result = format!(" ({n}/2) sleeps_in_guest@repeat={n}: PASS (");
        assert!(screen.contains(&result), "{screen}");
    }
    assert!(screen.contains("REPEATED   : sleeps_in_guest: passed 2 of 2 runs"));
    assert!(
        !screen.contains(" running ("),
        "live lines are left:\n{screen}"
    );
    assert!(
        !screen.contains("2 running"),
        "live lines are left:\n{screen}"
    );
}

/// `virtest ssh`, `console` and `results` on bad input: a directory that
/// is not a job, a test the job does not have.
#[test]
fn virtest_ssh_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let virtest = || Command::new(env!("CARGO_BIN_EXE_virtest"));
    for args in [&["ssh", "boot"][..], &["console", "boot"], &["results"]] {
        let output = virtest()
            .arg(args[0])
            .arg(tmp.path())
            .args(&args[1..])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not a job directory: it has no results.json"),
            "{args:?}: {stderr}"
        );
    }

    let job = tmp.path().join("job-1");
    std::fs::create_dir_all(job.join("test-results/1-boot")).unwrap();
    std::fs::write(job.join("results.json"), "{}").unwrap();
    let output = virtest()
        .arg("ssh")
        .arg(&job)
        .arg("migration")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no test `migration`"), "{stderr}");
}
