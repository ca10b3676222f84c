//! Downtime and total time per migration feature on the idle default
//! guest, under the host's QEMU 7.2 and the cache's 10.0 (`virtest
//! bootstrap --qemu 10.0`), each migrating to its own version: over tcp,
//! and mapped-ram over a file. Features that must fail are left out (their
//! figures would be a failure's); a feature a QEMU cannot do shows `-`,
//! and why follows the table. Medians of N runs (default 3), in ms.
//!
//! ```sh
//! cargo run --release --example migration_feature_bench [RUNS]
//! ```

mod common;

use std::path::PathBuf;

use virtest::migration::{Error, Feature, Migrate, MigrationMode, MigrationSpec};
use virtest::vm::{BootMode, Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A feature's medians under one QEMU: `(total, downtime)`, or why not.
type Cell = std::result::Result<(f64, f64), String>;

/// Migrates a VM of `qemu` under each feature `runs` times.
async fn column(qemu: PathBuf, features: &[Feature], runs: usize) -> Result<Vec<Cell>> {
    let mut config = VmConfig::default_guest()?;
    config.qemu = Some(qemu.clone());
    config.boot = BootMode::Snapshot;
    let mut vm = Vm::new(config);
    vm.power_on().await?;
    vm.login_remote().await?;
    let mut cells = Vec::new();
    for &feature in features {
        let mode = match feature {
            Feature::MappedRam | Feature::MappedRamMultifd => MigrationMode::File,
            _ => MigrationMode::Tcp,
        };
        let mut spec = MigrationSpec::new(mode);
        spec.destination_qemu = Some(qemu.clone());
        feature.apply(&mut spec)?;
        let (mut total, mut downtime) = (Vec::new(), Vec::new());
        let mut cell = Ok((0.0, 0.0));
        for _ in 0..runs {
            match vm.migrate_with(&spec).await {
                Ok(report) => {
                    total.push(report.total_time_ms as f64);
                    downtime.push(report.downtime_ms as f64);
                }
                Err(e @ (Error::UnknownCapability { .. } | Error::Unsupported { .. })) => {
                    cell = Err(e.to_string());
                    break;
                }
                Err(e) => return Err(format!("{feature}: {e}").into()),
            }
        }
        if cell.is_ok() {
            cell = Ok((common::median(&total), common::median(&downtime)));
        }
        cells.push(cell);
    }
    vm.power_off().await?;
    Ok(cells)
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = common::runs(3)?;
    let newer = common::cached_qemu("10.0")?;
    let host = virtest::qemu_cmdline::binary::find(
        virtest::qemu_cmdline::binary::BinaryKind::System,
        None,
    )?;
    let features: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| !f.must_fail())
        .collect();
    let old = column(host, &features, runs).await?;
    let new = column(newer, &features, runs).await?;
    println!(
        "feature               7.2 total  downtime   10.0 total  downtime  (ms, medians of {runs})"
    );
    let shown = |cell: &Cell| match cell {
        Ok((total, downtime)) => format!("{total:>10.0}  {downtime:>8.0}"),
        Err(_) => format!("{:>10}  {:>8}", "-", "-"),
    };
    let mut why = Vec::new();
    for (i, feature) in features.iter().enumerate() {
        println!(
            "{:<20} {}   {}",
            feature.as_str(),
            shown(&old[i]),
            shown(&new[i])
        );
        for (qemu, cell) in [("7.2", &old[i]), ("10.0", &new[i])] {
            if let Err(e) = cell {
                why.push(format!("{feature} under {qemu}: {e}"));
            }
        }
    }
    for line in why {
        println!("{line}");
    }
    Ok(())
}
