//! Building the default guest into the cache: locate the pieces, decide
//! whether the cached guest is still good, and if not build a new one
//! beside it and swap it in.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::apt::Apt;
use crate::cache;
use crate::description::Arch;
use crate::elf;
use crate::error::{Error, IoContext, Result};
use crate::kernel;
use crate::keys::GuestSecrets;
use crate::manifest::{self, Credentials, FileRecord, HostKey, Manifest, QemuHints, Sources};
use crate::modules::ModuleTree;
use crate::rootfs::{self, RootfsSpec};
use crate::sources::{self, HostPaths, Located, UserPaths};

mod materialize;

use materialize::{binary_in, kernel_files, libraries_of, materialize};

/// The name of the default guest.
pub const DEFAULT_GUEST: &str = "default";

/// The line the default guest prints when sshd listens.
pub const READY_MARKER: &str = "virtest-guest-ready";

/// Modules the default guest loads on every architecture (their
/// dependencies come along; one built into the kernel is skipped).
const COMMON_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "evdev",
    "9pnet_virtio",
    "9p",
];

/// The name of the default guest of `arch`.
pub fn default_guest_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => DEFAULT_GUEST,
        Arch::Aarch64 => crate::guests::DEFAULT_ARM64,
    }
}

/// The architecture of the default guest called `name` (`None`: no
/// default guest is).
pub fn default_guest_arch(name: &str) -> Option<Arch> {
    crate::description::arch::ALL
        .into_iter()
        .find(|&arch| default_guest_name(arch) == name)
}

/// The kernel command line of the default guest of `arch`.
pub fn cmdline(arch: Arch) -> String {
    format!("console={} panic=-1 quiet", arch.serial_console())
}

/// Modules the default guest of `arch` loads: the common ones, and what
/// delivers the power button (QEMU's `system_powerdown`) as a key press
/// acpid reads: the ACPI button on x86, the `virt` machine's GPIO key
/// on Arm.
pub fn modules(arch: Arch) -> Vec<&'static str> {
    let power_button = match arch {
        Arch::X86_64 => "button",
        Arch::Aarch64 => "gpio_keys",
    };
    let mut modules = COMMON_MODULES.to_vec();
    modules.push(power_button);
    modules
}

/// How to bootstrap.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The cache directory.
    pub home: PathBuf,
    /// Paths the user gave.
    pub user: UserPaths,
    /// Where to look on the host; `None` skips the host.
    pub host: Option<HostPaths>,
    /// How to fetch packages; `None` fetches nothing.
    pub apt: Option<Apt>,
    /// Rebuild even if the cached guest is good.
    pub force: bool,
    /// The guest's architecture.
    pub arch: Arch,
}

impl BootstrapOptions {
    /// Defaults for `home`: host files, then apt.
    pub fn new(home: PathBuf) -> BootstrapOptions {
        BootstrapOptions {
            apt: Some(Apt::system(home.join("packages"))),
            home,
            user: UserPaths::default(),
            host: Some(HostPaths::default()),
            force: false,
            arch: Arch::host().unwrap_or_default(),
        }
    }

