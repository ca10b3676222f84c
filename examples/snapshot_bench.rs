//! Ready snapshots against boots, on the default guest: `power_on` →
//! `login_remote` fresh and from a snapshot (goal: ≤ 0.2 of a fresh
//! boot), the snapshot's size and the time to make it, and a job of 8
//! migration tests (boot excluded) with `boot=fresh` and `boot=snapshot`
//! (goal: ratio ≤ 0.35). Medians of N runs (default 3). The single VMs
//! use a snapshot store of their own; the jobs use the cache's (made by
//! the first job's first test unless it exists):
//!
//! ```sh
//! cargo run --release --example snapshot_bench [RUNS] [--debian]
//! ```
//!
//! `--debian` also measures the Debian guest (goal: restore ≤ 0.05 of a
//! fresh boot; its fresh boots take minutes).

mod common;

use std::time::Instant;

use virtest::builtin;
use virtest::guest::snapshots::SnapshotStore;
use virtest::harness::params::ParamSources;
use virtest::harness::runner::{self, Filter, JobOptions};
use virtest::vm::{BootMode, Start, Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `power_on` → `login_remote`, in seconds, and how the VM started.
async fn ready(config: &VmConfig) -> Result<(f64, Start)> {
    let mut vm = Vm::new(config.clone());
    let start = Instant::now();
    vm.power_on().await?;
    vm.login_remote().await?;
    let took = start.elapsed().as_secs_f64();
    let how = vm.start().clone();
    vm.within(std::time::Duration::ZERO).power_off().await?;
    Ok((took, how))
}

/// Fresh boots against restores of `config`'s guest, medians of `runs`,
/// in a snapshot store of its own (so that making it is measured).
async fn compare(name: &str, config: &mut VmConfig, runs: usize) -> Result<()> {
    let store_dir = tempfile::tempdir()?;
    config.snapshot_dir = Some(store_dir.path().to_path_buf());
    config.boot = BootMode::Fresh;
    let mut fresh = Vec::new();
    for _ in 0..runs {
        fresh.push(ready(config).await?.0);
    }
    config.boot = BootMode::Snapshot;
    let (make, how) = ready(config).await?;
    if !matches!(how, Start::MadeSnapshot { .. }) {
        return Err(format!("the first snapshot start was {how}").into());
    }
    let store = SnapshotStore::new(store_dir.path());
    let made = store.list()?.pop().ok_or("no snapshot was made")?;
    let mut restored = Vec::new();
    for _ in 0..runs {
        let (took, how) = ready(config).await?;
        if !matches!(how, Start::FromSnapshot { .. }) {
            return Err(format!("a restore started {how}").into());
        }
        restored.push(took);
    }
    let (fresh, restored) = (common::median(&fresh), common::median(&restored));
    println!("{name}, power_on → login_remote:");
    println!("  fresh boot     {fresh:.2} s");
    println!(
        "  from snapshot  {restored:.2} s  (ratio {:.3})",
        restored / fresh
    );
    println!(
        "  snapshot: {:.1} MiB ({}), made in {:.2} s (boot to ready and save; the first start took {make:.2} s with the restore)",
        made.size() as f64 / (1 << 20) as f64,
        made.meta
            .files
            .iter()
            .map(|f| format!("{} {:.1} MiB", f.name, f.size as f64 / (1 << 20) as f64))
            .collect::<Vec<_>>()
            .join(", "),
        made.meta.make_ms as f64 / 1000.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = common::runs(3)?;
    let mut config = VmConfig::default_guest()?;
    compare("default guest", &mut config, runs).await?;
    if std::env::args().any(|a| a == "--debian") {
        let (debian, _) = virtest::guest::guests::load("debian")?;
        compare("Debian guest", &mut VmConfig::new(debian), runs).await?;
    }

    let defs = builtin::tests();
    let sources = ParamSources {
        file: None,
        assignments: vec![],
    };
    let filter = Filter {
        patterns: vec!["migration".into()],
        exact: true,
        skip: vec![],
    };
    let (one, _) = runner::plan(&defs, &sources, &filter)?;
    let results = tempfile::tempdir()?;
    let options = JobOptions {
        results_dir: results.path().to_path_buf(),
        max_parallel: 2,
        ..JobOptions::new()
    };
    let mut medians = Vec::new();
    for boot in ["fresh", "snapshot"] {
        let planned: Vec<_> = (1..=8)
            .map(|n| {
                let mut test = one[0].clone();
                test.name = format!("migration-{n}");
                test.params.set("boot", boot);
                test.params.set("migration_iterations", "1");
                test
            })
            .collect();
        let mut walls = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let job = runner::run_job(&defs, planned.clone(), &options).await?;
            if !job.results.success() {
                return Err(format!("the job failed: {}", job.dir.display()).into());
            }
            walls.push(start.elapsed().as_secs_f64());
        }
        let median = common::median(&walls);
        println!(
            "job of 8 migration tests, boot={boot}, --max-parallel 2: {median:.2} s (runs: {walls:.2?})"
        );
        medians.push(median);
    }
    println!(
        "ratio snapshot/fresh: {:.2} (goal ≤ 0.35)",
        medians[1] / medians[0]
    );
    Ok(())
}
