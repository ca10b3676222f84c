//! Migrations between simulated hosts against migrations on one host,
//! on the idle default guest (booted fresh: a VM on another host does
//! not start from a snapshot), in one run. Medians of N runs (default 5)
//! of `migrate()`'s wall time and QEMU's own total time and downtime:
//! on this machine (no SSH), then between hosts a and b (QEMU on each
//! started over SSH, its QMP, console and guest port forwarded), over
//! tcp and tcp with TLS (x509); then between hosts through b's link at
//! 100 Mbit/s, at 1 % loss, and both. Then storage that is not shared: a
//! VM with a 256 MiB disk, 64 MiB of it written by the guest, moved
//! between a and b: the time the base image takes to reach a host (once,
//! by SSH, checked by hash), and the live copy's throughput. Needs root.
//!
//! ```sh
//! cargo run --release --example hosts_bench [RUNS]
//! ```

mod common;

use std::path::Path;

use virtest::guest::description::{Disk, DiskFormat, DiskSource};
use virtest::host::{Host, Lab, Link};
use virtest::migration::{Migrate, MigrationMode, MigrationSpec, Tls};
use virtest::vm::{Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One condition's medians: wall, QEMU's total, downtime (ms), MiB/s.
struct Row {
    name: String,
    wall: f64,
    total: f64,
    downtime: f64,
    throughput: f64,
}

/// Migrates `vm` `runs` times as `spec` says, between `hosts` in turn
/// (the next host each time; one host: there and back on it).
async fn row(
    vm: &mut Vm,
    name: &str,
    spec: &MigrationSpec,
    hosts: &[&Host],
    runs: usize,
) -> Result<Row> {
    let (mut wall, mut total, mut downtime, mut throughput) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut spec = spec.clone();
        spec.to = Some(hosts[(run + 1) % hosts.len()].clone());
        let report = vm.migrate_with(&spec).await?;
        wall.push(report.wall_ms);
        total.push(report.total_time_ms as f64);
        downtime.push(report.downtime_ms as f64);
        throughput.push(report.throughput_mib_s);
    }
    // Back to where it started, for the next row.
    if !vm.host().same(hosts[0]) {
        let mut back = MigrationSpec::new(MigrationMode::Tcp);
        back.to = Some(hosts[0].clone());
        vm.migrate_with(&back).await?;
    }
    Ok(Row {
        name: name.to_string(),
        wall: common::median(&wall),
        total: common::median(&total),
        downtime: common::median(&downtime),
        throughput: common::median(&throughput),
    })
}

async fn vm_on(host: &Host) -> Result<Vm> {
    vm_with(host, None).await
}

/// A VM on `host`, with a raw disk over `disk` if given.
async fn vm_with(host: &Host, disk: Option<&Path>) -> Result<Vm> {
    let mut config = VmConfig::default_guest()?;
    config.host = host.clone();
    if let Some(base) = disk {
        config.guest.disks.push(Disk {
            source: DiskSource::File(base.to_path_buf()),
            format: DiskFormat::Raw,
        });
    }
    let mut vm = Vm::new(config);
    vm.power_on().await?;
    vm.login_remote().await?;
    Ok(vm)
}

