//! Hot-plug: a disk written, carried through migrations and read back on
//! the destination, then unplugged, beside a device (an RNG) the guest
//! binds a driver to; a NIC put on a private network while
//! the VM runs, reached through it before and after a migration, then
//! unplugged; and the bad inputs, each a clear error.

use virtest_testkit as common;

use std::time::Duration;

use virtest_migration::{Migrate, MigrationMode};
use virtest_remote::Session;
use virtest_vm::{BootMode, Error, Network, Vm, VmConfig};

fn config(guest: VmConfig, logs: &std::path::Path, name: &str) -> VmConfig {
    let mut config = guest;
    config.name = Some(name.into());
    config.log_dir = Some(logs.join(name));
    config.boot = BootMode::Snapshot;
    config
}

async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

/// The disk's whole story on `guest`.
async fn a_disk_survives_migrations(guest: VmConfig) {
    let logs = common::test_logs();
    let mut vm = Vm::new(config(guest, logs.path(), "vm"));
    let off = vm.hotplug().disk("data", 8).await.unwrap_err();
    assert!(matches!(off, Error::Off { .. }), "{off}");
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();

    let unknown = vm.hotplug().unplug("nosuch").await.unwrap_err();
    assert!(
        unknown.to_string().contains("no hot-plugged device"),
        "{unknown}"
    );
    let bad = vm.hotplug().disk("two words", 8).await.unwrap_err();
    assert!(matches!(bad, Error::Hotplug { .. }), "{bad}");

    let refused = vm
        .hotplug()
        .device("no-such-driver", "x", &[])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("QEMU refused `device_add`"),
        "{refused}"
    );
    // Numbers as text, as on a command line.
    let rng = vm
        .hotplug()
        .device(
            "virtio-rng-pci",
            "rng1",
            &[("max-bytes", "65536"), ("period", "1000")],
        )
        .await
        .unwrap();
    let device = vm.hotplug().disk("data", 64).await.unwrap();
    assert!(device.starts_with("/dev/vd"), "{device}");
    let again = vm.hotplug().disk("data", 8).await.unwrap_err();
    assert!(again.to_string().contains("has that id already"), "{again}");
    let written = run(
        &vm,
        &format!(
            "head -c 1048576 /dev/urandom > /tmp/blob && dd if=/tmp/blob of={device} bs=64k conv=fsync 2>/dev/null \
             && sha256sum < /tmp/blob"
        ),
    )
    .await;
    for mode in [MigrationMode::Tcp, MigrationMode::Unix] {
        vm.migrate(mode).await.unwrap();
        assert!(
            vm.instance()
                .unwrap()
                .cmdline()
                .display()
                .contains("serial=data"),
            "{mode}: the destination has the disk"
        );
        vm.login_remote().await.unwrap();
        let read = run(&vm, &format!("head -c 1048576 {device} | sha256sum")).await;
        assert_eq!(
            read, written,
            "{mode}: the disk's content on the destination"
        );
        let rng_there = run(&vm, &format!("ls /sys/bus/pci/devices/{rng}/driver")).await;
        assert!(
            !rng_there.is_empty(),
            "{mode}: the hot-plugged RNG has no driver"
        );
    }

    vm.hotplug().unplug("rng1").await.unwrap();
    let rng_gone = run(
        &vm,
        &format!("[ -e /sys/bus/pci/devices/{rng} ] && echo there || echo gone"),
    )
    .await;
    assert_eq!(rng_gone, "gone\n");
    vm.hotplug().unplug("data").await.unwrap();
    let name = device.trim_start_matches("/dev/");
    let gone = run(
        &vm,
        &format!("[ -e /sys/block/{name} ] && echo there || echo gone"),
    )
    .await;
    assert_eq!(gone, "gone\n", "the guest still has {device}");
    assert!(
        !vm.instance()
            .unwrap()
            .cmdline()
            .display()
            .contains("serial=data")
    );
    let twice = vm.hotplug().unplug("data").await.unwrap_err();
    assert!(
        twice.to_string().contains("no hot-plugged device"),
        "{twice}"
    );
    // The port is free again, and a migration after the unplug works.
    vm.hotplug().disk("more", 8).await.unwrap();
    vm.migrate(MigrationMode::Tcp).await.unwrap();
    vm.within(Duration::ZERO).power_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_plugged_disk_survives_migrations_on_the_default_guest() {
    let _slot = common::guest_slots(1);
    common::guest();
    a_disk_survives_migrations(VmConfig::default_guest().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_plugged_disk_survives_migrations_on_the_debian_guest() {
    let _slot = common::guest_slots(1);
    a_disk_survives_migrations(VmConfig::new(common::debian().clone())).await;
}

/// A client joins the server's network running; it fetches from the
/// server through the new NIC before and after it migrates, the server
/// reaches it through the NIC after the migration, then it lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_plugged_nic_reaches_another_vm_across_a_migration() {
    let _slots = common::guest_slots(2);
    common::guest();
    let logs = common::test_logs();
    let lan = Network::new("lan", 0).unwrap();
    let mut server = Vm::new(config(
        VmConfig::default_guest().unwrap(),
        logs.path(),
        "server",
    ));
    let mut client = Vm::new(config(
        VmConfig::default_guest().unwrap(),
        logs.path(),
        "client",
    ));
    let server_address = lan.join(&mut server).unwrap();
    server.power_on().await.unwrap();
    client.power_on().await.unwrap();
    let early = lan.join(&mut client).unwrap_err();
    assert!(early.to_string().contains("hotplug().nic"), "{early}");
    server
        .login_remote()
        .await
        .unwrap()
        .run("mkdir -p /tmp/www && echo served > /tmp/www/id && busybox httpd -p 8080 -h /tmp/www")
        .await
        .unwrap();
    client.login_remote().await.unwrap();

    let address = client.hotplug().nic(&lan).await.unwrap();
    assert_eq!(client.address(&lan), Some(address));
    assert_ne!(address, server_address);
    let fetch = format!("wget -qO- http://{server_address}:8080/id");
    let fetched = client
        .remote()
        .unwrap()
        .wait_until_succeeds(&fetch, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fetched.stdout, "served\n");
    client.migrate(MigrationMode::Unix).await.unwrap();
    client.login_remote().await.unwrap();
    assert_eq!(
        run(&client, &fetch).await,
        "served\n",
        "after the migration"
    );
    // And the other way: the server reaches the migrated guest through
    // its hot-plugged NIC.
    run(
        &client,
        "mkdir -p /tmp/www && echo client > /tmp/www/id && busybox httpd -p 8080 -h /tmp/www",
    )
    .await;
    let back = run(&server, &format!("wget -qO- http://{address}:8080/id")).await;
    assert_eq!(back, "client\n");

    client.hotplug().unplug("lan").await.unwrap();
    let mac_left = run(&client, "cat /sys/class/net/*/address").await;
    assert!(!mac_left.contains("52:54:00:0a:00:02"), "{mac_left}");
    assert_eq!(client.address(&lan), None);
    // Its address was given back: plugged again, it gets the same one.
    assert_eq!(client.hotplug().nic(&lan).await.unwrap(), address);
    for vm in [&mut server, &mut client] {
        vm.within(Duration::ZERO).power_off().await.unwrap();
    }
}
