//! The guest agent through `vm.agent()`, on the default guest and the
//! Debian guest (both run qemu-ga): a program's output and status, a file
//! round trip checked over SSH, a filesystem freeze and thaw (Debian: the
//! default guest's root is an initramfs, which does not freeze), and an
//! unknown command's error, all again after migrations; a guest whose
//! agent is not running, a clear error once the deadline passes.

use virtest_testkit as common;

use std::time::{Duration, Instant};

use virtest_guest::description::Ready;
use virtest_migration::{Migrate, MigrationMode};
use virtest_qmp::Error as QmpError;
use virtest_vm::{BootMode, Error, PowerOff, Vm, VmConfig};

/// What a command through the agent may take.
const EXEC: Duration = Duration::from_secs(30);

/// Everything the agent does, checked; `round` tells the runs apart.
async fn exercise_the_agent(vm: &mut Vm, round: &str, freezes: bool) {
    let agent = vm.agent().await.unwrap();
    agent.execute(qapi::qga::guest_ping {}).await.unwrap();
    let info = agent.execute(qapi::qga::guest_info {}).await.unwrap();
    assert!(info.version.starts_with("7."), "{}", info.version);
    let os = agent.execute(qapi::qga::guest_get_osinfo {}).await.unwrap();
    assert_eq!(
        os.kernel_release.as_deref().map(|r| r.ends_with("-amd64")),
        Some(true),
        "{os:?}"
    );
    let interfaces = agent
        .execute(qapi::qga::guest_network_get_interfaces {})
        .await
        .unwrap();
    let addresses: Vec<String> = interfaces
        .iter()
        .flat_map(|i| i.ip_addresses.iter().flatten())
        .map(|a| a.ip_address.clone())
        .collect();
    assert!(
        addresses.iter().any(|a| a == "10.0.2.15"),
        "{round}: {addresses:?}"
    );

    let done = agent
        .exec(&["/bin/sh", "-c", "uname -s; echo oops >&2; exit 3"], EXEC)
        .await
        .unwrap();
    assert_eq!(
        (done.exit_code, &done.stdout[..], &done.stderr[..]),
        (Some(3), &b"Linux\n"[..], &b"oops\n"[..]),
        "{round}"
    );

    // Written through the agent, checked through SSH, read back.
    let content: Vec<u8> = format!("{round}\n")
        .into_bytes()
        .into_iter()
        .chain((0..150_000u32).map(|i| (i * 13 % 251) as u8))
        .collect();
    let path = "/tmp/through-the-agent";
    agent.write_file(path, &content).await.unwrap();
    assert_eq!(agent.read_file(path).await.unwrap(), content, "{round}");
    let session = vm.login_remote().await.unwrap();
    let head = session
        .run(&format!("head -n 1 {path}; wc -c < {path}"))
        .await
        .unwrap();
    assert_eq!(
        head.stdout,
        format!("{round}\n{}\n", content.len()),
        "{round}: the guest's view"
    );

    let agent = vm.agent().await.unwrap();
    if freezes {
        freeze_and_thaw(agent, round).await;
    }
    let unknown = agent
        .execute_raw_within("guest-no-such-command", serde_json::Value::Null, EXEC)
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, QmpError::AgentCommand { class, .. } if class == "CommandNotFound"),
        "{round}: {unknown}"
    );
}

/// Freezes the guest's filesystems, checks, thaws them.
async fn freeze_and_thaw(agent: &virtest_qmp::Qga, round: &str) {
    let frozen = agent
        .execute(qapi::qga::guest_fsfreeze_freeze {})
        .await
        .unwrap();
    assert!(frozen >= 1, "{round}: froze {frozen} filesystems");
    let status = agent
        .execute(qapi::qga::guest_fsfreeze_status {})
        .await
        .unwrap();
    assert_eq!(status, qapi::qga::GuestFsfreezeStatus::frozen, "{round}");
    let thawed = agent
        .execute(qapi::qga::guest_fsfreeze_thaw {})
        .await
        .unwrap();
    assert_eq!(thawed, frozen, "{round}");
    // Writable again.
    agent.write_file("/root/after-thaw", b"ok").await.unwrap();
}