    /// Defaults for the default guest of `arch` in `home`. The host's
    /// own architecture is [`BootstrapOptions::new`]. Another one takes
    /// nothing from the host: its packages come from the host's Debian
    /// release (with its updates, and its security updates where the
    /// host takes them) on the mirrors the host's apt sources name (as
    /// [`crate::qemu_builds::Backports::of_host`] reads them), fetched
    /// by an apt state of its own for that architecture, under
    /// `home/packages/<arch>`, without touching the host's dpkg.
    ///
    /// ```no_run
    /// use virtest_guest::bootstrap::{bootstrap, BootstrapOptions};
    /// use virtest_guest::description::Arch;
    /// let home = virtest_guest::cache::default_home()?;
    /// let built = bootstrap(&BootstrapOptions::for_arch(home, Arch::Aarch64)?)?;
    /// assert_eq!(built.manifest.name, "default-arm64");
    /// # Ok::<(), virtest_guest::Error>(())
    /// ```
    pub fn for_arch(home: PathBuf, arch: Arch) -> Result<BootstrapOptions> {
        if arch.is_host() {
            return Ok(BootstrapOptions::new(home));
        }
        let mirror =
            crate::qemu_builds::Backports::of_host().map_err(|e| Error::NoPackageSource {
                arch: arch.as_str(),
                reason: e.to_string(),
            })?;
        let state = home.join("packages").join(arch.debian());
        std::fs::create_dir_all(&state).io_context("creating", &state)?;
        let release = mirror.release();
        let mut sources: String = [release.to_string(), format!("{release}-updates")]
            .iter()
            .map(|suite| mirror.sources_line_for(suite))
            .collect();
        // Security updates (the kernel's among them), where the host
        // takes them from.
        let security = format!("{release}-security");
        if let Some((mirror, keyring)) = crate::qemu_builds::host_source(&security) {
            sources.push_str(&format!(
                "deb [signed-by={}] {mirror} {security} main\n",
                keyring.display()
            ));
        }
        let list = state.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&list, &sources).io_context("writing", &list)?;
            // Lists of other sources are not these.
            let _ = fs::remove_dir_all(state.join("lists"));
        }
        Ok(BootstrapOptions {
            apt: Some(Apt::foreign(&state, arch.debian())),
            host: None,
            arch,
            ..BootstrapOptions::new(home)
        })
    }
}

/// What bootstrap did.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The guest, as now cached.
    pub manifest: Manifest,
    /// `None` when the cache was already good; else why it was built.
    pub rebuilt: Option<String>,
    /// Time spent in each step.
    pub steps: Vec<(&'static str, Duration)>,
}

/// A program the default guest is built with, as [`sources::binary`]
/// looks for it and an error names what is missing.
struct Part {
    /// Its name in errors.
    what: &'static str,
    /// The `virtest bootstrap` flag that names one.
    flag: &'static str,
    /// The Debian package it comes from.
    package: &'static str,
    /// Whether a file is a usable one (`Err`: why not).
    accept: fn(&Path) -> std::result::Result<(), String>,
}

const BUSYBOX: Part = Part {
    what: "static busybox",
    flag: "--busybox PATH",
    package: "busybox-static",
    accept: sources::accept_static,
};

const DROPBEAR: Part = Part {
    what: "dropbear",
    flag: "--dropbear PATH",
    package: "dropbear-bin",
    accept: sources::accept_elf,
};

const QEMU_GA: Part = Part {
    what: "the guest agent (qemu-ga)",
    flag: "--qemu-ga PATH",
    package: "qemu-guest-agent",
    accept: sources::accept_elf,
};

