//! The built-in guests, bootstrapped once per test binary (a no-op when
//! the cache is current), and a guest described by hand.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use virtest_guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest_guest::debian::{DebianOptions, bootstrap_debian};
use virtest_guest::{GuestDescription, Manifest, cache};

/// The default guest's manifest.
pub fn guest() -> &'static Manifest {
    static GUEST: OnceLock<Manifest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let home = cache::default_home().expect("virtest's cache directory");
        bootstrap(&BootstrapOptions::new(home))
            .expect("bootstrapping the default guest")
            .manifest
    })
}

/// The default guest's description (its `guest.toml`).
pub fn description() -> &'static GuestDescription {
    static DESCRIPTION: OnceLock<GuestDescription> = OnceLock::new();
    DESCRIPTION.get_or_init(|| guest().description().expect("the default guest.toml"))
}

/// The default guest for arm64 (`default-arm64`), built once into the
/// cache from Debian's arm64 packages (fetched the first time).
pub fn default_arm64() -> &'static GuestDescription {
    static ARM64: OnceLock<GuestDescription> = OnceLock::new();
    ARM64.get_or_init(|| {
        let home = cache::default_home().expect("virtest's cache directory");
        let options = BootstrapOptions::for_arch(home, virtest_guest::description::Arch::Aarch64)
            .expect("the arm64 guest's package sources");
        bootstrap(&options)
            .expect("bootstrapping the arm64 default guest")
            .manifest
            .description()
            .expect("the arm64 guest.toml")
    })
}

/// The Debian guest, built once into the cache (a no-op when current;
/// minutes the first time, as root).
pub fn debian() -> &'static GuestDescription {
    static DEBIAN: OnceLock<GuestDescription> = OnceLock::new();
    DEBIAN.get_or_init(|| {
        let home = cache::default_home().expect("virtest's cache directory");
        bootstrap_debian(&DebianOptions { home, force: false })
            .expect("building the Debian guest")
            .description
    })
}

/// The cache's build of QEMU `version` (`10.0`), fetched from Debian's
/// backports the first time (as `virtest bootstrap --qemu VERSION`
/// does).
pub fn qemu_build(version: &str) -> PathBuf {
    use virtest_guest::qemu_builds::{self, Backports};
    let home = cache::default_home().expect("virtest's cache directory");
    let fetched = match qemu_builds::find(&home, version) {
        Some(build) => Ok(build),
        None => Backports::of_host().and_then(|b| qemu_builds::fetch(&home, version, &b)),
    };
    match fetched {
        Ok(build) => build.binary,
        Err(e) => panic!("fetching QEMU {version} into {}: {e}", home.display()),
    }
}

/// Writes `dir/guest.toml`: the default guest as a user would describe
/// it by hand (absolute paths, its key and password), plus `extra` TOML
/// (say, a `[[disks]]` table).
pub fn write_guest_toml(dir: &Path, extra: &str) -> PathBuf {
    write_guest_toml_of(description(), dir, "", extra)
}

/// [`write_guest_toml`] for a built-in kernel guest `guest` (the default
/// guest of either architecture, its `arch` written out), with `boot`
/// lines added to its `[boot]` table (`firmware = "uefi"`, say).
pub fn write_guest_toml_of(
    guest: &GuestDescription,
    dir: &Path,
    boot: &str,
    extra: &str,
) -> PathBuf {
    let kernel = guest
        .boot
        .kernel
        .as_ref()
        .expect("the default guest boots a kernel");
    let login = &guest.login;
    let text = format!(
        r#"name = "mine"
arch = "{arch}"

[boot]
{boot}
kernel = "{kernel}"
initrd = "{initrd}"
cmdline = "{cmdline}"

[login]
user = "{user}"
password = "{password}"
key = "{key}"

[ready]
wait_for = "console"
line = "virtest-guest-ready"

{extra}
"#,
        arch = guest.arch,
        kernel = kernel.kernel.display(),
        initrd = kernel.initrd.as_ref().expect("an initramfs").display(),
        cmdline = kernel.cmdline,
        user = login.user,
        password = login.password.as_deref().expect("a password"),
        key = login.key.as_ref().expect("a key").display(),
    );
    let path = dir.join("guest.toml");
    std::fs::write(&path, text).expect("writing guest.toml");
    path
}
