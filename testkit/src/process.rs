//! Processes as `/proc` shows them: the checks behind "no QEMU left
//! behind".

use std::process::Child;
use std::time::{Duration, Instant};

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

/// Every pid in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    pids()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle) && alive(*pid)
        })
        .collect()
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    pids()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .collect()
}

/// Whether `pid` is a VM's QEMU, not one probed for its version or
/// accelerators (`-version`, `-accel help`), which ends at once.
pub fn is_qemu(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let runs_a_vm = cmdline.split(|&b| b == 0).any(|arg| arg == b"-chardev");
    comm.starts_with("qemu-system") && runs_a_vm
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

/// A child process killed and reaped when dropped, so a failing test
/// leaves no QEMU behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether this process runs as root (its effective uid is 0), as
/// simulated hosts need; without it a test of them says it is skipped.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    let root = effective == Some("0");
    if !root {
        eprintln!("skipped: simulated hosts need root");
    }
    root
}

/// Whether the on-demand set runs (`VIRTEST_ON_DEMAND=1`): tests that
/// repeat on the Debian guest what the default guest covers, left out
/// of CI for its time. Says so when they are skipped.
pub fn on_demand(what: &str) -> bool {
    let run = std::env::var_os("VIRTEST_ON_DEMAND").is_some_and(|v| v == "1");
    if !run {
        eprintln!("skipped: {what} runs on demand (VIRTEST_ON_DEMAND=1)");
    }
    run
}
