//! The built-in Debian guest: a Debian 12 disk image made offline from
//! Debian's packages, booting from its own disk like a cloud image
//! (GRUB for SeaBIOS and for UEFI on one GPT disk), with systemd, OpenSSH,
//! cloud-init and the guest agent. Nothing secret is baked in: each VM's
//! cloud-init seed brings the login key, and host keys are made at first
//! boot.
//!
//! The build, as root: `mmdebstrap` into a directory, a few files and
//! unit links written, the directory made a bootable disk
//! (`boot_disk`), then `qemu-img convert` to qcow2.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command;
use crate::description::{
    BootFile, CloudInitFile, DESCRIPTION_FILE, GuestDescription, GuestFile, LoginFile, MachineFile,
    ReadyFile, ReadyKind,
};
use crate::error::{Error, IoContext, Result};
use crate::manifest::hex;

/// The guest's name in the cache.
pub const DEBIAN_GUEST: &str = "debian";

/// The image file in the guest's directory.
const IMAGE: &str = "debian-12.qcow2";

/// The build record beside the image.
const BUILD_FILE: &str = "build.json";

/// The Debian release.
const SUITE: &str = "bookworm";

/// What the guest is made of, beyond mmdebstrap's `apt` variant.
const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "openssh-server",
    "cloud-init",
    "qemu-guest-agent",
    "netbase",
    "iproute2",
    // The same small tools as the default guest, so one test's commands
    // run on both: nc, httpd, wget, usleep, sha256sum.
    "busybox",
    // A TPM's tools, for a VM with `tpm = true` (seal, unseal, PCRs).
    "tpm2-tools",
    // Secure Boot: the Microsoft-signed shim and Debian-signed GRUB the
    // ESP boots through (the kernel is signed already), and mokutil.
    "shim-signed",
    "grub-efi-amd64-signed",
    "mokutil",
];

/// busybox applets Debian has no command of its own for, installed as
/// commands (`/usr/local/bin/wget` runs `busybox wget`), so the same
/// command line runs on both built-in guests.
const BUSYBOX_COMMANDS: &[&str] = &["wget", "httpd", "nc", "usleep"];

/// The serial console logs root in by itself, as the default guest's
/// does: `vm.serial()` needs no password, so a VM from a ready snapshot
/// (which no password shapes) has it. Only the VM's owner reaches the
/// console (its socket is in the VM's private runtime directory).
const SERIAL_AUTOLOGIN: &str = "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM\n";

/// The virtual disk's size; the image stores only what is used.
const DISK_BYTES: u64 = 2 << 30;

/// The EFI system partition's size.
const ESP_BYTES: u64 = 64 << 20;

/// The kernel command line GRUB boots.
const CMDLINE: &str = "root=LABEL=root ro console=tty0 console=ttyS0,115200 quiet";

/// Only the drivers a VM needs in the initramfs: it loads much faster
/// from disk than Debian's default of nearly every module.
const INITRAMFS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "ext4",
    "crc32c_generic",
];

/// cloud-init: only the NoCloud seed, no network rendering (networkd
/// does DHCP), one host key type (ed25519 is fast to make), and module
/// lists cut to what a test guest uses. The seed's ready line is a
/// per-boot script, run by the final stage.
const CLOUD_CFG: &str = "\
datasource_list: [NoCloud, None]
network: {config: disabled}
ssh_genkeytypes: [ed25519]
ssh_deletekeys: true
cloud_init_modules: [migrator, seed_random, bootcmd, write-files, set_hostname, update_hostname, update_etc_hosts, users-groups, ssh, set-passwords]
cloud_config_modules: [runcmd]
cloud_final_modules: [write-files-deferred, scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user, final-message]
";

/// DHCP on the first NIC through systemd-networkd.
const NETWORK: &str = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n";

/// Units a test guest does without: timers that wake to do upkeep.
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    // The NoCloud seed is read by the network stage alike; the local
    // stage only cost a second Python start (measured: 12 s to SSH).
    "cloud-init-local.service",
];

/// How to build the Debian guest.
#[derive(Debug, Clone)]
pub struct DebianOptions {
    /// The cache directory.
    pub home: PathBuf,
    /// Rebuild even when the cached image is current.
    pub force: bool,
}

/// What [`bootstrap_debian`] did.
#[derive(Debug)]
pub struct DebianBuilt {
    /// The guest's description.
    pub description: GuestDescription,
    /// Why it was rebuilt; `None` when the cache was current.
    pub rebuilt: Option<String>,
    /// The image's size on disk, in bytes.
    pub image_bytes: u64,
    /// Each step and how long it took.
    pub steps: Vec<(&'static str, Duration)>,
}

/// The build record: what the image was made from, and the image.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct BuildRecord {
    inputs: String,
    kernel_release: String,
    image_bytes: u64,
    image_sha256: String,
}

