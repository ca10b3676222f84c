//! Migrations that go wrong: a destination that dies or refuses the
//! stream, a source killed or stopped, a deadline passed, a report that
//! cannot be written. The source keeps running wherever it can, and the
//! error says what happened.

mod common;

use std::time::Duration;

use common::{dirty_memory, error_chain, identity, qemus, running_vm, source_survives};
use virtest_migration::{Error, Migrate, MigrationMode, MigrationSpec};
use virtest_vm::{Vm, VmConfig};

/// Which QEMU of a migrating VM a signal goes to.
enum Side {
    Source,
    Destination,
}

/// Once `vm`'s next migration has a destination and its stream has
/// flowed for 1.5 s, sends `signal` to the QEMU on `side`; the task
/// returns that QEMU's pid.
fn signal_mid_migration(vm: &Vm, side: Side, signal: i32) -> tokio::task::JoinHandle<u32> {
    let source = vm.pid().unwrap();
    let runtime = vm.files().runtime_dir().to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let mut destination = None;
        common::eventually(Duration::from_secs(30), || {
            destination = common::processes_with(&runtime)
                .into_iter()
                .find(|&p| p != source);
            destination.is_some()
        });
        std::thread::sleep(Duration::from_millis(1500));
        let pid = match side {
            Side::Source => source,
            Side::Destination => destination.expect("no destination started"),
        };
        // SAFETY: signalling a QEMU of this test.
        unsafe { libc::kill(pid as i32, signal) };
        pid
    })
}

