//! Helpers shared by the end-to-end tests: the root's `tests/`, and each
//! layer crate's `tests/`, which include this file by `#[path]` (so that
//! `cargo test -p virtest-vm` boots guests with only that layer's tests).

#![allow(dead_code)] // each test binary uses its own part of these helpers

pub mod slow;
pub mod stream;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use virtest::guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest::guest::{GuestDescription, Manifest, cache};
use virtest::harness::TestDef;
use virtest::harness::params::ParamSources;
use virtest::harness::runner::{self, Filter, Job, JobOptions};
use virtest::qemu_cmdline::accel::Chosen;
use virtest::qemu_cmdline::binary::{self, BinaryKind};
use virtest::vm::{ConsoleOutput, GuestLaunch};

/// The default guest, bootstrapped once per test binary (a no-op when the
/// cache is current).
pub fn guest() -> &'static Manifest {
    static GUEST: OnceLock<Manifest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let home = cache::default_home().unwrap();
        bootstrap(&BootstrapOptions::new(home))
            .expect("bootstrap")
            .manifest
    })
}

/// The Debian guest, built once into the cache (a no-op when current;
/// minutes the first time, as root).
pub fn debian() -> &'static GuestDescription {
    static DEBIAN: OnceLock<GuestDescription> = OnceLock::new();
    DEBIAN.get_or_init(|| {
        let home = cache::default_home().unwrap();
        let options = virtest::guest::debian::DebianOptions { home, force: false };
        virtest::guest::debian::bootstrap_debian(&options)
            .expect("building the Debian guest")
            .description
    })
}

/// The default guest's description (its `guest.toml`).
pub fn description() -> &'static GuestDescription {
    static DESCRIPTION: OnceLock<GuestDescription> = OnceLock::new();
    DESCRIPTION.get_or_init(|| guest().description().expect("the default guest.toml"))
}

