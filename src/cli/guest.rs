//! `virtest guest check`: validate a guest description and show the QEMU
//! command line a VM of it gets.

use std::process::ExitCode;

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
    // The overlays and firmware files a VM would get, named as a VM's are.
    let overlays: Vec<Overlay> = guest
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| {
            if let virtest_guest::description::DiskSource::File(base) = &disk.source
                && !base.is_file()
            {
                problems.push(format!("disk image `{}` does not exist", base.display()));
            }
            Overlay {
                path: format!("<vm>/disks/disk{index}.qcow2").into(),
                base: match &disk.source {
                    virtest_guest::description::DiskSource::File(p) => p.clone(),
                    virtest_guest::description::DiskSource::Url { url, .. } => url.into(),
                },
                base_format: disk.format,
            }
        })
        .collect();
    let uefi = UefiFiles {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: "<vm>/disks/uefi-vars.fd".into(),
    };
    let console = ConsoleOutput::Connect("<vm>/console.sock".into());
    let launch = GuestLaunch {
        // The installed QEMU's, where there is one: the command line
        // shown is the one this machine would run.
        qemu_version: binary::find(BinaryKind::System, None)
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
        ..GuestLaunch::new(&guest, "qemu-system-x86_64".into(), Chosen::Tcg, console)
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