async fn faulted(link: &Link, rate: Option<u32>, loss: f64) -> Result<()> {
    link.clear().await?;
    if let Some(rate) = rate {
        link.limit_rate(rate).await?;
    }
    link.lose(loss).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = common::runs(5)?;
    let dir = tempfile::tempdir()?;
    let lab = Lab::new(dir.path()).await?;
    let (a, b) = (lab.add_host("a").await?, lab.add_host("b").await?);
    let local = lab.local();
    let tcp = MigrationSpec::new(MigrationMode::Tcp);
    let mut x509 = tcp.clone();
    x509.tls = Some(Tls::X509);

    let mut rows = Vec::new();
    let mut here = vm_on(&local).await?;
    rows.push(
        row(
            &mut here,
            "one host (this machine), tcp",
            &tcp,
            &[&local],
            runs,
        )
        .await?,
    );
    rows.push(
        row(
            &mut here,
            "one host (this machine), tls x509",
            &x509,
            &[&local],
            runs,
        )
        .await?,
    );
    here.power_off().await?;

    let mut vm = vm_on(&a).await?;
    let hosts = [&a, &b];
    rows.push(row(&mut vm, "a <-> b, tcp", &tcp, &hosts, runs).await?);
    rows.push(row(&mut vm, "a <-> b, tls x509", &x509, &hosts, runs).await?);
    // Faults on b's link: every other migration crosses it into b, every
    // other out of it; a and b both only ever talk through it.
    let link = b.link().expect("a simulated host");
    let faults = [
        ("100 Mbit/s", Some(100), 0.0),
        ("1 % loss", None, 1.0),
        ("100 Mbit/s and 1 % loss", Some(100), 1.0),
    ];
    for (name, rate, loss) in faults {
        faulted(link, rate, loss).await?;
        rows.push(
            row(
                &mut vm,
                &format!("a <-> b, tcp, {name}"),
                &tcp,
                &hosts,
                runs,
            )
            .await?,
        );
    }
    link.clear().await?;
    vm.power_off().await?;

    // Storage that is not shared: hosts c and d, whose storage holds no
    // copy of the base yet.
    let base = dir.path().join("disk.img");
    std::fs::File::create(&base)?.set_len(256 << 20)?;
    let (c, d) = (lab.add_host("c").await?, lab.add_host("d").await?);
    // A base's way to a host: its hash here, then the copy over SSH,
    // hashed again there (what placing a VM on a host does, once).
    let (mut hash_ms, mut send_ms) = (vec![], vec![]);
    let scratch = d.storage_dir().expect("own storage").join("scratch.img");
    for _ in 0..runs {
        let started = std::time::Instant::now();
        let sha256 = Host::local().sha256(&base).await?;
        hash_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = std::time::Instant::now();
        d.copy_in(
            &base,
            &scratch,
            &sha256,
            std::time::Duration::from_secs(600),
        )
        .await?;
        send_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_file(&scratch)?;
    }
    let mut vm = vm_with(&c, Some(&base)).await?;
    vm.remote()?
        .run("dd if=/dev/urandom of=/dev/vda bs=1M count=64 conv=fsync 2>/dev/null")
        .await?;
    let (mut copy_ms, mut copy_rate, mut wall, mut downtime) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let to = if run % 2 == 0 { &d } else { &c };
        let report = vm.migrate_to(to, MigrationMode::Tcp).await?;
        copy_ms.push(report.measurements["disk_copy_ms"]);
        copy_rate.push(report.measurements["disk_copy_mib_s"]);
        wall.push(report.wall_ms);
        downtime.push(report.downtime_ms as f64);
        vm.login_remote().await?;
    }
    vm.power_off().await?;
    let send = common::median(&send_ms);
    println!(
        "disk: the 256 MiB base to a host: hash here {:.0} ms, copy and hash there {send:.0} ms ({:.1} MiB/s)",
        common::median(&hash_ms),
        256.0 / (send / 1000.0)
    );
    println!(
        "disk: c <-> d with 64 MiB written: copy {:.0} ms at {:.1} MiB/s, migrate() wall {:.0} ms, downtime {:.0} ms (medians of {runs})",
        common::median(&copy_ms),
        common::median(&copy_rate),
        common::median(&wall),
        common::median(&downtime)
    );

    println!(
        "condition                                   wall ms   QEMU total ms   downtime ms   MiB/s   (medians of {runs})"
    );
    for r in rows {
        println!(
            "{:<42} {:>8.0} {:>15.0} {:>13.0} {:>7.1}",
            r.name, r.wall, r.total, r.downtime, r.throughput
        );
    }
    Ok(())
}
