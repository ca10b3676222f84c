//! The command-line clone for an incoming migration, checked by QEMU
//! itself: the default guest migrates into it (QEMU refuses migration
//! state from a machine whose devices differ), through virtest-qmp.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use virtest::qemu_cmdline::accel::Chosen;
use virtest::qemu_cmdline::binary::{self, BinaryKind};
use virtest::qemu_cmdline::{Endpoint, QemuCmdline};
use virtest::qmp::{Options, Qmp};
use virtest::vm::{ConsoleOutput, GuestLaunch};

fn spawn(cmd: &QemuCmdline) -> common::Reaped {
    cmd.validate().unwrap();
    common::Reaped(
        cmd.to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn connect(socket: &std::path::Path) -> Qmp {
    Qmp::connect_unix(socket, Duration::from_secs(10), Options::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_default_guest_migrates_into_its_incoming_clone() {
    let guest = common::description();
    let dir = tempfile::tempdir().unwrap();
    let qemu = binary::find(BinaryKind::System, None).unwrap();
    let console = ConsoleOutput::File(dir.path().join("console.log"));
    let launch = GuestLaunch {
        qemu_version: Some(binary::probe(&qemu).unwrap().version),
        ssh_host_port: common::free_port(),
        qmp_socket: Some(dir.path().join("qmp.sock")),
        ..GuestLaunch::new(guest, qemu, Chosen::Tcg, console)
    };
    let src_cmd = launch.cmdline();
    let dst_dir = dir.path().join("dst");
    std::fs::create_dir(&dst_dir).unwrap();
    let dst_cmd = src_cmd.clone_for_incoming("defer", |e| match e {
        Endpoint::Path(p) => Endpoint::Path(dst_dir.join(p.file_name().unwrap())),
        Endpoint::Port(_) => Endpoint::Port(common::free_port()),
    });
    assert!(
        !dst_cmd
            .display()
            .contains(&format!("{}/qmp.sock", dir.path().display()))
    );

    let _src = spawn(&src_cmd);
    let _dst = spawn(&dst_cmd);
    let src = connect(&dir.path().join("qmp.sock")).await;
    let dst = connect(&dst_dir.join("qmp.sock")).await;
    assert_eq!(
        dst.execute_raw("query-status", Value::Null).await.unwrap()["status"],
        "inmigrate"
    );

    let port = common::free_port();
    let uri = format!("tcp:127.0.0.1:{port}");
    dst.execute_raw("migrate-incoming", json!({ "uri": uri }))
        .await
        .unwrap();
    src.execute_raw(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "events", "state": true}]}),
    )
    .await
    .unwrap();
    let since = src.event_cursor();
    let dst_since = dst.event_cursor();
    src.execute_raw("migrate", json!({ "uri": uri }))
        .await
        .unwrap();
    let done = src
        .wait_event(
            since,
            "MIGRATION",
            &json!({"status": "completed"}),
            Duration::from_secs(90),
        )
        .await;
    let info = src.execute_raw("query-migrate", Value::Null).await.unwrap();
    done.unwrap_or_else(|e| panic!("{e}; query-migrate: {info}"));
    dst.wait_event(dst_since, "RESUME", &Value::Null, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        dst.execute(qapi::qmp::query_status {})
            .await
            .unwrap()
            .running
    );
    assert_eq!(
        src.execute_raw("query-status", Value::Null).await.unwrap()["status"],
        "postmigrate"
    );
    src.quit().await.unwrap();
    dst.quit().await.unwrap();
}
