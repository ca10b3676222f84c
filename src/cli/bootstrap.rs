//! `virtest bootstrap`: build the default guest, or the Debian guest;
//! or fetch another QEMU.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use virtest_guest::bootstrap::{self, BootstrapOptions};
use virtest_guest::cache;

use super::CliResult;

/// Flags of `virtest bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cache directory (default: $VIRTEST_HOME, else the XDG cache dir).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// A kernel image (bzImage/vmlinuz) to use instead of the host's or the package's.
    #[arg(long, value_name = "PATH", requires = "modules")]
    kernel: Option<PathBuf>,
    /// The kernel's modules directory (/lib/modules/<version>).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// A static busybox to use.
    #[arg(long, value_name = "PATH")]
    busybox: Option<PathBuf>,
    /// A dropbear binary to use.
    #[arg(long, value_name = "PATH")]
    dropbear: Option<PathBuf>,
    /// A guest agent binary (qemu-ga) to use.
    #[arg(long, value_name = "PATH")]
    qemu_ga: Option<PathBuf>,
    /// Do not use files from the host.
    #[arg(long)]
    no_host: bool,
    /// Do not fetch packages with apt-get.
    #[arg(long)]
    no_apt: bool,
    /// Rebuild even when the cached guest is current.
    #[arg(long)]
    force: bool,
    /// Which built-in guest: `default` (the tiny guest, seconds),
    /// `default-arm64` (the tiny guest for aarch64, from Debian's arm64
    /// packages, fetched once) or `debian` (Debian 12 from its packages
    /// with mmdebstrap, as root: minutes).
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = ["default", "default-arm64", "debian"])]
    guest: String,
    /// Instead of a guest, fetch QEMU VERSION (`10.0`: its newest
    /// `10.0.x`) from Debian's backports into the cache, for
    /// `-p qemu_bin=VERSION` and `-p qemu_dst_bin=VERSION`.
    #[arg(long, value_name = "VERSION", conflicts_with = "guest")]
    qemu: Option<String>,
}

pub fn run(args: Args) -> CliResult {
    let home = match args.home {
        Some(home) => home,
        None => cache::default_home()?,
    };
    if let Some(version) = args.qemu {
        return qemu(&home, &version);
    }
    if args.guest == virtest_guest::debian::DEBIAN_GUEST {
        return debian(home, args.force);
    }
    let arch = bootstrap::default_guest_arch(&args.guest).expect("clap checked the name");
    let mut opts = BootstrapOptions::for_arch(home, arch)?;
    opts.user.kernel = args.kernel;
    opts.user.modules = args.modules;
    opts.user.busybox = args.busybox;
    opts.user.dropbear = args.dropbear;
    opts.user.qemu_ga = args.qemu_ga;
    opts.force = args.force;
    if args.no_host || !arch.is_host() {
        opts.host = None;
    }
    if args.no_apt {
        opts.apt = None;
    }
    let done = bootstrap::bootstrap(&opts)?;
    let m = &done.manifest;
    match &done.rebuilt {
        None => println!("guest `{}` is current: {}", m.name, m.dir.display()),
        Some(reason) => {
            println!(
                "built guest `{}` because {reason}: {}",
                m.name,
                m.dir.display()
            );
            for (step, took) in &done.steps {
                println!("  {step:<10} {:>7.2} s", took.as_secs_f64());
            }
        }
    }
    let initrd = m.initrd_size();
    println!(
        "  kernel     {} ({})",
        m.kernel_path().display(),
        m.kernel_release.as_deref().unwrap_or("?")
    );
    println!(
        "  initramfs  {} ({:.1} MiB)",
        m.initrd_path().display(),
        initrd as f64 / (1 << 20) as f64
    );
    println!(
        "  manifest   {}",
        m.dir.join(virtest_guest::manifest::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn qemu(home: &Path, version: &str) -> CliResult {
    use virtest_guest::qemu_builds::{self, Backports};
    if !qemu_builds::is_version(version) {
        return Err(format!(
            "`--qemu {version}`: give a QEMU version, two or three numbers (`10.0`, `10.0.2`)"
        )
        .into());
    }
    if let Some(build) = qemu_builds::find(home, version) {
        println!(
            "QEMU {} is in the cache: {}",
            build.version,
            build.binary.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let backports = Backports::of_host()?;
    eprintln!(
        "virtest: fetching QEMU {version} from {} ({})...",
        backports.suite, backports.mirror
    );
    let started = std::time::Instant::now();
    let build = qemu_builds::fetch(home, version, &backports)?;
    println!(
        "fetched QEMU {} in {:.1} s: {}",
        build.version,
        started.elapsed().as_secs_f64(),
        build.binary.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn debian(home: PathBuf, force: bool) -> CliResult {
    use virtest_guest::debian::{DebianOptions, bootstrap_debian};
    eprintln!("virtest: checking the Debian guest (a build takes minutes)...");
    let done = bootstrap_debian(&DebianOptions { home, force })?;
    let guest = &done.description;
    match &done.rebuilt {
        None => println!(
            "guest `{}` is current: {}",
            guest.name,
            guest.dir().display()
        ),
        Some(reason) => {
            println!(
                "built guest `{}` because {reason}: {}",
                guest.name,
                guest.dir().display()
            );
            for (step, took) in &done.steps {
                println!("  {step:<10} {:>7.2} s", took.as_secs_f64());
            }
        }
    }
    println!(
        "  kernel     {}",
        guest.kernel_release.as_deref().unwrap_or("?")
    );
    println!(
        "  image      {:.0} MiB on disk",
        done.image_bytes as f64 / (1 << 20) as f64
    );
    println!("  guest.toml {}", guest.path.display());
    Ok(ExitCode::SUCCESS)
}
