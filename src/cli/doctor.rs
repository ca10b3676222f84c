//! `virtest doctor`: what this machine has for running tests, and the
//! command that fixes each missing piece.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use virtest_guest::{Manifest, bootstrap, cache};
use virtest_harness::host_speed::{self, Target};
use virtest_migration::{MigrationMode, MigrationSpec};
use virtest_qemu_cmdline::accel::{self, Accel, HostKvm};
use virtest_qemu_cmdline::arch::Arch;
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_vm::VmConfig;

use super::CliResult;

/// Flags of `virtest doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cache directory (default: $VIRTEST_HOME, else the XDG cache dir).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

pub fn run(args: Args) -> CliResult {
    let mut fixes: Vec<String> = Vec::new();
    let home = match args.home {
        Some(h) => h,
        None => cache::default_home()?,
    };

    println!("QEMU");
    let mut has_kvm = false;
    for kind in [BinaryKind::System, BinaryKind::Img] {
        let name = kind.path_names(Arch::host().unwrap_or_default())[0].clone();
        match binary::find(kind, None) {
            Ok(path) => {
                let described = if kind == BinaryKind::Img {
                    binary::probe_version(&path).map(|(v, _)| format!("{v}"))
                } else {
                    binary::probe(&path).map(|p| {
                        has_kvm = p.has_accel("kvm");
                        format!(
                            "{} (accelerators: {})",
                            p.version,
                            p.accelerators.join(", ")
                        )
                    })
                };
                match described {
                    Ok(text) => println!("  ok       {name:<20} {} {text}", path.display()),
                    Err(e) => {
                        println!("  broken   {name:<20} {e}");
                        fixes.push(format!("apt-get install --reinstall {}", package(kind)));
                    }
                }
            }
            Err(e) => {
                println!("  missing  {name:<20} {e}");
                fixes.push(install_qemu_command());
            }
        }
    }

    // Other architectures' emulators: each runs that architecture's
    // guests, and none is needed otherwise.
    for arch in virtest_qemu_cmdline::arch::ALL
        .into_iter()
        .filter(|a| !a.is_host())
    {
        let name = arch.system_emulator();
        match binary::find_for(BinaryKind::System, arch, None)
            .and_then(|path| Ok((binary::probe(&path)?, path)))
        {
            Ok((p, path)) => println!(
                "  ok       {name:<20} {} {} ({arch} guests)",
                path.display(),
                p.version
            ),
            Err(_) => println!(
                "  absent   {name:<20} (only {arch} guests need it: apt-get install {})",
                arch.emulator_package()
            ),
        }
    }

    for build in virtest_guest::qemu_builds::installed(&home) {
        let name = format!("QEMU {}", build.version);
        let probed = build
            .check()
            .map_err(|e| e.to_string())
            .and_then(|()| binary::probe(&build.binary).map_err(|e| e.to_string()));
        match probed {
            Ok(p) => println!(
                "  ok       {name:<20} {} {} (accelerators: {})",
                build.binary.display(),
                p.version,
                p.accelerators.join(", ")
            ),
            Err(e) => {
                println!("  broken   {name:<20} {e}");
                fixes.push(format!(
                    "rm -r {} && virtest bootstrap --qemu {}",
                    build.dir.display(),
                    build.version
                ));
            }
        }
    }

    println!("Accelerator");
    let host = HostKvm::detect();
    let decision = accel::choose(Accel::Auto, &host, has_kvm)?;
    println!(
        "  auto chooses {}: {}",
        decision.accel.as_str(),
        decision.reason
    );

    host_speed(&home, &mut fixes);

    println!("Guest bootstrap tools");
    for (tool, pkg) in [
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("dpkg-query", "dpkg"),
    ] {
        match which(tool) {
            Some(path) => println!("  ok       {tool:<20} {}", path.display()),
            None => {
                println!("  missing  {tool:<20} (needed only to fetch guest packages)");
                fixes.push(format!("apt-get install {pkg}"));
            }
        }
    }

    println!("Guest cache {}", home.display());
    for arch in virtest_qemu_cmdline::arch::ALL {
        let name = bootstrap::default_guest_name(arch);
        match Manifest::load(&cache::guest_dir(&home, name)) {
            Ok(m) => {
                let initrd = m.initrd_size();
                println!(
                    "  ok       {:<20} {arch}, kernel {}, initramfs {:.1} MiB, content {}",
                    m.name,
                    m.kernel_release.as_deref().unwrap_or("?"),
                    initrd as f64 / (1 << 20) as f64,
                    &m.content_hash[..12]
                );
            }
            Err(e) if arch.is_host() => {
                println!("  missing  {name:<20} {e}");
                fixes.push("virtest bootstrap".into());
            }
            Err(_) => println!(
                "  absent   {name:<20} (`virtest bootstrap --guest {name}` builds it; \
                 `virtest run` does when a test names it)"
            ),
        }
    }
    let debian = virtest_guest::guests::locate(virtest_guest::debian::DEBIAN_GUEST, &home);
    match virtest_guest::GuestDescription::load(&debian) {
        Ok((guest, _)) => {
            let bytes: u64 = guest
                .disks
                .iter()
                .filter_map(|d| match &d.source {
                    virtest_guest::description::DiskSource::File(p) => std::fs::metadata(p).ok(),
                    virtest_guest::description::DiskSource::Url { .. } => None,
                })
                .map(|m| m.len())
                .sum();
            println!(
                "  ok       {:<20} kernel {}, image {:.0} MiB, {}",
                guest.name,
                guest.kernel_release.as_deref().unwrap_or("?"),
                bytes as f64 / (1 << 20) as f64,
                guest.path.display()
            );
        }
        Err(_) => println!(
            "  absent   {:<20} optional: `virtest bootstrap --guest debian` builds it (as root, minutes)",
            virtest_guest::debian::DEBIAN_GUEST
        ),
    }

    let store = virtest_guest::snapshots::SnapshotStore::in_cache(&home);
    if let Err(e) = super::snapshot::tidy(&store) {
        println!("Ready snapshots: cannot be tidied: {e}");
    }
    match store.list() {
        Ok(snapshots) => {
            let total: u64 = snapshots.iter().map(|s| s.size()).sum();
            println!(
                "Ready snapshots {}: {}, {:.1} MiB (`virtest snapshot prune` removes stale ones)",
                store.root().display(),
                snapshots.len(),
                total as f64 / (1 << 20) as f64
            );
            for snapshot in &snapshots {
                println!("  {}", super::snapshot::line(snapshot));
            }
        }
        Err(e) => println!("Ready snapshots: cannot be listed: {e}"),
    }

    fixes.dedup();
    if fixes.is_empty() {
        println!("\nEverything virtest needs is here.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nTo fix, run:");
        for fix in &fixes {
            println!("  {fix}");
        }
        Ok(ExitCode::from(1))
    }
}

