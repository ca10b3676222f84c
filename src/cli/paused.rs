//! Into the VM of a test that pauses on its failure (`virtest run
//! --pause-on-failure`): `virtest ssh JOB TEST [VM] [-- COMMAND...]` and
//! `virtest console JOB TEST [VM]`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use virtest_harness::pause::VmAccess;
use virtest_harness::runner::JobOptions;

use super::CliResult;
use super::results::find_job;

/// Which paused VM.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The job: its directory, its id (or the id's start), or `latest`.
    job: String,
    /// The test: its directory's name (`3-boot`), number (`3`) or name
    /// (`boot`).
    test: String,
    /// The VM, by name (the test's first when none).
    vm: Option<String>,
    /// Where job directories are (as for `virtest run`).
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

/// `virtest ssh`.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    #[command(flatten)]
    target: Target,
    /// A command to run instead of a shell (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

/// `virtest console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    target: Target,
}

pub fn ssh(args: SshArgs) -> CliResult {
    let (access, test) = args.target.find()?;
    let Some(argv) = &access.ssh else {
        return Err(format!(
            "VM `{}` of test `{test}` has no SSH login; its QMP socket is {}",
            access.vm,
            access.qmp_socket.display()
        )
        .into());
    };
    let error = Command::new(&argv[0])
        .args(&argv[1..])
        .args(&args.command)
        .exec();
    Err(format!("cannot run `{}`: {error} (install openssh-client)", argv[0]).into())
}

/// The byte Ctrl-] sends, which leaves the console (as telnet's and
/// virsh's do).
const LEAVE: u8 = 0x1d;

pub fn console(args: ConsoleArgs) -> CliResult {
    let (access, test) = args.target.find()?;
    let socket = access.console_socket.as_ref().ok_or_else(|| {
        format!(
            "VM `{}` of test `{test}` shares no console (see the job's output)",
            access.vm
        )
    })?;
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot attach to `{}`: {e} (the pause may have ended)",
            socket.display()
        )
    })?;
    let raw = RawTerminal::enter();
    eprint!("[the console of {test}; Ctrl-] leaves]\r\n");
    let mut output = stream.try_clone()?;
    let leaving = Arc::new(AtomicBool::new(false));
    let printer = {
        let (leaving, saved) = (leaving.clone(), raw.saved.clone());
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = output.read(&mut chunk) {
                if n == 0 || stdout.write_all(&chunk[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
            if !leaving.load(Ordering::SeqCst) {
                // The job went on: no key needs pressing to see it.
                restore_terminal(saved.as_deref());
                eprintln!("\r\n[the console closed: the job went on]");
                std::process::exit(0);
            }
        })
    };
    let mut input = &stream;
    let mut chunk = [0u8; 1024];
    let mut stdin = std::io::stdin().lock();
    let left = loop {
        let n = match stdin.read(&mut chunk) {
            Ok(0) | Err(_) => break false,
            Ok(n) => n,
        };
        let (typed, leave) = match chunk[..n].iter().position(|&b| b == LEAVE) {
            Some(at) => (&chunk[..at], true),
            None => (&chunk[..n], false),
        };
        if input.write_all(typed).is_err() {
            break false;
        }
        if leave {
            break true;
        }
    };
    if !left {
        // Input ended (a pipe): show what the guest answers, until it is
        // quiet.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        std::thread::sleep(Duration::from_secs(2));
    }
    leaving.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    drop(raw);
    eprintln!("\r\n[left the console]");
    Ok(ExitCode::SUCCESS)
}

impl Target {
    /// The paused VM this names, and the test as given.
    fn find(&self) -> Result<(VmAccess, &str), String> {
        let results_dir = self
            .results_dir
            .clone()
            .unwrap_or_else(|| JobOptions::new().results_dir);
        let job = find_job(&results_dir, Some(&self.job))?;
        let gone = || {
            format!(
                "no VM of test `{}` in job `{}` is running: a test's VMs stay only while \
                 its job pauses on the test's failure (virtest run --pause-on-failure)",
                self.test,
                job.display()
            )
        };
        let tests = matching_tests(&job, &self.test)?;
        let accesses = tests
            .iter()
            .find_map(|dir| VmAccess::read(dir).ok())
            .ok_or_else(gone)?;
        let access = match &self.vm {
            None => accesses.first(),
            Some(name) => accesses.iter().find(|a| &a.vm == name),
        }
        .ok_or_else(|| {
            let names: Vec<&str> = accesses.iter().map(|a| a.vm.as_str()).collect();
            format!(
                "test `{}` has no VM `{}`; its VMs: {}",
                self.test,
                self.vm.as_deref().unwrap_or(""),
                names.join(", ")
            )
        })?;
        if !Path::new(&format!("/proc/{}", access.pid)).exists() {
            return Err(gone());
        }
        Ok((access.clone(), &self.test))
    }
}

/// The directories of job `job`'s tests that `test` names, newest retry
/// last.
fn matching_tests(job: &Path, test: &str) -> Result<Vec<PathBuf>, String> {
    let dir = job.join("test-results");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let (number, rest) = name.split_once('-').unwrap_or((&name, ""));
            let base = rest.split("-retry").next().unwrap_or(rest);
            name == test || number == test || base == test
        })
        .collect();
    if found.is_empty() {
        return Err(format!(
            "job `{}` has no test `{test}` (give its directory's name, e.g. `1-boot`, its number or its name)",
            job.display()
        ));
    }
    found.sort();
    Ok(found)
}

/// The terminal in raw mode (keys go to the guest as typed, Ctrl-C
/// included, without local echo) until dropped; nothing when stdin is
/// not a terminal.
struct RawTerminal {
    saved: Option<String>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        let stty = |args: &[&str]| {
            Command::new("stty")
                .args(args)
                .stdin(Stdio::inherit())
                .output()
                .ok()
                .filter(|output| output.status.success())
        };
        let saved =
            stty(&["-g"]).map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
        if saved.is_some() {
            stty(&["raw", "-echo"]);
        }
        RawTerminal { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal(self.saved.as_deref());
    }
}

/// Puts back the terminal settings `stty -g` saved.
fn restore_terminal(saved: Option<&str>) {
    if let Some(saved) = saved {
        let _ = Command::new("stty")
            .arg(saved)
            .stdin(Stdio::inherit())
            .status();
    }
}
