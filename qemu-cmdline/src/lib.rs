#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`cmdline`]: the command line, builders, parse and render.
//! - [`args`], [`props`], [`hostfwd`]: options, property lists, port forwards.
//! - `validate`, [`incoming`]: checks, the clone for a migration.
//! - [`binary`]: find `qemu-system-*`, `qemu-img`; probe version,
//!   accelerators and machine types (cached per binary).
//! - [`arch`]: the guest architectures, and what each needs of QEMU.
//! - [`accel`]: choose KVM or TCG for `accel=auto|kvm|tcg`, with a reason.
//! - [`quirks`]: defects of particular QEMU versions, and what avoids them.
#![deny(missing_docs)]

pub mod accel;
pub mod arch;
pub mod args;
pub mod binary;
pub mod cmdline;
pub mod error;
pub mod hostfwd;
pub mod incoming;
pub mod machine_types;
pub mod props;
pub mod quirks;
mod validate;

pub use args::{Arg, FlagOption, PropsOption, ValueOption};
pub use cmdline::{ParseWarning, QemuCmdline};
pub use error::{Error, Result};
pub use hostfwd::HostFwd;
pub use incoming::Endpoint;
pub use props::Props;
