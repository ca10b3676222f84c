//! `--pause-on-failure`: a failed test's VM keeps running before its
//! cleanup, and the job says how to get in (an `ssh` command line that
//! works as printed, `virtest ssh JOB TEST`, its serial console through
//! `virtest console JOB TEST`, the QMP socket), until the user presses
//! Enter or Ctrl-C. While it waits, `access.json` in the test's directory
//! holds the same, for `virtest ssh` and `virtest console`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use virtest_qemu_cmdline::cmdline::shell_quote;
use virtest_vm::{SharedConsole, SshAccess, Vm};

use crate::progress::Progress;
use crate::runner::Interrupt;

/// The file in a paused test's directory that says how to get in.
pub const ACCESS_FILE: &str = "access.json";

/// How to get into a paused test's VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmAccess {
    /// The VM's name in the test (`vm` for `t.vm`).
    pub vm: String,
    /// Its QEMU's pid.
    pub pid: u32,
    /// An OpenSSH command line that logs in as printed (key, port, user,
    /// the guest's host key pinned); `None` when the guest has no SSH
    /// login.
    pub ssh: Option<Vec<String>>,
    /// Its QMP socket.
    pub qmp_socket: PathBuf,
    /// Its serial console, shared for `virtest console` while it pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_socket: Option<PathBuf>,
}