/// Writes `dir/guest.toml`: the default guest as a user would describe
/// it by hand (absolute paths, its key and password), plus `extra` TOML
/// (say, a `[[disks]]` table).
pub fn write_guest_toml(dir: &std::path::Path, extra: &str) -> PathBuf {
    let guest = description();
    let kernel = guest.boot.kernel.as_ref().unwrap();
    let login = &guest.login;
    let text = format!(
        r#"name = "mine"

[boot]
kernel = "{kernel}"
initrd = "{initrd}"
cmdline = "{cmdline}"

[login]
user = "{user}"
password = "{password}"
key = "{key}"

[ready]
wait_for = "console"
line = "virtest-guest-ready"

{extra}
"#,
        kernel = kernel.kernel.display(),
        initrd = kernel.initrd.as_ref().unwrap().display(),
        cmdline = kernel.cmdline,
        user = login.user,
        password = login.password.as_deref().unwrap(),
        key = login.key.as_ref().unwrap().display(),
    );
    let path = dir.join("guest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// At most two guests run at once on these two-core machines: a test
/// holds slots for the guests it runs, and the tests of a binary (which
/// run in parallel) wait for theirs. A test of three VMs holds all
/// slots, so its three run alone.
pub fn guest_slots(count: u32) -> GuestSlots {
    let count = count.min(GUEST_SLOTS);
    let mut free = SLOTS.0.lock().unwrap();
    while *free < count {
        free = SLOTS.1.wait(free).unwrap();
    }
    *free -= count;
    GuestSlots(count)
}

/// How many guests a test binary runs at once.
const GUEST_SLOTS: u32 = 2;

static SLOTS: (Mutex<u32>, Condvar) = (Mutex::new(GUEST_SLOTS), Condvar::new());

/// Slots held; given back on drop.
pub struct GuestSlots(u32);

impl Drop for GuestSlots {
    fn drop(&mut self) {
        *SLOTS.0.lock().unwrap_or_else(|e| e.into_inner()) += self.0;
        SLOTS.1.notify_all();
    }
}

/// The SHA-256 of a file, hex (by `sha256sum`, as a user would check).
pub fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `deadline` for `done`, polling.
pub fn eventually(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A QEMU process, killed and reaped on drop.
pub struct Qemu {
    pub child: Child,
    pub console: PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    pub fn boot(manifest: &Manifest, reboot_allowed: bool) -> Qemu {
        Qemu::boot_with(manifest, reboot_allowed, false)
    }

    /// Boots with the console also served on `<dir>/console.sock`.
    pub fn boot_with(manifest: &Manifest, reboot_allowed: bool, console_socket: bool) -> Qemu {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let port = free_port();
        let guest = manifest.description().unwrap();
        let launch = GuestLaunch {
            guest: &guest,
            qemu: binary::find(BinaryKind::System, None).unwrap(),
            accel: Chosen::Tcg,
            qemu_version: Some(
                binary::probe(&binary::find(BinaryKind::System, None).unwrap())
                    .unwrap()
                    .version,
            ),
            memory_mib: None,
            forward_ports: &[],
            networks: &[],
            ssh_host_port: port,
            cpus: None,
            console: match console_socket {
                false => ConsoleOutput::File(console.clone()),
                true => ConsoleOutput::Serve {
                    socket: dir.path().join("console.sock"),
                    log: console.clone(),
                },
            },
            vga: false,
            qmp_socket: None,
            agent_socket: None,
            allow_reboot: reboot_allowed,
            disks: &[],
            uefi: None,
            seed: None,
            generation_id: false,
        };
        let cmdline = launch.cmdline();
        cmdline.validate().unwrap();
        let child = cmdline
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Qemu {
            child,
            console,
            port,
            dir,
        }
    }

    /// Waits until the console shows `count` ready lines.
    pub fn wait_ready(&mut self, count: usize, deadline: Duration) -> Duration {
        let start = Instant::now();
        let marker = &guest().ready_marker;
        loop {
            let text = std::fs::read_to_string(&self.console).unwrap_or_default();
            if text.matches(marker.as_str()).count() >= count {
                return start.elapsed();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!("QEMU exited ({status}) before the ready line: {stderr}\nconsole:\n{text}");
            }
            assert!(
                start.elapsed() < deadline,
                "no ready line within {deadline:?}; console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "QEMU still running after {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test's log directory: removed when the test passes; kept when it
/// panics, with the tail of every `console.log` under it printed, so a
/// failure in CI shows what the guest last said.
pub struct TestLogs(Option<tempfile::TempDir>);

/// A fresh [`TestLogs`] directory.
pub fn test_logs() -> TestLogs {
    TestLogs(Some(tempfile::tempdir().unwrap()))
}

impl TestLogs {
    pub fn path(&self) -> &std::path::Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for TestLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.0.take().unwrap().keep();
        eprintln!("the test's logs are kept in {}", dir.display());
        let mut consoles: Vec<PathBuf> = files_under(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|path| path.file_name().is_some_and(|name| name == "console.log"))
            .collect();
        consoles.sort();
        for console in consoles {
            let text = std::fs::read(&console).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- last lines of {} ---", console.display());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Every file under `dir`, recursively, not following symlinks (a
/// results directory's `latest` points into itself).
pub fn files_under(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// A child process killed and reaped when dropped, so a failing test
/// leaves no QEMU behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `defs` as one job with the parameters `assignments`
/// (`key=value`), `max_parallel` tests at once, its results in a new
/// temporary directory, returned with the job (the job's files go with
/// it).
pub async fn run_job(
    defs: &[TestDef],
    assignments: &[&str],
    max_parallel: usize,
) -> (tempfile::TempDir, Job) {
    let tmp = tempfile::tempdir().unwrap();
    let sources = ParamSources {
        file: None,
        assignments: assignments.iter().map(|a| a.to_string()).collect(),
    };
    let (planned, _) = runner::plan(defs, &sources, &Filter::default()).unwrap();
    let options = JobOptions {
        results_dir: tmp.path().to_path_buf(),
        max_parallel,
        ..JobOptions::new()
    };
    let job = runner::run_job(defs, planned, &options).await.unwrap();
    (tmp, job)
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is a VM's QEMU, not one probed for its version or
/// accelerators (`-version`, `-accel help`), which ends at once.
pub fn is_qemu(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let runs_a_vm = cmdline.split(|&b| b == 0).any(|arg| arg == b"-chardev");
    comm.starts_with("qemu-system") && runs_a_vm
}
