#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `vm`: [`Vm`], its states and power operations.
//! - `agent`: [`Vm::agent`], the guest agent over the VM's channel.
//! - `config`: [`VmConfig`], what a VM is made from.
//! - `instance`: [`Instance`], one QEMU process with its console and QMP
//!   connected; a VM has one, two during a migration.
//! - `exit`: [`QemuExit`], how a QEMU that nobody powered off ended.
//! - `process`: spawning QEMU so that it never outlives its owner.
//! - `console`: [`Console`], the serial output, logged and searchable,
//!   and input typed into it.
//! - `console_share`: [`SharedConsole`], the console on a socket for
//!   people (`virtest console`) and for [`Vm::serial`].
//! - `serial`: [`Vm::serial`], a logged-in session on the serial
//!   console, and `exec_command_and_wait_for_pattern`.
//! - `launch`: [`GuestLaunch`], a guest's QEMU command line.
//! - `network`: [`Network`], private L2 segments between VMs.
//! - `hotplug`: [`Vm::hotplug`], devices added to a running VM.
//! - `disks`: the VM's qcow2 overlays over its guest's disks, and its
//!   UEFI variable store; `image`: [`check_image`], a disk image as
//!   qemu-img sees it.
//! - `snapshot`: ready snapshots: making one from a boot, starting from
//!   one, refreshing what clones must not share.
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

mod agent;
mod config;
mod console;
mod console_share;
mod dirs;
mod disks;
mod error;
mod exit;
mod extensions;
mod hotplug;
mod image;
mod instance;
mod launch;
mod network;
mod process;
mod serial;
mod snapshot;
mod vm;

pub use config::{Login, VmConfig};
pub use console::{Console, ConsoleCursor};
pub use console_share::SharedConsole;
pub use dirs::RuntimeDirError;
pub use disks::{Overlay, UefiFiles};
pub use error::{Error, Result};
pub use exit::QemuExit;
pub use extensions::Extensions;
pub use hotplug::Hotplug;
pub use image::check_image;
pub use instance::{Endpoints, Forward, Instance};
pub use launch::{ConsoleOutput, GuestLaunch};
pub use network::{Network, NetworkNic};
pub use snapshot::{BootMode, Start};
pub use vm::{PowerOff, Reboot, SshAccess, Vm, VmState};
