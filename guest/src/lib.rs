//! Guest images for virtest: the default tiny guest, built offline from
//! distro packages in seconds, and the manifest the VM layer boots it from.
//!
//! The default guest is a Linux kernel (booted directly as an uncompressed
//! PVH `vmlinux`) and an initramfs holding a static busybox, dropbear with
//! the libraries it needs, and the virtio modules. It brings up QEMU's user
//! network, starts sshd with a host key made at bootstrap, accepts root by
//! password and by a bootstrap-made ed25519 key, and prints one ready line
//! on its serial console once sshd listens.
//!
//! # Layout
//!
//! - [`bootstrap`] decides whether the cached guest is good and builds it.
//! - [`sources`] finds each piece: user paths, host files, then packages
//!   ([`apt`]).
//! - [`kernel`] extracts `vmlinux` from a bzImage; [`modules`] orders
//!   modules by their dependencies; [`elf`] finds a binary's libraries.
//! - [`rootfs`] writes the initramfs with [`cpio`]; [`keys`] makes the
//!   guest's secrets.
//! - [`manifest`] is the result, read by the VM layer; [`cache`] is where
//!   it all lives.
//!
//! # Example
//!
//! ```no_run
//! use virtest_guest::{bootstrap, cache, Manifest};
//!
//! let home = cache::default_home()?;
//! let done = bootstrap::bootstrap(&bootstrap::BootstrapOptions::new(home))?;
//! println!("kernel {}", done.manifest.kernel_path().display());
//! // Later, without rebuilding:
//! let manifest = Manifest::load(&done.manifest.dir)?;
//! assert_eq!(manifest.ready_marker, "virtest-guest-ready");
//! # Ok::<(), virtest_guest::Error>(())
//! ```
#![deny(missing_docs)]

pub mod apt;
mod boot_disk;
pub mod bootstrap;
pub mod cache;
pub mod cloud_init;
mod command;
pub mod cpio;
pub mod debian;
pub mod description;
pub mod elf;
pub mod error;
pub mod fat;
pub mod guests;
pub mod images;
pub mod kernel;
pub mod keys;
pub mod manifest;
pub mod modules;
pub mod rootfs;
pub mod snapshots;
pub mod sources;

pub use description::GuestDescription;
pub use error::{Error, Result};
pub use manifest::Manifest;
