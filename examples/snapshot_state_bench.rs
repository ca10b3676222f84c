//! A ready snapshot's state, as a migration stream under the host's 7.2
//! and the cache's 10.0 (`virtest bootstrap --qemu 10.0`), and as a
//! mapped-ram file (each page at its offset, holes for zero pages) under
//! 10.0. Per row: the time QEMU takes to write the state, its size on
//! disk and apparent, and `power_on` (the restore, until the guest runs;
//! the state's hash is checked meanwhile) and `power_on` →
//! `login_remote` from it. Each run makes its snapshot in a store of its
//! own; medians of N runs (default 3).
//!
//! ```sh
//! cargo run --release --example snapshot_state_bench [RUNS]
//! ```

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use virtest::guest::snapshots::SnapshotStore;
use virtest::vm::{BootMode, Start, StateFormat, Vm, VmConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One snapshot made and restored.
struct Run {
    /// QEMU's time to write the state, ms.
    save_ms: f64,
    /// The state's blocks on disk, MiB.
    on_disk_mib: f64,
    /// Its apparent size, MiB.
    apparent_mib: f64,
    /// `power_on` from it, s.
    restore_s: f64,
    /// `power_on` → `login_remote` from it, s.
    login_s: f64,
    /// Its format.
    format: String,
}

/// Makes a snapshot with `qemu` (the host's when `None`) in `format`,
/// and restores it.
async fn once(qemu: Option<PathBuf>, format: StateFormat) -> Result<Run> {
    let store_dir = tempfile::tempdir()?;
    let mut config = VmConfig::default_guest()?;
    config.qemu = qemu;
    config.snapshot_format = format;
    config.snapshot_dir = Some(store_dir.path().to_path_buf());
    config.boot = BootMode::Snapshot;
    let mut maker = Vm::new(config.clone());
    maker.power_on().await?;
    if !matches!(maker.start(), Start::MadeSnapshot { .. }) {
        return Err(format!("the first start was {}", maker.start()).into());
    }
    maker.within(std::time::Duration::ZERO).power_off().await?;
    let made = SnapshotStore::new(store_dir.path())
        .list()?
        .pop()
        .ok_or("no snapshot was made")?;
    let state = std::fs::metadata(made.state())?;
    let mut vm = Vm::new(config);
    let began = Instant::now();
    vm.power_on().await?;
    let restored = began.elapsed().as_secs_f64();
    vm.login_remote().await?;
    let logged_in = began.elapsed().as_secs_f64();
    if !matches!(vm.start(), Start::FromSnapshot { .. }) {
        return Err(format!("the restore started {}", vm.start()).into());
    }
    vm.within(std::time::Duration::ZERO).power_off().await?;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    Ok(Run {
        save_ms: made.meta.save_ms as f64,
        on_disk_mib: mib(state.blocks() * 512),
        apparent_mib: mib(state.len()),
        restore_s: restored,
        login_s: logged_in,
        format: made.meta.state_format.as_str().to_string(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = common::runs(3)?;
    let newer = common::cached_qemu("10.0")?;
    println!(
        "qemu  format     save ms  on disk MiB  apparent MiB  restore s  to login s  (medians of {runs})"
    );
    let rows = [
        ("7.2", None, StateFormat::Stream),
        ("10.0", Some(newer.clone()), StateFormat::Stream),
        ("10.0", Some(newer), StateFormat::MappedRam),
    ];
    for (name, qemu, format) in rows {
        let mut rows = Vec::new();
        for _ in 0..runs {
            rows.push(once(qemu.clone(), format).await?);
        }
        let column =
            |pick: fn(&Run) -> f64| common::median(&rows.iter().map(pick).collect::<Vec<_>>());
        println!(
            "{name:<5} {:<10} {:>7.0}  {:>11.1}  {:>12.1}  {:>9.2}  {:>10.2}",
            rows[0].format,
            column(|r| r.save_ms),
            column(|r| r.on_disk_mib),
            column(|r| r.apparent_mib),
            column(|r| r.restore_s),
            column(|r| r.login_s),
        );
    }
    Ok(())
}
