//! The default guest, booted with plain `std::process::Command` under
//! TCG: it reaches its ready line, serves SSH on the forwarded port with
//! the host key bootstrap recorded, accepts the recorded key and password,
//! and powers off or reboots when asked.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::Qemu;
use virtest::qemu_cmdline::binary::{self, BinaryKind};

/// Runs commands in a booted guest with OpenSSH's client.
trait OpenSsh {
    fn ssh(&self, auth: Auth, command: &str) -> Output;
}

impl OpenSsh for Qemu {
    /// Runs a command in the guest with OpenSSH's client.
    fn ssh(&self, auth: Auth, command: &str) -> Output {
        let m = common::guest();
        let askpass = self.dir.path().join("askpass");
        let mut cmd = Command::new("ssh");
        cmd.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-o", "ConnectTimeout=10", "-p", &self.port.to_string()]);
        match auth {
            Auth::Key => {
                cmd.args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "PasswordAuthentication=no",
                    "-i",
                ])
                .arg(m.private_key_path());
            }
            Auth::Password(password) => {
                std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
                cmd.args([
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password",
                ])
                .env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force");
            }
        }
        cmd.arg(format!("{}@127.0.0.1", m.credentials.user))
            .arg(command)
            .stdin(Stdio::null());
        cmd.output()
            .expect("OpenSSH's client is installed (see .ci/run)")
    }
}

enum Auth<'a> {
    Key,
    Password(&'a str),
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ssh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn boots_to_the_ready_line_and_serves_ssh_with_the_recorded_host_key() {
    let m = common::guest();
    let mut vm = Qemu::boot(false);
    let took = vm.wait_ready(1, Duration::from_secs(20));
    eprintln!("ready line after {took:?}");

    let mut stream = TcpStream::connect(("127.0.0.1", vm.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-", "the forwarded port speaks SSH");
    stream.write_all(b"SSH-2.0-virtest-test\r\n").unwrap();
    drop(stream);

    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &vm.port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout);
    let recorded_key = m.host_key.public.split_whitespace().nth(1).unwrap();
    assert!(
        scanned.contains(recorded_key),
        "guest offered {scanned:?}, manifest has {recorded_key}"
    );
}

#[test]
fn key_and_password_logins_work_and_shutdown_powers_off() {
    let m = common::guest();
    let mut vm = Qemu::boot(false);
    vm.wait_ready(1, Duration::from_secs(20));
    let boot_id = stdout(&vm.ssh(Auth::Key, "cat /proc/sys/kernel/random/boot_id"));
    assert_eq!(boot_id.len(), 36, "{boot_id}");
    let who = stdout(&vm.ssh(
        Auth::Password(&m.credentials.password),
        "id -u; uname -r; lsmod | grep -c virtio",
    ));
    let lines: Vec<&str> = who.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(Some(lines[1]), m.kernel_release.as_deref());
    assert!(
        lines[2].parse::<u32>().unwrap() >= 5,
        "virtio modules loaded: {}",
        lines[2]
    );

    let wrong = vm.ssh(Auth::Password("not-the-password"), "true");
    assert!(!wrong.status.success(), "a wrong password is refused");

    let out = vm.ssh(Auth::Key, "shutdown -h now");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = vm.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "QEMU exits cleanly when the guest powers off: {status}"
    );
}

#[test]
fn reboot_brings_the_guest_back_with_a_new_boot_id() {
    let mut vm = Qemu::boot(true);
    vm.wait_ready(1, Duration::from_secs(20));
    let first = stdout(&vm.ssh(Auth::Key, "cat /proc/sys/kernel/random/boot_id"));
    let _ = vm.ssh(Auth::Key, "reboot");
    vm.wait_ready(2, Duration::from_secs(40));
    let second = stdout(&vm.ssh(Auth::Key, "cat /proc/sys/kernel/random/boot_id"));
    assert_ne!(first, second, "the guest rebooted");
}

#[test]
fn missing_qemu_is_an_error_naming_the_package() {
    let err = binary::find_in(
        BinaryKind::System,
        virtest::guest::description::Arch::X86_64,
        None,
        &|_| None,
        std::ffi::OsStr::new("/nonexistent"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("apt-get install qemu-system-x86 qemu-utils"),
        "{err}"
    );
}

#[test]
fn the_cli_reports_a_missing_qemu_and_what_to_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtest"))
        .arg("doctor")
        .env("PATH", "/nonexistent")
        .env_remove("QEMU")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing  qemu-system-x86_64"), "{text}");
    assert!(
        text.contains("apt-get install -y qemu-system-x86 qemu-utils"),
        "{text}"
    );
}