#[tokio::test]
async fn a_destination_killed_mid_migration_leaves_the_source_running() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    dirty_memory(&vm).await;
    let source = vm.pid().unwrap();
    let killer = signal_mid_migration(&vm, Side::Destination, libc::SIGKILL);
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.max_bandwidth = Some(4 << 20);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let killed = killer.await.unwrap();
    assert!(
        matches!(error, Error::DestinationDied { .. } | Error::Failed { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("source VM keeps running"),
        "{error}"
    );
    assert!(!common::alive(killed));
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn a_destination_binary_that_exits_at_once_is_reported() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let source = vm.pid().unwrap();
    let fake = logs.path().join("qemu-that-fails");
    common::write_script(
        &fake,
        "#!/bin/sh\necho 'fake qemu: refusing to start' >&2\nexit 3\n",
    );
    let mut spec = MigrationSpec::new(MigrationMode::Unix);
    spec.destination_qemu = Some(fake);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    assert!(matches!(error, Error::Destination(_)), "{error:?}");
    let chain = error_chain(&error);
    assert!(chain.contains("fake qemu: refusing to start"), "{chain}");
    source_survives(&vm, source).await;

    // Not a QEMU at all: refused before anything starts, naming it.
    spec.destination_qemu = Some("/bin/true".into());
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let chain = error_chain(&error);
    assert!(chain.contains("/bin/true"), "{chain}");
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn a_migration_past_its_timeout_is_cancelled() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    dirty_memory(&vm).await;
    let source = vm.pid().unwrap();
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.max_bandwidth = Some(1 << 20);
    spec.timeout = Duration::from_secs(3);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let Error::Timeout { last_status, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(last_status, "active");
    let info = vm
        .qmp()
        .unwrap()
        .execute_raw("query-migrate", serde_json::Value::Null)
        .await
        .unwrap();
    assert_eq!(info["status"], "cancelled");
    source_survives(&vm, source).await;
    // And it can still migrate, at the default bandwidth again.
    vm.remote()
        .unwrap()
        .run("kill $(cat /run/dirty.pid)")
        .await
        .unwrap();
    vm.migrate(MigrationMode::Tcp).await.unwrap();
    vm.login_remote().await.unwrap();
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn a_vm_that_is_off_cannot_migrate() {
    let mut vm = Vm::new(VmConfig::new(common::description().clone()));
    let error = vm.migrate(MigrationMode::Tcp).await.unwrap_err();
    assert!(error.to_string().contains("must be running"), "{error}");
}

/// A results disk that fills: the migration completes and the VM keeps
/// working on the destination, but the call fails, saying the report was
/// not written, and leaves no partial file. Needs root (a small tmpfs).
#[tokio::test]
async fn a_report_that_cannot_be_written_fails_the_migration_call() {
    let _slot = common::guest_slots(1);
    let Some(mount) = common::small_disk(4) else {
        return;
    };
    let mut vm = running_vm(mount.path()).await;
    let (boot_id, _) = identity(&vm).await;
    // Fill the disk: whatever is left goes to the filler.
    let filler = mount.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 << 20]);
    let error = vm.migrate(MigrationMode::Tcp).await.unwrap_err();
    let Error::ReportNotSaved { report, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(report.total_time_ms > 0);
    assert!(
        error.to_string().contains("runs on the destination"),
        "{error}"
    );
    assert_eq!(vm.pid(), Some(report.destination_pid));
    std::fs::remove_file(&filler).unwrap();
    vm.login_remote().await.unwrap();
    assert_eq!(identity(&vm).await.0, boot_id);
    let leftovers: Vec<_> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("migration-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    vm.power_off().await.unwrap();
}

/// A source killed mid-migration: the error names QEMU's exit (killed by
/// SIGKILL), not the QMP socket that closed with it.
#[tokio::test]
async fn a_source_killed_mid_migration_is_named() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    dirty_memory(&vm).await;
    let killer = signal_mid_migration(&vm, Side::Source, libc::SIGKILL);
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.max_bandwidth = Some(4 << 20);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    killer.await.unwrap();
    let Error::SourceDied { status } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(status),
        Some(9)
    );
    assert!(
        error.to_string().contains("the source QEMU exited"),
        "{error}"
    );
    assert!(
        qemus(&vm).is_empty(),
        "the destination outlived the failed migration"
    );
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// A source stopped (SIGSTOP) mid-migration: the call ends near its own
/// deadline, not minutes later, and says only what it verified: the
/// source did not answer. Continued, the source runs the guest again.
#[tokio::test]
async fn a_stopped_source_ends_the_migration_at_its_deadline() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    dirty_memory(&vm).await;
    let source = vm.pid().unwrap();
    let stopper = signal_mid_migration(&vm, Side::Source, libc::SIGSTOP);
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.max_bandwidth = Some(4 << 20);
    spec.timeout = Duration::from_secs(10);
    let began = std::time::Instant::now();
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let took = began.elapsed();
    stopper.await.unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(source as i32, libc::SIGCONT) };
    assert!(
        matches!(
            error,
            Error::Timeout {
                source_answers: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not answer"), "{error}");
    assert!(took < Duration::from_secs(25), "the call took {took:?}");
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// A script in `dir` that runs `qemu` with `-m 300` added: a destination
/// whose RAM is not the source's.
fn with_other_ram(dir: &std::path::Path, qemu: &str) -> std::path::PathBuf {
    let wrapper = dir.join("qemu-with-other-ram");
    common::write_script(&wrapper, &format!("#!/bin/sh\nexec {qemu} \"$@\" -m 300\n"));
    wrapper
}

/// A destination that refuses the stream (its RAM is not the source's:
/// a wrapper gives it `-m 300`) exits saying why; the error's first line
/// quotes it, not only the source's broken socket.
#[tokio::test]
async fn a_destination_that_refuses_the_stream_is_quoted() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let source = vm.pid().unwrap();
    let wrapper = with_other_ram(logs.path(), "qemu-system-x86_64");
    let mut spec = MigrationSpec::new(MigrationMode::Unix);
    spec.destination_qemu = Some(wrapper);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let first_line = error.to_string();
    let first_line = first_line.lines().next().unwrap();
    assert!(first_line.contains("pc.ram"), "{error:?}");
    assert!(
        first_line.contains("source VM keeps running"),
        "{first_line}"
    );
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// A destination that stays up after refusing the stream (QEMU 10.0
/// takes `exit-on-error` off) is asked why: the error quotes its log and
/// its `error-desc`, and the destination is stopped, the source running.
#[tokio::test]
async fn a_destination_that_stays_up_after_refusing_is_asked_why() {
    let qemu_10 = common::qemu_build("10.0");
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let source = vm.pid().unwrap();
    let wrapper = with_other_ram(logs.path(), &qemu_10.to_string_lossy());
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.destination_qemu = Some(wrapper);
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let Error::DestinationFailed {
        reason, error_desc, ..
    } = &error
    else {
        panic!("not the destination's failure: {error:?}");
    };
    assert!(reason.contains("pc.ram"), "{error}");
    assert!(!error_desc.is_empty(), "{error}");
    let text = error.to_string();
    assert!(text.contains("source VM keeps running"), "{text}");
    assert!(text.contains("its QMP said: "), "{text}");
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// QEMU 7.2 cannot migrate to a file: its own schema says so before
/// anything is written, and the source keeps running.
#[tokio::test]
async fn a_file_migration_on_a_qemu_without_it_is_refused() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let source = vm.pid().unwrap();
    let error = vm.migrate(MigrationMode::File).await.unwrap_err();
    let Error::Unsupported { side, version, .. } = &error else {
        panic!("not refused as unsupported: {error:?}");
    };
    assert_eq!(*side, "source", "{error}");
    assert!(version.starts_with("7.2."), "{error}");
    assert!(
        error.to_string().contains("`file:`, QEMU 8.2 on"),
        "{error}"
    );
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// A capability the QEMU does not have is refused before anything
/// starts, with the ones it has; the source keeps running.
#[tokio::test]
async fn an_unknown_capability_lists_the_valid_ones() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let source = vm.pid().unwrap();
    let mut spec = MigrationSpec::new(MigrationMode::Unix);
    spec.extra_capabilities = vec!["nosuch".into()];
    let error = vm.migrate_with(&spec).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("unknown migration capability `nosuch`"),
        "{text}"
    );
    assert!(
        text.contains("auto-converge") && text.contains("validate-uuid"),
        "{text}"
    );
    source_survives(&vm, source).await;
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn a_vm_with_a_shared_folder_is_refused_before_anything_starts() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let folder = tempfile::tempdir().unwrap();
    let mut config = common::config(logs.path());
    config.boot = virtest_vm::BootMode::Snapshot;
    let mut vm = Vm::new(config);
    let share = vm.share(folder.path(), "data").unwrap();
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let mount = format!("mkdir -p /mnt/data && {}", share.mount_command("/mnt/data"));
    vm.remote().unwrap().run(&mount).await.unwrap();
    let source = vm.pid().unwrap();
    let before = identity(&vm).await.0;

    for mode in [MigrationMode::Tcp, MigrationMode::Unix] {
        let error = vm.migrate(mode).await.unwrap_err();
        assert!(matches!(error, Error::NotMigratable { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("`data`"), "{text}");
        assert!(text.contains(&*folder.path().to_string_lossy()), "{text}");
        assert!(text.contains("virtio-9p"), "{text}");
        assert!(text.contains("Nothing was started"), "{text}");
        source_survives(&vm, source).await;
    }
    // The share still works, in the same boot.
    std::fs::write(folder.path().join("after"), "still shared\n").unwrap();
    let read = vm
        .remote()
        .unwrap()
        .run("cat /mnt/data/after")
        .await
        .unwrap();
    assert_eq!(read.stdout, "still shared\n");
    assert_eq!(identity(&vm).await.0, before);
    vm.power_off().await.unwrap();
}