/// Builds the Debian guest into the cache (a no-op when it is current),
/// and writes its `guest.toml`.
pub fn bootstrap_debian(opts: &DebianOptions) -> Result<DebianBuilt> {
    let mut steps = Vec::new();
    let mut step = |name, since: &mut Instant| {
        steps.push((name, since.elapsed()));
        *since = Instant::now();
    };
    let mut since = Instant::now();
    crate::cache::ensure_writable(&opts.home)?;
    let guests = opts.home.join("guests");
    crate::cache::ensure_writable(&guests)?;
    let lock_path = guests.join(format!("{DEBIAN_GUEST}.lock"));
    let lock = fs::File::create(&lock_path).io_context("creating", &lock_path)?;
    lock.lock().io_context("locking", &lock_path)?;
    let dir = crate::cache::guest_dir(&opts.home, DEBIAN_GUEST);
    let inputs = inputs();
    let reason = if opts.force {
        "a rebuild was asked for".to_string()
    } else {
        match current(&dir, &inputs) {
            Ok(record) => {
                let (description, _) = GuestDescription::load(&dir.join(DESCRIPTION_FILE))?;
                step("verify", &mut since);
                return Ok(DebianBuilt {
                    description,
                    rebuilt: None,
                    image_bytes: record.image_bytes,
                    steps,
                });
            }
            Err(reason) => reason,
        }
    };
    tracing::info!(%reason, "building the Debian guest");
    check_tools()?;
    let work = crate::bootstrap::WorkDir::create(&opts.home.join("tmp"))?;
    let root = work.path().join("root");
    mmdebstrap(&root)?;
    step("mmdebstrap", &mut since);
    let kernel_release = customize(&root)?;
    step("configure", &mut since);

    let build = crate::bootstrap::WorkDir::create(&guests)?;
    let raw = work.path().join("disk.raw");
    crate::boot_disk::make(&root, &raw, work.path(), DISK_BYTES, ESP_BYTES)?;
    step("disk", &mut since);
    fs::remove_dir_all(&root).io_context("removing", &root)?;
    command::run(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(build.path().join(IMAGE)),
        "qemu-utils",
    )?;
    step("qcow2", &mut since);

    let record = crate::manifest::FileRecord::of(build.path(), IMAGE)?;
    let record = BuildRecord {
        inputs,
        kernel_release: kernel_release.clone(),
        image_bytes: record.size,
        image_sha256: record.sha256,
    };
    let json = serde_json::to_string_pretty(&record).expect("records serialize");
    fs::write(build.path().join(BUILD_FILE), json)
        .io_context("writing", build.path().join(BUILD_FILE))?;
    let text = format!(
        "# Written by `virtest bootstrap --guest debian`; rewritten with it.\n{}",
        description_file(&kernel_release).to_toml()
    );
    fs::write(build.path().join(DESCRIPTION_FILE), text)
        .io_context("writing", build.path().join(DESCRIPTION_FILE))?;
    build.replace(&dir)?;
    step("install", &mut since);
    drop(lock);
    let (description, _) = GuestDescription::load(&dir.join(DESCRIPTION_FILE))?;
    Ok(DebianBuilt {
        description,
        rebuilt: Some(reason),
        image_bytes: record.image_bytes,
        steps,
    })
}

/// The guest's description: boots its disk through the firmware, root
/// logs in with the key of the VM's seed, ready once cloud-init has run.
fn description_file(kernel_release: &str) -> GuestFile {
    GuestFile {
        name: Some(DEBIAN_GUEST.into()),
        kernel_release: Some(kernel_release.into()),
        arch: None,
        boot: BootFile::default(),
        disks: vec![crate::description::DiskFile {
            path: Some(IMAGE.into()),
            format: Some(crate::description::DiskFormat::Qcow2),
            ..Default::default()
        }],
        login: LoginFile {
            user: "root".into(),
            // Under TCG a systemd guest with cloud-init takes a while.
            timeout: Some(240.0),
            ..Default::default()
        },
        ready: ReadyFile {
            wait_for: ReadyKind::CloudInit,
            line: None,
        },
        cloud_init: CloudInitFile {
            enabled: true,
            user_data: Vec::new(),
        },
        machine: MachineFile {
            memory: Some(512),
            ..Default::default()
        },
        shares: Vec::new(),
    }
}

/// A hash of everything the image is made from.
fn inputs() -> String {
    let mut hasher = Sha256::new();
    for part in [SUITE, CMDLINE, CLOUD_CFG, NETWORK, SERIAL_AUTOLOGIN] {
        hasher.update(part);
        hasher.update([0]);
    }
    for list in [PACKAGES, INITRAMFS_MODULES, MASKED_UNITS, BUSYBOX_COMMANDS] {
        hasher.update(list.join(","));
        hasher.update([0]);
    }
    hasher.update(DISK_BYTES.to_le_bytes());
    hasher.update(crate::boot_disk::ESP_LAYOUT);
    hex(&hasher.finalize())
}

