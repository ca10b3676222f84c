//! Real guests, side by side: the Debian guest's build time and image
//! size, `power_on` → `login_remote` for the default guest and for the
//! Debian guest under SeaBIOS and under UEFI (one VM at a time), and how
//! long one disk overlay takes to make. Medians of N runs (default 3):
//!
//! ```sh
//! cargo run --release --example guests_bench [RUNS] [--rebuild]
//! ```
//!
//! `--rebuild` also times one forced rebuild of the Debian guest (about a
//! minute and a half); without it the build time is not measured.

mod common;

use std::time::{Duration, Instant};

use virtest::guest::cache;
use virtest::guest::debian::{DebianOptions, bootstrap_debian};
use virtest::guest::description::{DiskSource, Firmware};
use virtest::vm::{Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runs = common::runs(3)?;
    let rebuild = std::env::args().any(|a| a == "--rebuild");
    let home = cache::default_home()?;
    let started = Instant::now();
    let built = bootstrap_debian(&DebianOptions {
        home: home.clone(),
        force: rebuild,
    })?;
    if rebuild {
        println!(
            "Debian guest build: {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            built
                .steps
                .iter()
                .map(|(step, took)| format!("{step} {:.1} s", took.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "Debian guest image: {:.0} MiB on disk",
        built.image_bytes as f64 / (1 << 20) as f64
    );
    let debian = built.description;

    let DiskSource::File(base) = &debian.disks[0].source else {
        return Err("the Debian guest's disk is a file".into());
    };
    let dir = tempfile::tempdir()?;
    let mut overlay = Vec::new();
    for run in 0..10 {
        let path = dir.path().join(format!("o{run}.qcow2"));
        let start = Instant::now();
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(&path)
            .status()?;
        overlay.push(start.elapsed());
        if !status.success() {
            return Err("qemu-img create failed".into());
        }
    }
    println!(
        "overlay creation: {:.1} ms (median of 10)",
        ms(common::median(&overlay))
    );

    let default = VmConfig::default_guest()?;
    let mut uefi = VmConfig::new(debian.clone());
    uefi.guest.boot.firmware = Firmware::Uefi;
    let cases = [
        ("default guest (kernel boot)", default),
        ("Debian, SeaBIOS", VmConfig::new(debian.clone())),
        ("Debian, UEFI", uefi),
    ];
    println!("\npower_on -> login_remote, median of {runs}:");
    for (name, config) in cases {
        let mut times = Vec::new();
        for _ in 0..runs {
            let mut vm = Vm::new(config.clone());
            let start = Instant::now();
            vm.power_on().await?;
            vm.login_remote().await?;
            times.push(start.elapsed());
            vm.within(Duration::ZERO).power_off().await?;
        }
        println!(
            "  {name:<28} {:>8.2} s   (runs: {})",
            common::median(&times).as_secs_f64(),
            times
                .iter()
                .map(|t| format!("{:.1}", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
