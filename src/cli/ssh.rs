//! `virtest ssh JOB TEST [VM] [-- COMMAND...]`: a shell (or a command) in
//! the VM of a test that pauses on its failure (`--pause-on-failure`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use virtest_harness::pause::VmAccess;
use virtest_harness::runner::JobOptions;

use super::CliResult;
use super::results::find_job;

/// `virtest ssh`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job: its directory, its id (or the id's start), or `latest`.
    job: String,
    /// The test: its directory's name (`3-boot`), number (`3`) or name
    /// (`boot`).
    test: String,
    /// The VM, by name (the test's first when none).
    vm: Option<String>,
    /// A command to run instead of a shell (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
    /// Where job directories are (as for `virtest run`).
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> CliResult {
    let results_dir = args
        .results_dir
        .unwrap_or_else(|| JobOptions::new().results_dir);
    let job = find_job(&results_dir, Some(&args.job))?;
    let gone = || {
        format!(
            "no VM of test `{}` in job `{}` is running: a test's VMs stay only while \
             its job pauses on the test's failure (virtest run --pause-on-failure)",
            args.test,
            job.display()
        )
    };
    let tests = matching_tests(&job, &args.test)?;
    let Some(accesses) = tests.iter().find_map(|dir| VmAccess::read(dir).ok()) else {
        return Err(gone().into());
    };
    let access = match &args.vm {
        None => accesses.first(),
        Some(name) => accesses.iter().find(|a| &a.vm == name),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = accesses.iter().map(|a| a.vm.as_str()).collect();
        format!(
            "test `{}` has no VM `{}`; its VMs: {}",
            args.test,
            args.vm.as_deref().unwrap_or(""),
            names.join(", ")
        )
    })?;
    if !Path::new(&format!("/proc/{}", access.pid)).exists() {
        return Err(gone().into());
    }
    let Some(argv) = &access.ssh else {
        return Err(format!(
            "VM `{}` of test `{}` has no SSH login; its QMP socket is {}",
            access.vm,
            args.test,
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
