//! The waits of NixOS's test driver, on both kinds of session:
//! `wait_until_succeeds`, `wait_until_fails`, `fail`,
//! `wait_for_open_port` on the default guest (SSH and the serial
//! console), `wait_for_unit` on the Debian guest; each timeout names
//! what it waited for and the last try's output.

use std::time::{Duration, Instant};

use virtest_guest::GuestDescription;
use virtest_remote::{Auth, Error, SerialSession, Session, SshConfig, SshSession};
use virtest_testkit::{self as common, Qemu, QemuOptions};

/// Boots `guest` (its console served on a socket) and logs in over SSH
/// with its key, else its password.
async fn running(guest: &GuestDescription) -> (Qemu, SshSession) {
    let options = QemuOptions {
        console_socket: true,
        ..QemuOptions::default()
    };
    let mut qemu = Qemu::start(guest, options);
    qemu.wait_ready(1, guest.login.timeout);
    let login = &guest.login;
    let auth = match (&qemu.login_key, &login.password) {
        (Some(key), _) => Auth::KeyFile(key.clone()),
        (None, Some(password)) => Auth::Password(password.clone()),
        (None, None) => panic!("{} has no credentials", guest.name),
    };
    let config = SshConfig {
        addr: ([127, 0, 0, 1], qemu.port).into(),
        user: login.user.clone(),
        auth,
        known_host_keys: login.host_key.iter().cloned().collect(),
    };
    let ssh = SshSession::wait_for_login(&config, Duration::from_secs(180))
        .await
        .unwrap();
    (qemu, ssh)
}

/// Every wait on one session; `later` starts a command in the guest's
/// background; a server is started on `port`.
async fn waits(session: &impl Session, port: u16, later: impl AsyncFn(&str)) {
    later("sleep 1; echo up > /tmp/flag").await;
    let found = session
        .wait_until_succeeds("cat /tmp/flag", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(found.stdout, "up\n");
    later("sleep 1; rm /tmp/flag").await;
    session
        .wait_until_fails("test -e /tmp/flag", Duration::from_secs(30))
        .await
        .unwrap();

    let failed = session.fail("echo no >&2; exit 4").await.unwrap();
    assert_eq!(failed.exit_status, 4);
    let error = session.fail("echo fine").await.unwrap_err();
    assert!(matches!(error, Error::Succeeded(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("`echo fine` was expected to fail"),
        "{error}"
    );

    later(&format!("sleep 1; busybox httpd -p {port} -h /tmp")).await;
    session
        .wait_for_open_port(port, Duration::from_secs(30))
        .await
        .unwrap();

    let start = Instant::now();
    let error = session
        .wait_until_succeeds("echo still-waiting; false", Duration::from_secs(3))
        .await
        .unwrap_err();
    let took = start.elapsed();
    let text = error.to_string();
    assert!(
        text.contains("`echo still-waiting; false` succeeding did not happen within")
            && text.contains("still-waiting")
            && text.contains("status 1"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let error = session
        .wait_for_open_port(9, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("TCP port 9 opening in the guest"),
        "{error}"
    );
    let error = session
        .wait_for_unit("sshd.service", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("the guest has no systemctl"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_over_ssh_and_the_serial_console() {
    let _slot = common::guest_slots(1);
    let guest = common::description();
    let (qemu, ssh) = running(guest).await;
    waits(&ssh, 8081, async |command: &str| {
        ssh.run(&format!("( {command} ) >/dev/null 2>&1 &"))
            .await
            .unwrap();
    })
    .await;
    let serial = SerialSession::connect(
        &qemu.dir.path().join("console.sock"),
        &guest.login.user,
        guest.login.password.as_deref(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    waits(&serial, 8082, async |command: &str| {
        serial
            .run(&format!("( {command} ) >/dev/null 2>&1 &"))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_unit_on_a_systemd_guest() {
    let _slot = common::guest_slots(1);
    let (_qemu, ssh) = running(common::debian()).await;
    ssh.wait_for_unit("ssh.service", Duration::from_secs(60))
        .await
        .unwrap();
    ssh.run("systemd-run --unit=virtest-broken --property=Type=oneshot false || true")
        .await
        .unwrap();
    let error = ssh
        .wait_for_unit("virtest-broken.service", Duration::from_secs(60))
        .await
        .unwrap_err();
    match &error {
        Error::UnitFailed { unit, status } => {
            assert_eq!(unit, "virtest-broken.service");
            assert!(status.contains("virtest-broken.service"), "{status}");
        }
        other => panic!("{other}"),
    }
    let error = ssh
        .wait_for_unit("virtest-never.service", Duration::from_secs(2))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("systemd unit `virtest-never.service` becoming active did not happen")
            && text.contains("inactive"),
        "{text}"
    );
}
