//! virtest-remote's serial-console session against the default guest.

use virtest_testkit as common;

use std::time::{Duration, Instant};

use common::{Qemu, QemuOptions};
use virtest_remote::{Error, SerialSession};

#[tokio::test]
async fn logs_in_on_the_console_and_runs_commands_with_their_status() {
    let m = common::guest();
    let mut vm = Qemu::start(
        common::description(),
        QemuOptions {
            reboot_allowed: false,
            console_socket: true,
        },
    );
    vm.wait_ready(1, Duration::from_secs(30));
    let socket = vm.dir.path().join("console.sock");
    let console = SerialSession::connect(
        &socket,
        &m.credentials.user,
        Some(&m.credentials.password),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let r = console.run("echo hello; echo second line").await.unwrap();
    assert_eq!(r.stdout, "hello\nsecond line\n");
    assert_eq!(
        console.run("printf no-newline").await.unwrap().stdout,
        "no-newline"
    );
    let err = console.run("echo failing; exit 3").await.unwrap_err();
    assert!(
        matches!(&err, Error::Exit(r) if r.exit_status == 3 && r.stdout == "failing\n"),
        "{err}"
    );
    // The shell survives a command's exit, and commands see the guest.
    assert_eq!(
        console.run("cat /etc/hostname").await.unwrap().stdout,
        "virtest\n"
    );
    let slow = console
        .run_unchecked("sleep 6", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(slow, Error::Timeout { .. }), "{slow}");
    // A later session on the same console finds the shell already there.
    drop(console);
    let again = SerialSession::connect(&socket, "root", None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.run("echo again").await.unwrap().stdout, "again\n");
}

/// A console that asks for a login, and no password to give it.
#[tokio::test]
async fn a_login_prompt_without_a_password_is_a_clear_error() {
    let m = common::guest();
    let mut vm = Qemu::start(
        common::description(),
        QemuOptions {
            reboot_allowed: false,
            console_socket: true,
        },
    );
    vm.wait_ready(1, Duration::from_secs(30));
    let socket = vm.dir.path().join("console.sock");
    let err = SerialSession::connect(&socket, &m.credentials.user, None, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no password was given"), "{err}");
}

#[tokio::test]
async fn a_console_with_no_shell_is_a_clear_error_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"BIOS boot menu, press F12\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let start = Instant::now();
    let err = SerialSession::connect(&socket, "root", Some("x"), Duration::from_secs(2))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("a login or shell prompt") && text.contains("BIOS boot menu"),
        "{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn test_code_can_take_either_session() {
    use virtest_remote::{Auth, Session, SshConfig, SshSession};
    async fn hostname(session: &impl Session) -> String {
        session.run("hostname").await.unwrap().stdout
    }
    let m = common::guest();
    let mut vm = Qemu::start(
        common::description(),
        QemuOptions {
            reboot_allowed: false,
            console_socket: true,
        },
    );
    vm.wait_ready(1, Duration::from_secs(30));
    let serial = SerialSession::connect(
        &vm.dir.path().join("console.sock"),
        &m.credentials.user,
        Some(&m.credentials.password),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let ssh_config = SshConfig {
        addr: ([127, 0, 0, 1], vm.port).into(),
        user: m.credentials.user.clone(),
        auth: Auth::KeyFile(m.private_key_path()),
        known_host_keys: vec![m.host_key.public.clone()],
    };
    let ssh = SshSession::wait_for_login(&ssh_config, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(hostname(&serial).await, "virtest\n");
    assert_eq!(hostname(&ssh).await, "virtest\n");
}
