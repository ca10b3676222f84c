//! `virtest snapshot list | make | prune`: the ready snapshots in the
//! cache, which VMs start from instead of booting.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use virtest_guest::snapshots::{Snapshot, SnapshotStore};
use virtest_harness::params::ParamSources;
use virtest_vm::{Start, Vm};

use super::CliResult;

/// Flags of `virtest snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SnapshotCommand {
    /// List the snapshots: key, guest, size, age, and whether stale.
    List,
    /// Make the ready snapshot a VM of GUEST with these parameters starts
    /// from (nothing to do when it exists and is sound).
    Make {
        /// The guest: `default`, `debian`, a guest.toml or its directory.
        #[arg(default_value = "default")]
        guest: String,
        /// A parameter, `key=value` (memory, cpus, qemu_bin... shape the
        /// snapshot's key).
        #[arg(short = 'p', long = "param")]
        params: Vec<String>,
    },
    /// Remove stale snapshots (their guest or QEMU changed) and leftovers
    /// of interrupted makes; with --all, every snapshot.
    Prune {
        /// Remove every snapshot.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: Args) -> CliResult {
    let store = SnapshotStore::in_cache(&virtest_guest::cache::default_home()?);
    match args.command {
        SnapshotCommand::List => list(&store),
        SnapshotCommand::Make { guest, params } => make(&guest, params),
        SnapshotCommand::Prune { all } => {
            let pruned = store.prune(all)?;
            for (path, why) in &pruned.removed {
                println!("removed {} ({why})", path.display());
            }
            for path in &pruned.in_use {
                println!("kept {} (a running VM uses it)", path.display());
            }
            println!("{} removed", pruned.removed.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(store: &SnapshotStore) -> CliResult {
    tidy(store)?;
    let snapshots = store.list()?;
    if snapshots.is_empty() {
        println!("no snapshots in {}", store.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<12} {:>9} {:>8} {:>9}  state",
        "key", "guest", "size", "age", "made in"
    );
    for snapshot in &snapshots {
        println!("{}", line(snapshot));
    }
    let total: u64 = snapshots.iter().map(|s| s.size()).sum();
    println!(
        "{} snapshots, {} in {}",
        snapshots.len(),
        mib(total),
        store.root().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Tidies the store as a job would first, saying on stderr what it
/// removed.
pub fn tidy(store: &SnapshotStore) -> virtest_guest::Result<()> {
    for (path, why) in store.tidy()? {
        eprintln!("removed {} ({why})", path.display());
    }
    Ok(())
}

/// One snapshot as `list` shows it.
pub fn line(snapshot: &Snapshot) -> String {
    let meta = &snapshot.meta;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let age = now.saturating_sub(meta.created_unix);
    let age = match age {
        0..120 => format!("{age} s"),
        120..7200 => format!("{} min", age / 60),
        _ => format!("{} h", age / 3600),
    };
    let state = match snapshot.staleness() {
        Some(why) => format!("stale: {why}"),
        None => "current".to_string(),
    };
    format!(
        "{:<16}  {:<12} {:>9} {:>8} {:>7.1} s  {state}",
        meta.key,
        meta.guest,
        mib(snapshot.size()),
        age,
        meta.make_ms as f64 / 1000.0
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn make(guest: &str, mut assignments: Vec<String>) -> CliResult {
    assignments.push(format!("guest={guest}"));
    assignments.push("boot=snapshot".into());
    let sources = ParamSources {
        file: None,
        assignments,
    };
    let (variants, warnings) = sources.variants()?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let [variant] = &variants[..] else {
        return Err("`virtest snapshot make` takes one value per parameter".into());
    };
    let mut config = virtest_harness::vm_config(&variant.params, std::path::Path::new("."))
        .map_err(|e| e.reason)?;
    // The logs go to the VM's runtime directory, removed with it; an
    // error carries the console's last lines.
    config.log_dir = None;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = runtime.block_on(async {
        let mut vm = Vm::new(config);
        let powered = vm.power_on().await;
        let start = vm.start().clone();
        let _ = vm.within(std::time::Duration::ZERO).power_off().await;
        powered.map(|()| start)
    })?;
    match start {
        Start::MadeSnapshot { key } => println!("made snapshot {key}"),
        Start::FromSnapshot { key } => println!("snapshot {key} is current"),
        Start::Fresh {
            why_not_snapshot: Some(why),
        } => return Err(format!("no snapshot: {why}").into()),
        other => return Err(format!("no snapshot: the VM started {other}").into()),
    }
    Ok(ExitCode::SUCCESS)
}
