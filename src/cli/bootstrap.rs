//! `virtest bootstrap`: build the default guest.

use std::path::PathBuf;
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
    /// Do not use files from the host.
    #[arg(long)]
    no_host: bool,
    /// Do not fetch packages with apt-get.
    #[arg(long)]
    no_apt: bool,
    /// Rebuild even when the cached guest is current.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> CliResult {
    let home = match args.home {
        Some(home) => home,
        None => cache::default_home()?,
    };
    let mut opts = BootstrapOptions::new(home);
    opts.user.kernel = args.kernel;
    opts.user.modules = args.modules;
    opts.user.busybox = args.busybox;
    opts.user.dropbear = args.dropbear;
    opts.force = args.force;
    if args.no_host {
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