/// The cached build's record when it is current; else why not.
fn current(dir: &Path, inputs: &str) -> std::result::Result<BuildRecord, String> {
    if !dir.exists() {
        return Err("there is none yet".into());
    }
    let text = fs::read_to_string(dir.join(BUILD_FILE))
        .map_err(|e| format!("its build record cannot be read ({e})"))?;
    let record: BuildRecord =
        serde_json::from_str(&text).map_err(|e| format!("its build record is damaged ({e})"))?;
    if record.inputs != inputs {
        return Err("its recipe changed".into());
    }
    let size = fs::metadata(dir.join(IMAGE)).map(|m| m.len()).unwrap_or(0);
    if size != record.image_bytes {
        return Err(format!(
            "its image is {size} bytes, recorded as {}",
            record.image_bytes
        ));
    }
    if !dir.join(DESCRIPTION_FILE).exists() {
        return Err("its guest.toml is missing".into());
    }
    Ok(record)
}

/// The host programs and files the build uses, each with its package.
fn check_tools() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::NeedsRoot {
            what: "building the Debian guest (mmdebstrap installs packages into a directory)",
        });
    }
    let programs = [
        ("mmdebstrap", "mmdebstrap"),
        ("sfdisk", "fdisk"),
        ("mkfs.ext4", "e2fsprogs"),
        ("grub-mkimage", "grub-common"),
        ("systemctl", "systemd"),
        ("qemu-img", "qemu-utils"),
    ];
    for (program, package) in programs {
        if which(program).is_none() {
            return Err(Error::ToolMissing {
                program: program.into(),
                package,
            });
        }
    }
    for (dir, package) in [
        ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin"),
    ] {
        if !Path::new(dir).join("normal.mod").is_file() {
            return Err(Error::ToolMissing {
                program: format!("GRUB modules in {dir}"),
                package,
            });
        }
    }
    Ok(())
}

/// Installs Debian into `root`. The initramfs is told, before the kernel
/// is installed, to hold only the drivers a VM needs.
fn mmdebstrap(root: &Path) -> Result<()> {
    let modules = INITRAMFS_MODULES.join("\\n");
    let essential_hook = format!(
        "mkdir -p \"$1/etc/initramfs-tools/conf.d\" && \
         printf 'MODULES=list\\n' > \"$1/etc/initramfs-tools/conf.d/virtest\" && \
         printf '{modules}\\n' > \"$1/etc/initramfs-tools/modules\""
    );
    command::run(
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--quiet"])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg("--aptopt=Acquire::Languages \"none\"")
            .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg(format!("--essential-hook={essential_hook}"))
            .arg(SUITE)
            .arg(root),
        "mmdebstrap",
    )
    .map(drop)
}

/// Writes the guest's configuration into `root`; returns the kernel
/// release installed.
fn customize(root: &Path) -> Result<String> {
    let write = |path: &str, text: &str| -> Result<()> {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).io_context("creating", parent)?;
        }
        fs::write(&file, text).io_context("writing", &file)
    };
    write("etc/fstab", "LABEL=root / ext4 defaults,discard 0 1\n")?;
    write("etc/hostname", "debian\n")?;
    // Empty: every VM's systemd makes its own at boot.
    write("etc/machine-id", "")?;
    write("etc/systemd/network/80-virtest-dhcp.network", NETWORK)?;
    write("etc/cloud/cloud.cfg.d/90-virtest.cfg", CLOUD_CFG)?;
    write(
        "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
        SERIAL_AUTOLOGIN,
    )?;
    for command in BUSYBOX_COMMANDS {
        let link = root.join("usr/local/bin").join(command);
        fs::create_dir_all(link.parent().expect("a directory"))
            .io_context("creating", link.parent().expect("a directory"))?;
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/busybox", &link).io_context("linking", &link)?;
    }
    write(
        "boot/grub/grub.cfg",
        &format!("set timeout=0\nlinux /vmlinuz {CMDLINE}\ninitrd /initrd.img\nboot\n"),
    )?;
    let ssh = root.join("etc/ssh");
    for entry in fs::read_dir(&ssh).io_context("reading", &ssh)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path()).io_context("removing", entry.path())?;
        }
    }
    let systemctl = |verb: &str, units: &[&str]| {
        command::run(
            Command::new("systemctl")
                .arg(format!("--root={}", root.display()))
                .arg("--quiet")
                .arg(verb)
                .args(units),
            "systemd",
        )
        .map(drop)
    };
    systemctl("enable", &["systemd-networkd.service"])?;
    systemctl("mask", MASKED_UNITS)?;
    let boot = root.join("boot");
    fs::read_dir(&boot)
        .io_context("reading", &boot)?
        .flatten()
        .find_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .ok_or_else(|| Error::KernelImage {
            path: boot.clone(),
            reason: "mmdebstrap installed no kernel".into(),
        })
}

/// `program` on PATH, or in the sbin directories PATH may lack.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_reads_back() {
        let text = description_file("6.1.0-1-amd64").to_toml();
        let (guest, warnings) =
            GuestDescription::parse(&text, Path::new("/cache/guests/debian/guest.toml")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(guest.cloud_init.enabled);
        assert_eq!(guest.boot.kernel, None);
        assert_eq!(guest.disks.len(), 1);
        assert_eq!(guest.login.user, "root");
    }
}