/// How fast this host runs guests (measured now when the cache has no
/// measure for this QEMU and accelerator), and the timeouts that gives.
fn host_speed(home: &Path, fixes: &mut Vec<String>) {
    println!("Host speed");
    let target = match Target::resolve(None, Accel::Auto) {
        Ok(target) => target,
        Err(e) => {
            println!("  not measured: {e}");
            return;
        }
    };
    let speed = match host_speed::cached(home, &target) {
        Some(speed) => speed,
        None if virtest_guest::guests::is_unbuilt(virtest_guest::guests::DEFAULT, home) => {
            println!("  not measured: the default guest, whose boot measures it, is not built");
            fixes.push("virtest bootstrap".into());
            return;
        }
        None => {
            println!(
                "  measuring: {} boots of the default guest (once per cache, QEMU and accelerator)",
                host_speed::RUNS
            );
            let measured = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|runtime| {
                    runtime
                        .block_on(host_speed::measure(home, &target))
                        .map_err(|e| e.to_string())
                });
            match measured {
                Ok(speed) => speed,
                Err(e) => {
                    println!("  broken   measuring failed: {e}");
                    return;
                }
            }
        }
    };
    let runs: Vec<String> = speed
        .boots_ms
        .iter()
        .map(|ms| format!("{:.1}", *ms as f64 / 1000.0))
        .collect();
    let scale = speed.scale();
    println!(
        "  the default guest boots in {:.1} s (median of {} s) on {} ({})",
        speed.boot().as_secs_f64(),
        runs.join(", "),
        speed.qemu_version,
        speed.accel
    );
    let scaled = |timeout: Duration| format!("{:.0} s", timeout.as_secs_f64() * scale);
    let login = |guest: &str| {
        let dir = virtest_guest::guests::locate(guest, home);
        virtest_guest::GuestDescription::load(&dir).map(|(guest, _)| guest.login.timeout)
    };
    let mut timeouts = Vec::new();
    for guest in virtest_guest::guests::BUILT_IN {
        if let Ok(timeout) = login(guest) {
            timeouts.push(format!("login ({guest}) {}", scaled(timeout)));
        }
    }
    let vm = virtest_guest::guests::locate(virtest_guest::guests::DEFAULT, home);
    if let Ok((guest, _)) = virtest_guest::GuestDescription::load(&vm) {
        timeouts.push(format!(
            "start {}",
            scaled(VmConfig::new(guest).start_timeout)
        ));
    }
    let migration = MigrationSpec::new(MigrationMode::Tcp).timeout;
    timeouts.push(format!("migration {}", scaled(migration)));
    println!(
        "  timeouts x{scale} (its boot against {:.0} s): {}",
        host_speed::REFERENCE_BOOT.as_secs_f64(),
        timeouts.join(", ")
    );
    println!(
        "  (`-p timeout_scale=off` keeps them as they are, `-p timeout_scale=N` scales them by N)"
    );
}

fn package(kind: BinaryKind) -> &'static str {
    match kind {
        BinaryKind::Img => "qemu-utils",
        BinaryKind::System | BinaryKind::Destination => "qemu-system-x86",
    }
}

/// Debian's QEMU and qemu-utils must come from the same release; installing
/// them together keeps apt from holding one back.
fn install_qemu_command() -> String {
    "apt-get update && apt-get install -y qemu-system-x86 qemu-utils".into()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
