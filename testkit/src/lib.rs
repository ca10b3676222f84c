#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `guests`: the built-in guests, bootstrapped once per test binary,
//!   a `guest.toml` written by hand, and the cache's QEMU builds.
//! - `qemu`: [`Qemu`], a guest booted by a command line built here and
//!   `std::process`, for the layers below `vm`.
//! - `slots`: [`guest_slots`], how many guests a test binary runs at once.
//! - `process`: whether a process lives, who its children are, waiting
//!   for a condition.
//! - `logs`: [`TestLogs`], a test's log directory, kept with its
//!   consoles' tails printed when the test fails.
//! - `tmpfs`: [`small_disk`], a disk of its own to fill (needs root).
//! - `tpm`: a guest's TPM extended and read without tpm2-tools.
#![deny(missing_docs)]

mod guests;
mod logs;
mod process;
mod qemu;
mod slots;
mod tmpfs;
pub mod tpm;

pub use guests::{
    debian, default_arm64, description, guest, qemu_build, write_guest_toml, write_guest_toml_of,
};
pub use logs::{TestLogs, files_under, test_logs};
pub use process::{
    Reaped, alive, children_of, eventually, is_qemu, is_root, on_demand, processes_with,
};
pub use qemu::{Qemu, QemuOptions};
pub use slots::{GuestSlots, guest_slots};
pub use tmpfs::{SmallDisk, small_disk};

/// The SHA-256 of a file, hex (by `sha256sum`, as a user would check).
pub fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_string()
}

/// Writes the shell script `text` to `path`, executable (a fake or
/// wrapped QEMU, swtpm or qemu-img).
pub fn write_script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("writing a script");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(path, executable).expect("making a script executable");
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a port on 127.0.0.1")
        .port()
}