impl VmAccess {
    /// The access of the paused test in `test_dir`, if it pauses now.
    pub fn read(test_dir: &Path) -> std::io::Result<Vec<VmAccess>> {
        let bytes = std::fs::read(test_dir.join(ACCESS_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// Pauses failed tests one at a time (their messages would mix), reading
/// the user's Enter from stdin.
pub(crate) struct Pauser {
    /// The lines typed on stdin, once a pause first asked; `None` in it
    /// when stdin is closed.
    lines: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    progress: Progress,
}

impl Pauser {
    pub(crate) fn new(progress: Progress) -> Pauser {
        Pauser {
            lines: Mutex::new(None),
            progress,
        }
    }

    /// Keeps the VMs of failed test `name` (its directory `dir`)
    /// running, says how to get into each, and waits for Enter or
    /// `interrupt`.
    pub(crate) async fn pause(
        &self,
        name: &str,
        dir: &Path,
        vms: Vec<(&str, &mut Vm)>,
        interrupt: Interrupt,
    ) {
        let mut lines = self.lines.lock().await;
        let _quiet = self.progress.hold();
        let mut accesses = Vec::new();
        // Each shared console lasts as long as the pause.
        let mut shared_consoles = Vec::new();
        for (vm_name, vm) in vms {
            let Some(pid) = vm.pid().filter(|_| vm.is_on()) else {
                continue;
            };
            let socket = vm.files().runtime_dir().join("console-shared.sock");
            let shared = vm
                .console()
                .map_err(std::io::Error::other)
                .and_then(|console| SharedConsole::new(console, &socket, 20));
            let console_socket = match shared {
                Ok(shared) => {
                    let path = shared.path().to_path_buf();
                    shared_consoles.push(shared);
                    Some(path)
                }
                Err(e) => {
                    tracing::warn!(vm = vm_name, error = %e, "a paused VM's console cannot be shared");
                    None
                }
            };
            match access(dir, vm_name, pid, vm, console_socket) {
                Ok(access) => accesses.push(access),
                Err(e) => {
                    println!("PAUSED     : {name}: cannot say how to get into VM `{vm_name}`: {e}")
                }
            }
        }
        if accesses.is_empty() {
            println!("PAUSED     : {name} failed, but no VM of it is on: nothing to step into");
            return;
        }
        let written = serde_json::to_vec_pretty(&accesses)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::results::write_atomic(&dir.join(ACCESS_FILE), &json));
        if let Err(e) = written {
            println!("PAUSED     : {name}: cannot write {ACCESS_FILE}: {e}");
        }
        println!("{}", announcement(name, dir, &accesses));
        let lines = lines.get_or_insert_with(read_stdin_lines);
        tokio::select! {
            line = lines.recv() => match line {
                Some(_) => println!("RESUMED    : {name}'s cleanup runs"),
                None => println!("RESUMED    : stdin is closed: {name}'s cleanup runs"),
            },
            signal = crate::runner::signalled(interrupt) => {
                println!("RESUMED    : {signal}: {name}'s cleanup runs");
            }
        }
        drop(shared_consoles);
        let _ = std::fs::remove_file(dir.join(ACCESS_FILE));
        for access in &accesses {
            let _ = std::fs::remove_file(dir.join(known_hosts_name(&access.vm)));
        }
    }
}

/// The known_hosts file of a paused VM, in the test's directory.
fn known_hosts_name(vm: &str) -> String {
    match vm {
        "vm" => "known_hosts".to_string(),
        other => format!("known_hosts-{other}"),
    }
}

/// How to get into `vm`; writes the known_hosts file its ssh command
/// pins into `dir`.
fn access(
    dir: &Path,
    name: &str,
    pid: u32,
    vm: &Vm,
    console_socket: Option<PathBuf>,
) -> std::io::Result<VmAccess> {
    let known_hosts = std::path::absolute(dir.join(known_hosts_name(name)))?;
    let ssh = vm.ssh_access().map(|ssh| {
        if let Some(key) = &ssh.host_key {
            let line = format!("[127.0.0.1]:{} {key}\n", ssh.port);
            if let Err(e) = std::fs::write(&known_hosts, line) {
                tracing::warn!(error = %e, "writing the paused VM's known_hosts");
            }
        }
        ssh_command(&ssh, &known_hosts)
    });
    let qmp_socket = vm
        .instance()
        .map(|instance| instance.endpoints().qmp_socket.clone())
        .map_err(std::io::Error::other)?;
    Ok(VmAccess {
        vm: name.to_string(),
        pid,
        ssh,
        qmp_socket,
        console_socket,
    })
}

/// OpenSSH's command line for `ssh`: its key only, the host key pinned
/// in `known_hosts` (accepted blindly only when no login saw it yet).
fn ssh_command(ssh: &SshAccess, known_hosts: &Path) -> Vec<String> {
    let mut argv = vec!["ssh".to_string(), "-p".into(), ssh.port.to_string()];
    if let Some(key) = &ssh.key {
        argv.extend(["-i".into(), key.display().to_string()]);
        argv.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
    }
    let (file, check) = match ssh.host_key {
        Some(_) => (known_hosts.display().to_string(), "yes"),
        None => ("/dev/null".to_string(), "no"),
    };
    argv.extend(["-o".into(), format!("UserKnownHostsFile={file}")]);
    argv.extend(["-o".into(), format!("StrictHostKeyChecking={check}")]);
    argv.extend(["-o".into(), "LogLevel=ERROR".into()]);
    argv.push(format!("{}@127.0.0.1", ssh.user));
    argv
}

/// What the user reads: the ways into each VM.
fn announcement(name: &str, dir: &Path, accesses: &[VmAccess]) -> String {
    let mut text = match accesses {
        [_] => format!("PAUSED     : {name} failed; its VM runs until you press Enter (or Ctrl-C)"),
        _ => format!("PAUSED     : {name} failed; its VMs run until you press Enter (or Ctrl-C)"),
    };
    let job_and_test = dir.parent().and_then(Path::parent).zip(dir.file_name());
    let job_and_test = job_and_test.map(|(job, test)| {
        format!(
            "{} {}",
            shell_quote(&job.display().to_string()),
            shell_quote(&test.to_string_lossy())
        )
    });
    for access in accesses {
        if accesses.len() > 1 {
            let _ = write!(text, "\n VM `{}`:", access.vm);
        }
        match &access.ssh {
            Some(argv) => {
                let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
                let _ = write!(text, "\n  ssh      : {}", line.join(" "));
            }
            None => text.push_str("\n  ssh      : (the guest has no SSH login)"),
        }
        let target = match (&job_and_test, access.vm.as_str()) {
            (Some(job_and_test), "vm") => Some(job_and_test.clone()),
            (Some(job_and_test), vm) => Some(format!("{job_and_test} {}", shell_quote(vm))),
            (None, _) => None,
        };
        if let Some(target) = &target {
            let _ = write!(text, "\n             or: virtest ssh {target}");
            if access.console_socket.is_some() {
                let _ = write!(
                    text,
                    "\n  console  : virtest console {target}   (Ctrl-] leaves it)"
                );
            }
        }
        let _ = write!(
            text,
            "\n  QMP      : {}\n  pid      : {}",
            access.qmp_socket.display(),
            access.pid
        );
    }
    text
}

/// Lines typed on stdin, from a thread of their own (a read of stdin
/// cannot be cancelled); the channel closes at end of input.
fn read_stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_command_pins_the_host_key_and_uses_only_the_key() {
        let mut ssh = SshAccess {
            port: 2222,
            user: "root".into(),
            key: Some("/k/id_ed25519".into()),
            host_key: Some("ssh-ed25519 AAAA".into()),
        };
        let argv = ssh_command(&ssh, Path::new("/t/known_hosts"));
        assert_eq!(
            argv.join(" "),
            "ssh -p 2222 -i /k/id_ed25519 -o IdentitiesOnly=yes \
             -o UserKnownHostsFile=/t/known_hosts -o StrictHostKeyChecking=yes \
             -o LogLevel=ERROR root@127.0.0.1"
        );
        ssh.key = None;
        ssh.host_key = None;
        let argv = ssh_command(&ssh, Path::new("/t/known_hosts")).join(" ");
        assert!(
            argv.contains("UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"),
            "{argv}"
        );
        assert!(!argv.contains("-i "), "{argv}");
    }

    #[test]
    fn each_paused_vm_gets_its_ways_in() {
        let access = |vm: &str| VmAccess {
            vm: vm.into(),
            pid: 7,
            ssh: Some(vec!["ssh".into(), format!("{vm}@127.0.0.1")]),
            qmp_socket: format!("/run/{vm}.sock").into(),
            console_socket: Some("/run/c.sock".into()),
        };
        let dir = Path::new("/r/job-1/test-results/2-t");
        let one = announcement("t", dir, &[access("vm")]);
        assert!(
            one.starts_with("PAUSED     : t failed; its VM runs"),
            "{one}"
        );
        assert!(one.contains("or: virtest ssh /r/job-1 2-t\n"), "{one}");
        let two = announcement("t", dir, &[access("vm"), access("server")]);
        assert!(
            two.starts_with("PAUSED     : t failed; its VMs run"),
            "{two}"
        );
        assert!(
            two.contains("\n VM `server`:\n  ssh      : ssh server@127.0.0.1"),
            "{two}"
        );
        assert!(
            two.contains("or: virtest ssh /r/job-1 2-t server\n"),
            "{two}"
        );
        assert!(
            two.contains("virtest console /r/job-1 2-t server "),
            "{two}"
        );
        assert!(two.contains("QMP      : /run/server.sock"), "{two}");
    }

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
