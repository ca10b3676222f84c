//! Live migration of the default guest over every transport, with the
//! capabilities; what goes wrong is in `failures.rs`.

mod common;

use common::{config, dirty_memory, identity, qemus, running_vm};

use std::time::Duration;

use virtest_migration::{Migrate, MigrationMode, MigrationReport, MigrationSpec};
use virtest_vm::Vm;

fn check_report(report: &MigrationReport, mode: MigrationMode) {
    assert_eq!(report.mode, mode);
    assert!(report.total_time_ms > 0, "{report:?}");
    assert!(
        report.ram.transferred > 0 && report.ram.total > 0,
        "{report:?}"
    );
    assert!(report.wall_ms >= report.total_time_ms as f64);
    let statuses: Vec<&str> = report.timeline.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"setup"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
}

/// Migrates over `mode` `times` times; the guest stays the same one and
/// each destination takes over QMP, the console, the port and login.
async fn migrate_over(mode: MigrationMode, times: usize) {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let (boot_id, mut uptime) = identity(&vm).await;
    for round in 1..=times {
        let source = vm.pid().unwrap();
        let port = vm.ssh_access().map(|a| a.port);
        let report = vm.migrate(mode).await.unwrap();
        check_report(&report, mode);
        assert_eq!(report.source_pid, source);
        assert_eq!(Some(report.destination_pid), vm.pid());
        assert!(!common::alive(source), "the source is reaped");
        assert_ne!(
            vm.ssh_access().map(|a| a.port),
            port,
            "the destination forwards its own port"
        );
        assert_eq!(qemus(&vm), vec![report.destination_pid]);
        vm.login_remote().await.unwrap();
        let (id, now) = identity(&vm).await;
        assert_eq!(id, boot_id, "round {round}: another guest answered");
        assert!(
            now > uptime,
            "round {round}: uptime went from {uptime} to {now}"
        );
        uptime = now;
        let saved = logs.path().join(format!("migration-{round}.json"));
        let saved: MigrationReport =
            serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
        assert_eq!(
            (
                saved.total_time_ms,
                saved.downtime_ms,
                saved.ram,
                saved.timeline.len()
            ),
            (
                report.total_time_ms,
                report.downtime_ms,
                report.ram.clone(),
                report.timeline.len()
            )
        );
    }
    // The console of the destination still reaches console.log.
    let mark = vm.console().unwrap().cursor();
    vm.remote()
        .unwrap()
        .run("echo console-after-migration > /dev/ttyS0")
        .await
        .unwrap();
    vm.within(Duration::from_secs(10))
        .wait_for_console_from(mark, "console-after-migration")
        .await
        .unwrap();
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    vm.power_off().await.unwrap();
    assert!(qemus(&vm).is_empty());
}

#[tokio::test]
async fn tcp_four_times_back_to_back() {
    migrate_over(MigrationMode::Tcp, 4).await;
}

#[tokio::test]
async fn unix_socket() {
    migrate_over(MigrationMode::Unix, 2).await;
}

#[tokio::test]
async fn exec_pipes() {
    migrate_over(MigrationMode::Exec, 2).await;
}

#[tokio::test]
async fn fd_passed_over_qmp() {
    migrate_over(MigrationMode::Fd, 2).await;
}

#[test]
fn an_unknown_mode_lists_the_valid_ones() {
    let error = "rdma".parse::<MigrationMode>().unwrap_err();
    assert!(error.to_string().contains("tcp, unix, exec, fd"));
}

/// Migrates a dirtying guest with `spec` (a tight bandwidth); the
/// migration must complete. With `survives`, the guest must also come
/// through it with its workload still running.
async fn converges_while_dirtying(mut spec: MigrationSpec, survives: bool) -> MigrationReport {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    dirty_memory(&vm).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    spec.max_bandwidth = Some(16 << 20);
    spec.timeout = Duration::from_secs(120);
    let report = vm.migrate_with(&spec).await.unwrap();
    check_report(&report, spec.mode);
    if survives {
        vm.login_remote().await.unwrap();
        vm.remote()
            .unwrap()
            .run("kill -0 $(cat /run/dirty.pid)")
            .await
            .unwrap();
    }
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
    report
}