/// Makes sure the default guest is built and good, building it if not.
pub fn bootstrap(opts: &BootstrapOptions) -> Result<Bootstrapped> {
    let mut steps = Steps::new();
    cache::ensure_writable(&opts.home)?;
    let guests = opts.home.join("guests");
    cache::ensure_writable(&guests)?;
    if let Some(apt) = &opts.apt {
        cache::ensure_writable(&apt.download_dir)?;
    }
    let arch = opts.arch;
    let name = default_guest_name(arch);
    let lock_path = guests.join(format!("{name}.lock"));
    let lock = fs::File::create(&lock_path).io_context("creating", &lock_path)?;
    lock.lock().io_context("locking", &lock_path)?;

    let secrets = GuestSecrets::load_or_create(&opts.home.join("keys"))?;
    if let Some(apt) = &opts.apt {
        apt.update_once()?;
    }
    let empty_host = HostPaths {
        boot_dir: PathBuf::new(),
        modules_root: PathBuf::new(),
        busybox: Vec::new(),
        dropbear: Vec::new(),
        qemu_ga: Vec::new(),
        lib_dirs: Vec::new(),
    };
    let host = opts.host.as_ref().unwrap_or(&empty_host);
    let apt = opts.apt.as_ref();
    let kernel_src = sources::kernel(&opts.user, host, apt, arch.debian())?;
    // A given file must also run on the guest's architecture.
    let binary = |user: Option<&Path>, host: &[PathBuf], part: &Part| {
        let accept = |path: &Path| (part.accept)(path).and_then(|()| elf::check_arch(path, arch));
        sources::binary(user, host, accept, apt, part.package).map_err(|tried| {
            Error::MissingComponent {
                what: part.what,
                flag: part.flag,
                package: part.package,
                tried,
            }
        })
    };
    let busybox_src = binary(opts.user.busybox.as_deref(), &host.busybox, &BUSYBOX)?;
    let dropbear_src = binary(opts.user.dropbear.as_deref(), &host.dropbear, &DROPBEAR)?;
    let qemu_ga_src = binary(opts.user.qemu_ga.as_deref(), &host.qemu_ga, &QEMU_GA)?;
    steps.done("locate");

    let inputs = inputs_fingerprint(
        arch,
        &[&kernel_src, &busybox_src, &dropbear_src, &qemu_ga_src],
        &secrets,
    );
    let guest_dir = cache::guest_dir(&opts.home, name);
    let reason = if opts.force {
        "a rebuild was asked for".to_string()
    } else {
        match Manifest::load(&guest_dir).and_then(|m| m.verify().map(|()| m)) {
            Ok(m) if m.inputs == inputs => {
                m.write_description()?;
                steps.done("verify");
                return Ok(Bootstrapped {
                    manifest: m,
                    rebuilt: None,
                    steps: steps.0,
                });
            }
            Ok(_) => "its sources changed".to_string(),
            Err(_) if !guest_dir.exists() => "there is none yet".to_string(),
            Err(e) => format!("the cached guest is not good: {e}"),
        }
    };
    tracing::info!(%reason, guest = name, "building the default guest");

    let work = WorkDir::create(&opts.home.join("tmp"))?;
    let build = WorkDir::create(&guests)?;
    let kernel = materialize(&kernel_src, apt, work.path(), "kernel", arch)?;
    let busybox = materialize(&busybox_src, apt, work.path(), "busybox", arch)?;
    let dropbear = materialize(&dropbear_src, apt, work.path(), "dropbear", arch)?;
    let qemu_ga = materialize(&qemu_ga_src, apt, work.path(), "qemu-ga", arch)?;
    steps.done("fetch");

    let (kernel_image, modules_dir, release) = kernel_files(&kernel)?;
    fs::copy(&kernel_image, build.path().join("vmlinuz")).io_context("copying", &kernel_image)?;
    let boot_kernel = match arch {
        // Arm's kernel image boots as it is.
        Arch::Aarch64 => {
            kernel::check_arm64_image(&kernel_image)?;
            "vmlinuz"
        }
        // x86's bzImage boots faster from the ELF inside it (its PVH
        // entry).
        Arch::X86_64 => match kernel::extract_vmlinux(&kernel_image)? {
            Some(vmlinux) => {
                fs::write(build.path().join("vmlinux"), vmlinux)
                    .io_context("writing", build.path().join("vmlinux"))?;
                "vmlinux"
            }
            None => {
                tracing::warn!(kernel = %kernel_image.display(), "kernel has no PVH entry; booting the bzImage");
                "vmlinuz"
            }
        },
    };
    steps.done("kernel");

    let module_files = match &modules_dir {
        Some(dir) => ModuleTree::open(dir)?.load_order(&modules(arch))?,
        None => {
            tracing::warn!(
                kernel = %kernel_image.display(),
                "no modules directory given: assuming virtio, virtio-net and the rest are built in"
            );
            Vec::new()
        }
    };
    let dropbear_bin = binary_in(&dropbear, "usr/sbin/dropbear");
    let qemu_ga_bin = binary_in(&qemu_ga, "usr/sbin/qemu-ga");
    let mut libraries = libraries_of(&dropbear_bin, &dropbear, host, apt, work.path(), arch)?;
    for library in libraries_of(&qemu_ga_bin, &qemu_ga, host, apt, work.path(), arch)? {
        if !libraries.iter().any(|l| l.guest_path == library.guest_path) {
            libraries.push(library);
        }
    }
    steps.done("resolve");

    fs::copy(&secrets.client_key_path, build.path().join("id_ed25519"))
        .io_context("copying", &secrets.client_key_path)?;
    fs::set_permissions(
        build.path().join("id_ed25519"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .io_context("securing", build.path().join("id_ed25519"))?;
    let authorized_key = GuestSecrets::public_line(&secrets.client_key);
    rootfs::write_initramfs(
        &RootfsSpec {
            busybox: &binary_in(&busybox, "bin/busybox"),
            dropbear: &dropbear_bin,
            qemu_ga: &qemu_ga_bin,
            libraries: &libraries,
            modules: &module_files,
            host_key: &secrets.dropbear_host_key(),
            authorized_key: &authorized_key,
            password_hash: &secrets.password_hash(),
            ready_marker: READY_MARKER,
            console: arch.serial_console(),
        },
        &build.path().join("initramfs.cpio.gz"),
    )?;
    // It holds the guest's host key and root's password hash.
    crate::private::make_private(&build.path().join("initramfs.cpio.gz"))?;
    steps.done("initramfs");

    let mut files = Vec::new();
    for name in [boot_kernel, "vmlinuz", "initramfs.cpio.gz", "id_ed25519"] {
        if !files.iter().any(|f: &FileRecord| f.path == Path::new(name)) {
            files.push(FileRecord::of(build.path(), name)?);
        }
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        name: name.into(),
        arch: arch.as_str().into(),
        kernel: boot_kernel.into(),
        kernel_image: "vmlinuz".into(),
        kernel_release: release,
        initrd: "initramfs.cpio.gz".into(),
        cmdline: cmdline(arch),
        ready_marker: READY_MARKER.into(),
        credentials: Credentials {
            user: "root".into(),
            password: secrets.password.clone(),
            private_key: "id_ed25519".into(),
            public_key: authorized_key,
        },
        host_key: HostKey {
            public: GuestSecrets::public_line(&secrets.host_key),
            fingerprint: GuestSecrets::fingerprint(&secrets.host_key),
        },
        ssh_port: 22,
        qemu: QemuHints {
            machine: arch.default_machine().into(),
            memory_mib: 256,
            console: arch.serial_console().into(),
            net_device: "virtio-net-pci".into(),
            devices: vec!["virtio-rng-pci".into()],
        },
        content_hash: manifest::content_hash(&files),
        files,
        sources: Sources {
            kernel: kernel_src.origin(),
            busybox: busybox_src.origin(),
            dropbear: dropbear_src.origin(),
            qemu_ga: qemu_ga_src.origin(),
        },
        inputs,
        dir: guest_dir.clone(),
    };
    manifest.save(build.path())?;
    Manifest {
        dir: build.path().to_path_buf(),
        ..manifest
    }
    .write_description()?;
    build.replace(&guest_dir)?;
    steps.done("install");
    drop(lock);
    Ok(Bootstrapped {
        manifest: Manifest::load(&guest_dir)?,
        rebuilt: Some(reason),
        steps: steps.0,
    })
}

/// A hash of every input: the recipe, each component's identity, and the
/// guest's secrets.
fn inputs_fingerprint(arch: Arch, located: &[&Located], secrets: &GuestSecrets) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rootfs::recipe_fingerprint());
    hasher.update(cmdline(arch));
    hasher.update(modules(arch).join(","));
    for l in located {
        hasher.update(l.origin().identity());
        hasher.update("\0");
    }
    hasher.update(GuestSecrets::public_line(&secrets.host_key));
    hasher.update(GuestSecrets::public_line(&secrets.client_key));
    hasher.update(secrets.password_hash());
    manifest::hex(&hasher.finalize())
}

/// Records how long each step took.
struct Steps(Vec<(&'static str, Duration)>, Instant);

impl Steps {
    fn new() -> Steps {
        Steps(Vec::new(), Instant::now())
    }

    fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.0.push((step, now - self.1));
        self.1 = now;
    }
}

/// A directory removed on drop unless it was moved into place.
pub(crate) struct WorkDir(Option<PathBuf>);

impl WorkDir {
    pub(crate) fn create(parent: &Path) -> Result<WorkDir> {
        fs::create_dir_all(parent).io_context("creating", parent)?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(".build-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).io_context("creating", &path)?;
        Ok(WorkDir(Some(path)))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().expect("work dir present until replaced")
    }

    /// Moves this directory to `dest`, replacing what was there.
    pub(crate) fn replace(mut self, dest: &Path) -> Result<()> {
        let path = self.0.take().expect("work dir present until replaced");
        let old = dest.with_extension(format!("old-{}", std::process::id()));
        if dest.exists() {
            fs::rename(dest, &old).io_context("moving aside", dest)?;
        }
        fs::rename(&path, dest).io_context("installing", dest)?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_dir_all(path);
        }
    }
}