/// A VM of `config` whose logs go to `logs`.
fn logging_to(mut config: VmConfig, logs: &std::path::Path) -> Vm {
    config.log_dir = Some(logs.to_path_buf());
    Vm::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_guests_agent_works_before_and_after_migrations() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut config = VmConfig::new(common::debian().clone());
    config.boot = BootMode::Snapshot;
    let mut vm = logging_to(config, logs.path());
    vm.power_on().await.unwrap();
    exercise_the_agent(&mut vm, "before", true).await;
    for mode in [MigrationMode::Tcp, MigrationMode::Fd] {
        vm.migrate(mode).await.unwrap();
        exercise_the_agent(&mut vm, mode.as_str(), true).await;
    }
    vm.power_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_guests_agent_works_before_and_after_migrations() {
    let _slot = common::guest_slots(1);
    common::guest();
    let logs = common::test_logs();
    let mut vm = logging_to(VmConfig::default_guest().unwrap(), logs.path());
    let off = vm.agent().await.unwrap_err();
    assert!(matches!(off, Error::Off { .. }), "{off}");
    vm.power_on().await.unwrap();
    exercise_the_agent(&mut vm, "before", false).await;
    for mode in [MigrationMode::Unix, MigrationMode::Exec] {
        vm.migrate(mode).await.unwrap();
        exercise_the_agent(&mut vm, mode.as_str(), false).await;
    }
    // Asked through the agent, the guest powers off and QEMU exits.
    vm.agent()
        .await
        .unwrap()
        .shutdown("powerdown")
        .await
        .unwrap();
    let exited = vm
        .instance()
        .unwrap()
        .wait_exit(Duration::from_secs(60))
        .await;
    assert!(exited.is_some(), "the guest did not power off");
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::ByGuest);
}

/// With its agent stopped, the channel is there and nobody answers: the
/// error says what the guest needs. Without the channel, it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_without_an_agent_is_a_clear_timeout() {
    let _slot = common::guest_slots(1);
    common::guest();
    let logs = common::test_logs();
    let mut vm = logging_to(VmConfig::default_guest().unwrap(), logs.path());
    vm.power_on().await.unwrap();
    vm.login_remote()
        .await
        .unwrap()
        .run("kill $(cat /run/qemu-ga.pid)")
        .await
        .unwrap();
    let start = Instant::now();
    let error = vm.within(Duration::from_secs(3)).agent().await.unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&error, Error::Agent { reason, .. } if reason.contains("qemu-ga")),
        "{error}"
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    vm.within(Duration::ZERO).power_off().await.unwrap();

    let mut config = VmConfig::default_guest().unwrap();
    config.agent = false;
    let mut vm = logging_to(config, &logs.path().join("no-channel"));
    vm.power_on().await.unwrap();
    let error = vm.agent().await.unwrap_err();
    assert!(
        error.to_string().contains("no guest agent channel"),
        "{error}"
    );
    vm.within(Duration::ZERO).power_off().await.unwrap();
}

/// A guest whose ready signal is its agent: `wait_ready` returns once
/// the agent answers (it is then connected), and logins work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answering_can_be_the_ready_signal() {
    let _slot = common::guest_slots(1);
    common::guest();
    let logs = common::test_logs();
    let mut config = VmConfig::default_guest().unwrap();
    config.guest.ready = Ready::Agent;
    let mut vm = logging_to(config, logs.path());
    vm.power_on().await.unwrap();
    vm.within(Duration::from_secs(60))
        .wait_ready()
        .await
        .unwrap();
    // Connected by wait_ready: no time is needed.
    let agent = vm.within(Duration::from_millis(1)).agent().await.unwrap();
    agent.execute(qapi::qga::guest_ping {}).await.unwrap();
    vm.login_remote().await.unwrap();
    vm.migrate(MigrationMode::Tcp).await.unwrap();
    vm.agent()
        .await
        .unwrap()
        .execute(qapi::qga::guest_ping {})
        .await
        .unwrap();
    vm.within(Duration::ZERO).power_off().await.unwrap();
}