#[tokio::test]
async fn a_dirtying_guest_converges_with_auto_converge() {
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.auto_converge = true;
    let report = converges_while_dirtying(spec, false).await;
    assert!(report.capabilities.contains(&"auto-converge".to_string()));
    assert!(report.ram.dirty_sync_count >= 2, "{report:?}");
    assert!(
        report.max_cpu_throttle_percentage > 0,
        "auto-converge never throttled: {report:?}"
    );
}

/// What auto-converge must also give: the guest alive afterwards. Under
/// TCG, QEMU 7.2 lost writes of the throttled guest (6 of 8 runs oopsed
/// or locked up, 2 of 3 again when the guest RAM is not padded as
/// `virtest_qemu_cmdline::quirks` says); padded, 4 of 4 came through.
#[tokio::test]
async fn a_guest_throttled_by_auto_converge_survives() {
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.auto_converge = true;
    converges_while_dirtying(spec, true).await;
}

#[tokio::test]
async fn a_dirtying_guest_without_throttling_survives_a_long_downtime() {
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.downtime_limit_ms = Some(5000);
    let report = converges_while_dirtying(spec, true).await;
    assert_eq!(report.max_cpu_throttle_percentage, 0);
}

#[tokio::test]
async fn a_dirtying_guest_converges_with_postcopy() {
    let mut spec = MigrationSpec::new(MigrationMode::Unix);
    spec.postcopy = true;
    let report = converges_while_dirtying(spec, true).await;
    assert!(
        report
            .timeline
            .iter()
            .any(|s| s.status == "postcopy-active"),
        "{report:?}"
    );
}

/// Capabilities by QEMU's names, beyond those the spec has fields for,
/// are on for the migration and in its report.
#[tokio::test]
async fn extra_capabilities_by_name_are_on() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let mut spec = MigrationSpec::new(MigrationMode::Tcp);
    spec.extra_capabilities = vec!["validate-uuid".into(), "zero-blocks".into()];
    let report = vm.migrate_with(&spec).await.unwrap();
    check_report(&report, MigrationMode::Tcp);
    for name in ["validate-uuid", "zero-blocks"] {
        assert!(
            report.capabilities.contains(&name.to_string()),
            "{report:?}"
        );
    }
    let caps = vm
        .qmp()
        .unwrap()
        .execute_raw("query-migrate-capabilities", serde_json::Value::Null)
        .await
        .unwrap();
    let on = |name: &str| {
        caps.as_array()
            .unwrap()
            .iter()
            .any(|c| c["capability"] == name && c["state"] == true)
    };
    assert!(on("validate-uuid"), "the destination has it on: {caps}");
    vm.login_remote().await.unwrap();
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn multifd_and_xbzrle_complete() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut vm = running_vm(logs.path()).await;
    let mut multifd = MigrationSpec::new(MigrationMode::Tcp);
    multifd.multifd_channels = Some(2);
    let report = vm.migrate_with(&multifd).await.unwrap();
    check_report(&report, MigrationMode::Tcp);
    assert!(report.capabilities.contains(&"multifd".to_string()));
    let mut xbzrle = MigrationSpec::new(MigrationMode::Unix);
    xbzrle.xbzrle_cache_bytes = Some(32 << 20);
    let report = vm.migrate_with(&xbzrle).await.unwrap();
    check_report(&report, MigrationMode::Unix);
    vm.login_remote().await.unwrap();
    vm.remote().unwrap().run("true").await.unwrap();
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

