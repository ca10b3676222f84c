//! What a running VM offers besides SSH, at the vm layer alone: the
//! guest agent, a session on the serial console, and a disk hot-plugged
//! and taken out, each checked from the guest. (The migration crate's
//! tests run the same before and after migrations.)

use virtest_testkit as common;

use std::time::Duration;

use virtest_vm::{BootMode, Vm, VmConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_the_serial_console_and_a_hot_plugged_disk_work() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut config = VmConfig::new(common::description().clone());
    config.log_dir = Some(logs.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let boot_id = vm
        .remote()
        .unwrap()
        .run("cat /proc/sys/kernel/random/boot_id")
        .await
        .unwrap()
        .stdout;

    let agent = vm.agent().await.unwrap();
    let done = agent
        .exec(
            &["cat", "/proc/sys/kernel/random/boot_id"],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        boot_id,
        "the agent's guest"
    );
    agent
        .write_file("/tmp/from-agent", b"written by qemu-ga")
        .await
        .unwrap();
    let read = vm
        .remote()
        .unwrap()
        .run("cat /tmp/from-agent")
        .await
        .unwrap();
    assert_eq!(read.stdout, "written by qemu-ga");

    let serial = vm.serial().await.unwrap();
    let out = serial
        .run("cat /proc/sys/kernel/random/boot_id; echo $((6*7))")
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        format!("{boot_id}42\n"),
        "the serial console's guest"
    );

    let device = vm.hotplug().disk("data", 16).await.unwrap();
    assert_eq!(vm.hotplug().devices(), ["data"]);
    let size = vm
        .remote()
        .unwrap()
        .run(&format!(
            "cat /sys/class/block/{}/size",
            device.trim_start_matches("/dev/")
        ))
        .await
        .unwrap();
    assert_eq!(
        size.stdout.trim(),
        (16 * 2048).to_string(),
        "16 MiB in sectors"
    );
    vm.hotplug().unplug("data").await.unwrap();
    assert!(vm.hotplug().devices().is_empty());
    let gone = vm
        .remote()
        .unwrap()
        .run(&format!("test -e {device} && echo present || echo gone"))
        .await
        .unwrap();
    assert_eq!(gone.stdout, "gone\n", "{device} left the guest");

    vm.power_off().await.unwrap();
}
