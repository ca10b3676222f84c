//! Live migration of the idle default guest over each transport: QEMU's
//! total time and downtime beside the wall time of `vm.migrate()`, and the
//! orchestration overhead (wall minus QEMU's total). Prints medians.
//!
//! ```sh
//! cargo run --release --example migration_bench [RUNS]
//! ```

mod common;

use virtest::migration::{Migrate, MigrationMode};
use virtest::vm::{Vm, VmConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = common::runs(5)?;
    let mut vm = Vm::new(VmConfig::default_guest()?);
    vm.power_on().await?;
    vm.login_remote().await?;
    println!("mode   total  downtime  wall   overhead  (ms, medians of {runs})");
    for mode in MigrationMode::STREAMED {
        let (mut total, mut downtime, mut wall, mut overhead) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let report = vm.migrate(mode).await?;
            total.push(report.total_time_ms as f64);
            downtime.push(report.downtime_ms as f64);
            wall.push(report.wall_ms);
            overhead.push(report.overhead_ms);
        }
        println!(
            "{:<6} {:>5.0}  {:>8.0}  {:>5.0}  {:>8.0}",
            mode.as_str(),
            common::median(&total),
            common::median(&downtime),
            common::median(&wall),
            common::median(&overhead)
        );
    }
    vm.login_remote().await?;
    vm.power_off().await?;
    Ok(())
}
