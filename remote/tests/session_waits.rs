//! The waits of NixOS's test driver, on both kinds of session:
//! `wait_until_succeeds`, `wait_until_fails`, `fail`,
//! `wait_for_open_port` on the default guest (SSH and the serial
//! console), `wait_for_unit` on the Debian guest; each timeout names
//! what it waited for and the last try's output.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use virtest::prelude::*;
use virtest::remote::Error;
use virtest::vm::BootMode;

async fn running(description: &virtest::guest::GuestDescription, logs: &std::path::Path) -> Vm {
    let mut config = VmConfig::new(description.clone());
    config.log_dir = Some(logs.to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm
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
    let logs = common::test_logs();
    let mut vm = running(common::description(), logs.path()).await;
    {
        let ssh = vm.remote().unwrap();
        waits(ssh, 8081, async |command: &str| {
            ssh.run(&format!("( {command} ) >/dev/null 2>&1 &"))
                .await
                .unwrap();
        })
        .await;
    }
    let serial = vm.serial().await.unwrap();
    waits(serial, 8082, async |command: &str| {
        serial
            .run(&format!("( {command} ) >/dev/null 2>&1 &"))
            .await
            .unwrap();
    })
    .await;
    vm.power_off_within(Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_unit_on_a_systemd_guest() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let vm = running(common::debian(), logs.path()).await;
    let ssh = vm.remote().unwrap();
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
