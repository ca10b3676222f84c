#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`bootstrap`] decides whether the cached guest is good and builds it.
//! - [`sources`] finds each piece: user paths, host files, then packages
//!   ([`apt`]).
//! - [`kernel`] extracts `vmlinux` from a bzImage; [`modules`] orders
//!   modules by their dependencies; [`elf`] finds a binary's libraries.
//! - [`rootfs`] writes the initramfs with [`cpio`]; [`keys`] makes the
//!   guest's secrets; [`private`] keeps the files that hold them private.
//! - [`manifest`] is the result, read by the VM layer; [`cache`] is where
//!   it all lives.
#![deny(missing_docs)]

#[cfg(feature = "provision")]
pub mod apt;
#[cfg(feature = "provision")]
mod boot_disk;
#[cfg(feature = "provision")]
pub mod bootstrap;
pub mod cache;
pub mod cloud_init;
#[cfg(feature = "provision")]
mod command;
#[cfg(feature = "provision")]
pub mod cpio;
#[cfg(feature = "provision")]
pub mod debian;
pub mod description;
#[cfg(feature = "provision")]
pub mod elf;
pub mod error;
#[cfg(feature = "provision")]
pub mod fat;
pub mod guests;
pub mod images;
#[cfg(feature = "provision")]
pub mod kernel;
pub mod keys;
pub mod manifest;
#[cfg(feature = "provision")]
pub mod modules;
pub mod private;
pub mod qemu_builds;
#[cfg(feature = "provision")]
pub mod rootfs;
pub mod snapshots;
#[cfg(feature = "provision")]
pub mod sources;

pub use description::GuestDescription;
pub use error::{Error, Result};
pub use manifest::Manifest;
