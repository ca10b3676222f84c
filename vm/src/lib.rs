#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! The modules below `vm` know nothing of [`Vm`]; `vm` and its
//! submodules put them together (no import circle):
//!
//! - `vm`: [`Vm`], its states and the QMP it sends a running guest;
//!   `vm::power` starts and ends QEMU, `vm::login` logs in by SSH,
//!   `vm::ready` waits on the console and for readiness, `vm::agent` is
//!   [`Vm::agent`], `vm::serial` [`Vm::serial`], `vm::hotplug`
//!   [`Vm::hotplug`], `vm::networks` a VM on [`Network`]s, and
//!   `vm::from_snapshot` a start from a ready snapshot.
//! - `config`: [`VmConfig`], what a VM is made from.
//! - `instance`: [`Instance`], one QEMU process with its console and QMP
//!   connected; a VM has one, two during a migration.
//! - `exit`: [`QemuExit`], how a QEMU that nobody powered off ended.
//! - `process`: spawning QEMU so that it never outlives its owner.
//! - `console`: [`Console`], the serial output, logged and searchable,
//!   and input typed into it.
//! - `console_share`: [`SharedConsole`], the console on a socket for
//!   people (`virtest console`) and for [`Vm::serial`].
//! - `launch`: [`GuestLaunch`], a guest's QEMU command line.
//! - `network`: [`Network`], private L2 segments between VMs.
//! - `hotplug`: what a VM holds hot-plugged, and its PCIe root ports.
//! - `disks`: the VM's qcow2 overlays over its guest's disks, and its
//!   UEFI variable store; `image`: [`check_image`], a disk image as
//!   qemu-img sees it.
//! - `snapshot`: ready snapshots' keys, and QEMU's state saved into and
//!   loaded from a file; refreshing what clones must not share.
//! - `dirs`: ids and private directories.
//!
//! # Tracing
//!
//! Each VM has a span with a `vm` field (its name); a span that is a
//! phase of its life (booting, logging in, rebooting, powering off; the
//! migration layer adds migrating) has a `phase` field, text for people.
//! Test runners show these fields, never span names, which may change.
//!
//! # Nothing left behind
//!
//! QEMU runs in its own process group with a parent-death signal tied to
//! the thread that waits for it, so it dies with the owning process even
//! on SIGKILL; dropping an [`Instance`] (or a [`Vm`] that is on) kills the
//! group and reaps QEMU.
#![deny(missing_docs)]

mod config;
mod console;
mod console_share;
mod dirs;
mod disks;
mod endpoints;
mod error;
mod exit;
mod extensions;
mod firmware;
mod hotplug;
mod image;
mod instance;
mod launch;
mod network;
mod placement;
mod snapshot;
mod tpm;
mod vm;

pub use config::{Login, VmConfig};
pub use console::{Console, ConsoleCursor};
pub use console_share::SharedConsole;
pub use dirs::RuntimeDirError;
pub use disks::Overlay;
pub use endpoints::{Endpoints, Forward};
pub use error::{Error, Result};
pub use exit::QemuExit;
pub use extensions::Extensions;
pub use firmware::UefiFiles;
pub use image::check_image;
pub use instance::Instance;
pub use launch::{ConsoleOutput, GuestLaunch};
pub use network::{Network, NetworkNic};
pub use snapshot::{BootMode, Start};
/// How a ready snapshot's state is written ([`VmConfig::snapshot_format`]).
pub use virtest_guest::snapshots::StateFormat;
pub use vm::{Hotplug, PowerOff, Reboot, SshAccess, Vm, VmFiles, VmState, Within};