/// A guest port forwarded besides SSH: QEMU chooses the host port and
/// the VM says which; after a migration the destination's QEMU forwards
/// it on a port of its own, and the guest's server answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_guest_port_follows_the_vm_across_a_migration() {
    let _slot = common::guest_slots(2);
    let logs = common::test_logs();
    let mut config = config(logs.path());
    config.forward_ports = vec![8080];
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    vm.remote()
        .unwrap()
        .run(
            "mkdir -p /tmp/www && cat /proc/sys/kernel/random/boot_id > /tmp/www/id \
             && busybox httpd -p 8080 -h /tmp/www",
        )
        .await
        .unwrap();
    let (boot_id, _) = identity(&vm).await;
    let first = vm.forwarded_port(8080).unwrap();
    assert_ne!(Some(first), vm.ssh_access().map(|a| a.port));
    assert_eq!(http_get(first, "/id").await, boot_id);

    vm.migrate(MigrationMode::Unix).await.unwrap();
    let second = vm.forwarded_port(8080).unwrap();
    assert_ne!(second, first, "the destination forwards its own port");
    assert_eq!(http_get(second, "/id").await, boot_id);
    assert_eq!(vm.forwarded_port(9999), None);
    vm.power_off().await.unwrap();
}

/// The body of an HTTP/1.0 GET to 127.0.0.1:`port`, trimmed.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the guest's server answers within 30 s")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.trim().to_string()
}

/// Guests migrated while their kernel boots, at several points of the
/// boot, all come up. (Under TCG, QEMU 7.2 lost about one in four until
/// guest RAM was padded as `virtest_qemu_cmdline::quirks` says: 1 of 8
/// here without it, 0 of 24 with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_migrated_mid_boot_come_up() {
    let _slot = common::guest_slots(2);
    for delay_ms in [0, 300, 600, 900] {
        let logs = common::test_logs();
        let mut vm = Vm::new(config(logs.path()));
        vm.power_on().await.unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let mut spec = MigrationSpec::new(MigrationMode::Unix);
        spec.wait_for_boot = false;
        vm.migrate_with(&spec).await.unwrap();
        vm.within(Duration::from_secs(60))
            .login_remote()
            .await
            .unwrap_or_else(|e| panic!("migrated {delay_ms} ms into its boot: {e}"));
        vm.within(Duration::ZERO).power_off().await.unwrap();
    }
}

/// An HMP monitor on `socket` answers with its banner.
fn monitor_answers(socket: &std::path::Path) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains("(qemu)") {
            return true;
        }
    }
    false
}

/// Host endpoints the user put in `extra_args` (a monitor socket, a
/// second NIC forwarding a fixed port) do not collide with the source's
/// on the destination: it gets a copy of the socket named after its
/// generation, and a forward on a port QEMU chose, which the VM tells.
#[tokio::test]
async fn a_users_own_host_endpoints_are_fresh_on_the_destination() {
    use virtest_qemu_cmdline::{Arg, Props, PropsOption};
    let _slot = common::guest_slots(1);
    common::guest();
    let logs = common::test_logs();
    let sockets = tempfile::tempdir().unwrap();
    let monitor = sockets.path().join("monitor.sock");
    let port = common::free_port();
    let mut config = config(logs.path());
    config.extra_args = vec![
        Arg::Props(
            PropsOption::Chardev,
            Props::parse(
                &format!(
                    "socket,id=usermon,path={},server=on,wait=off",
                    monitor.display()
                ),
                true,
            ),
        ),
        Arg::Props(
            PropsOption::Mon,
            Props::parse("chardev=usermon,mode=readline", false),
        ),
        Arg::Props(
            PropsOption::Netdev,
            Props::parse(
                &format!("user,id=extra,hostfwd=tcp:127.0.0.1:{port}-:2222"),
                true,
            ),
        ),
        Arg::Props(
            PropsOption::Device,
            Props::parse("virtio-net-pci,netdev=extra", true),
        ),
    ];
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(monitor_answers(&monitor));
    assert_eq!(vm.forwarded_port(2222), Some(port));
    for (generation, mode) in [(2, MigrationMode::Unix), (3, MigrationMode::Tcp)] {
        vm.migrate(mode).await.unwrap();
        let copy = sockets.path().join(format!("monitor.g{generation}.sock"));
        assert!(monitor_answers(&copy), "{mode}: {}", copy.display());
        let moved = vm.forwarded_port(2222).unwrap();
        assert_ne!(moved, 0, "{mode}");
    }
    vm.login_remote().await.unwrap();
    vm.within(Duration::ZERO).power_off().await.unwrap();
}
