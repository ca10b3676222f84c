//! The arm64 default guest beside the x86 one, under TCG: the bootstrap
//! with its packages fetched, `power_on` → `login_remote` fresh and from
//! the ready snapshot, and a live migration over each transport (QEMU's
//! total time and downtime, and the wall time of `vm.migrate()`).
//! Medians of N runs (default 5), one VM at a time:
//!
//! ```sh
//! cargo run --release --example arm64_bench [RUNS]
//! ```

mod common;

use std::time::{Duration, Instant};

use virtest::guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest::guest::cache;
use virtest::guest::description::Arch;
use virtest::migration::{Migrate, MigrationMode};
use virtest::vm::{BootMode, Start, Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runs = common::runs(5)?;
    let home = cache::default_home()?;
    println!("medians of {runs} runs, TCG");
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let options = BootstrapOptions::for_arch(home.clone(), arch)?;
        let guest = bootstrap(&options)?.manifest.description()?;
        println!(
            "\n{} ({arch}, machine {})",
            guest.name, guest.machine.machine_type
        );
        let mut builds = Vec::new();
        for _ in 0..runs {
            // A guest of its own, from the packages the cache holds.
            let scratch = tempfile::tempdir()?;
            let options = BootstrapOptions {
                home: scratch.path().to_path_buf(),
                ..options.clone()
            };
            let started = Instant::now();
            bootstrap(&options)?;
            builds.push(started.elapsed());
        }
        row("bootstrap, packages fetched", &builds, "s");

        let config = VmConfig::new(guest);
        let fresh = power_on_to_login(&config, BootMode::Fresh, runs).await?;
        row("power_on -> login, fresh", &fresh, "s");
        // The first start may make the snapshot: not counted.
        power_on_to_login(&config, BootMode::Snapshot, 1).await?;
        let restored = power_on_to_login(&config, BootMode::Snapshot, runs).await?;
        row("power_on -> login, snapshot", &restored, "s");

        let mut vm = Vm::new(config.clone());
        vm.power_on().await?;
        vm.login_remote().await?;
        for mode in MigrationMode::STREAMED {
            let (mut total, mut downtime, mut wall) = (vec![], vec![], vec![]);
            for _ in 0..runs {
                let report = vm.migrate(mode).await?;
                total.push(report.total_time_ms as f64);
                downtime.push(report.downtime_ms as f64);
                wall.push(report.wall_ms);
            }
            println!(
                "  migration {:<5} total {:>4.0} ms, downtime {:>3.0} ms, wall {:>4.0} ms",
                mode.as_str(),
                common::median(&total),
                common::median(&downtime),
                common::median(&wall)
            );
        }
        vm.login_remote().await?;
        vm.power_off().await?;
    }
    Ok(())
}

/// `runs` starts of a VM of `config` in `mode`, each from `power_on` to
/// a login, the VM ended after each.
async fn power_on_to_login(
    config: &VmConfig,
    mode: BootMode,
    runs: usize,
) -> Result<Vec<Duration>> {
    let mut took = Vec::new();
    for _ in 0..runs {
        let mut vm = Vm::new(VmConfig {
            boot: mode,
            ..config.clone()
        });
        let started = Instant::now();
        vm.power_on().await?;
        vm.login_remote().await?;
        took.push(started.elapsed());
        if mode == BootMode::Snapshot && matches!(vm.start(), Start::Fresh { .. }) {
            return Err(format!("no snapshot start: {}", vm.start()).into());
        }
        vm.power_off().await?;
    }
    Ok(took)
}

fn row(what: &str, values: &[Duration], unit: &str) {
    println!(
        "  {what:<30} {:>6.2} {unit}",
        common::median(values).as_secs_f64()
    );
}
