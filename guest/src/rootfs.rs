//! The initramfs of the default guest: busybox as init and userland,
//! dropbear with its libraries, the virtio modules, and the few files
//! that configure them, written as a gzip'd cpio archive.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;

use crate::cpio::CpioWriter;
use crate::elf::GuestFile;
use crate::error::{IoContext, Result};
use crate::modules::Module;

const INITTAB: &str = include_str!("../files/inittab");
const RC_S: &str = include_str!("../files/rcS");
const RC_K: &str = include_str!("../files/rcK");
const SHUTDOWN: &str = include_str!("../files/shutdown");
const POWER_BUTTON: &str = include_str!("../files/power-button");

/// Everything that goes into the initramfs.
pub struct RootfsSpec<'a> {
    /// A static busybox.
    pub busybox: &'a Path,
    /// The dropbear server binary.
    pub dropbear: &'a Path,
    /// The guest agent binary.
    pub qemu_ga: &'a Path,
    /// The interpreter and libraries of dropbear and the agent.
    pub libraries: &'a [GuestFile],
    /// Modules in load order.
    pub modules: &'a [Module],
    /// Dropbear's host key file.
    pub host_key: &'a [u8],
    /// The `authorized_keys` line for root.
    pub authorized_key: &'a str,
    /// Root's `/etc/shadow` password field.
    pub password_hash: &'a str,
    /// The line printed when sshd listens.
    pub ready_marker: &'a str,
    /// The serial console a login runs on (`ttyS0`).
    pub console: &'a str,
}

/// A fingerprint of the recipe itself (scripts and layout), so a change
/// to them rebuilds cached guests.
pub fn recipe_fingerprint() -> String {
    format!(
        "{INITTAB}{RC_S}{RC_K}{SHUTDOWN}{POWER_BUTTON}{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Writes the gzip'd cpio initramfs to `out` and returns its size.
pub fn write_initramfs(spec: &RootfsSpec<'_>, out: &Path) -> Result<u64> {
    let file = File::create(out).io_context("creating", out)?;
    let gz = GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    let mut cpio = CpioWriter::new(gz);
    add_tree(&mut cpio, spec).io_context("writing", out)?;
    let gz = cpio.finish().io_context("writing", out)?;
    let mut buffered = gz.finish().io_context("writing", out)?;
    buffered.flush().io_context("writing", out)?;
    let file = buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .io_context("writing", out)?;
    file.sync_all().io_context("writing", out)?;
    Ok(file.metadata().io_context("reading", out)?.len())
}

fn add_tree<W: Write>(cpio: &mut CpioWriter<W>, spec: &RootfsSpec<'_>) -> std::io::Result<()> {
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "etc/init.d",
        "etc/dropbear",
        "etc/acpi",
        "etc/acpi/PWRF",
        "proc",
        "sys",
        "dev",
        "run",
        "var",
        "var/log",
        "lib",
        "lib64",
        "lib/modules",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.dir("tmp", 0o1777)?;
    cpio.dir("root", 0o700)?;
    cpio.dir("root/.ssh", 0o700)?;
    // The kernel opens the console before anything mounts devtmpfs.
    cpio.char_device("dev/console", 0o600, 5, 1)?;

    cpio.file("bin/busybox", 0o755, &std::fs::read(spec.busybox)?)?;
    cpio.symlink("bin/sh", "busybox")?;
    cpio.symlink("init", "bin/busybox")?;
    cpio.file("usr/sbin/dropbear", 0o755, &std::fs::read(spec.dropbear)?)?;
    cpio.file("usr/sbin/qemu-ga", 0o755, &std::fs::read(spec.qemu_ga)?)?;
    for lib in spec.libraries {
        let path = lib.guest_path.trim_start_matches('/');
        cpio.file(path, 0o755, &std::fs::read(&lib.host_path)?)?;
    }
    let mut module_list = String::new();
    for module in spec.modules {
        cpio.file(
            &format!("lib/modules/{}.ko", module.name),
            0o644,
            &std::fs::read(&module.path)?,
        )?;
        module_list.push_str(&module.name);
        module_list.push('\n');
    }

    cpio.file("etc/modules", 0o644, module_list.as_bytes())?;
    cpio.file(
        "etc/inittab",
        0o644,
        INITTAB.replace("@CONSOLE@", spec.console).as_bytes(),
    )?;
    cpio.file(
        "etc/init.d/rcS",
        0o755,
        RC_S.replace("@READY_MARKER@", spec.ready_marker).as_bytes(),
    )?;
    cpio.file("etc/init.d/rcK", 0o755, RC_K.as_bytes())?;
    cpio.file("sbin/shutdown", 0o755, SHUTDOWN.as_bytes())?;
    cpio.file("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes())?;
    cpio.file("etc/hostname", 0o644, b"virtest\n")?;
    cpio.file(
        "etc/hosts",
        0o644,
        b"127.0.0.1 localhost\n127.0.1.1 virtest\n",
    )?;
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file("etc/group", 0o644, b"root:x:0:\ntty:x:5:\n")?;
    cpio.file("etc/shells", 0o644, b"/bin/sh\n")?;
    cpio.file(
        "etc/profile",
        0o644,
        b"export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n",
    )?;
    let shadow = format!("root:{}:19000:0:99999:7:::\n", spec.password_hash);
    cpio.file("etc/shadow", 0o600, shadow.as_bytes())?;
    cpio.file(
        "etc/dropbear/dropbear_ed25519_host_key",
        0o600,
        spec.host_key,
    )?;
    cpio.file(
        "root/.ssh/authorized_keys",
        0o600,
        format!("{}\n", spec.authorized_key).as_bytes(),
    )?;
    Ok(())
}
