//! `virtest guest check`: validate a guest description and show the QEMU
//! command line a VM of it gets.

use std::process::ExitCode;

use virtest_guest::description::DiskSource;
use virtest_qemu_cmdline::accel::Chosen;
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_vm::{ConsoleOutput, GuestLaunch, Overlay, UefiFiles};

use super::CliResult;

/// Flags of `virtest guest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GuestCommand {
    /// Validate a guest description (a guest.toml, its directory, or a
    /// built-in name) and print the QEMU command line it gives.
    Check {
        /// The guest.toml, its directory, or `default` / `debian`.
        guest: String,
    },
}

pub fn run(args: Args) -> CliResult {
    match args.command {
        GuestCommand::Check { guest } => check(&guest),
    }
}

fn check(spec: &str) -> CliResult {
    let (guest, warnings) = virtest_guest::guests::load(spec)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let mut problems = Vec::new();
    if let Some(kernel) = &guest.boot.kernel {
        for file in std::iter::once(&kernel.kernel).chain(&kernel.initrd) {
            if !file.is_file() {
                problems.push(format!("`{}` does not exist", file.display()));
            }
        }
    }
    if let Some(key) = &guest.login.key
        && !key.is_file()
    {
        problems.push(format!("login key `{}` does not exist", key.display()));
    }
    problems.extend(disk_problems(&guest));
    problems.extend(memory_problem(&guest));
    // The overlays and firmware files a VM would get, named as a VM's are.
    let overlays: Vec<Overlay> = guest
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| Overlay {
            path: format!("<vm>/disks/disk{index}.qcow2").into(),
            base: match &disk.source {
                DiskSource::File(p) => p.clone(),
                DiskSource::Url { url, .. } => url.into(),
            },
            base_format: disk.format,
        })
        .collect();
    let uefi = UefiFiles::of(
        guest.boot.firmware,
        guest.arch,
        None,
        "<vm>/disks/uefi-vars.fd".into(),
    );
    let console = ConsoleOutput::Connect("<vm>/console.sock".into());
    let launch = GuestLaunch {
        // The installed QEMU's, where there is one: the command line
        // shown is the one this machine would run.
        qemu_version: binary::find_for(BinaryKind::System, guest.arch, None)
            .and_then(|qemu| binary::probe(&qemu))
            .ok()
            .map(|probe| probe.version),
        vga: true,
        qmp_socket: Some("<vm>/qmp.sock".into()),
        allow_reboot: true,
        disks: &overlays,
        uefi: Some(&uefi),
        seed: guest
            .cloud_init
            .enabled
            .then_some(std::path::Path::new("<vm>/disks/seed.img")),
        ..GuestLaunch::new(
            &guest,
            guest.arch.system_emulator().into(),
            Chosen::Tcg,
            console,
        )
    };
    println!("guest `{}` ({})", guest.name, guest.path.display());
    for overlay in &overlays {
        println!(
            "  disk {} ({}), each VM writes to its own overlay",
            overlay.base.display(),
            overlay.base_format.as_str()
        );
    }
    println!(
        "  logs in as {} on port {}",
        guest.login.user, guest.login.port
    );
    println!("  command line:\n    {}", launch.cmdline().display());
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        Ok(ExitCode::from(1))
    }
}

/// What is wrong with the guest's disk images, asked of qemu-img as a
/// run would (format, backing chain, loops).
fn disk_problems(guest: &virtest_guest::GuestDescription) -> Vec<String> {
    let files: Vec<_> = guest
        .disks
        .iter()
        .filter_map(|disk| match &disk.source {
            DiskSource::File(path) => Some((path.clone(), disk.format)),
            DiskSource::Url { .. } => None,
        })
        .collect();
    if files.is_empty() {
        return Vec::new();
    }
    let qemu_img = match binary::find(BinaryKind::Img, None) {
        Ok(qemu_img) => qemu_img,
        Err(e) => return vec![format!("the disk images cannot be checked: {e}")],
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return vec![format!("the disk images cannot be checked: {e}")],
    };
    files
        .iter()
        .filter_map(|(path, format)| {
            let checked = runtime.block_on(virtest_vm::check_image(&qemu_img, path, *format));
            checked
                .err()
                .map(|why| format!("disk image `{}`: {why}", path.display()))
        })
        .collect()
}

/// The guest's memory, when this machine has less in all.
fn memory_problem(guest: &virtest_guest::GuestDescription) -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let wanted = u64::from(guest.machine.memory_mib);
    (wanted > total_kib >> 10).then(|| {
        format!(
            "`machine.memory` is {wanted} MiB, more than this machine has ({} MiB)",
            total_kib >> 10
        )
    })
}
