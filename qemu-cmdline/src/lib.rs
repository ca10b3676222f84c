//! The QEMU command line as data, and the QEMU binaries it runs.
//!
//! # Layout
//!
//! - [`binary`]: find `qemu-system-*`, `qemu-img`; probe version,
//!   accelerators and machine types (cached per binary).
//! - [`accel`]: choose KVM or TCG for `accel=auto|kvm|tcg`, with a reason.
//!
//! # Example
//!
//! ```no_run
//! use virtest_qemu_cmdline::{accel, binary};
//!
//! let qemu = binary::find(binary::BinaryKind::System, None)?;
//! let probe = binary::probe(&qemu)?;
//! let decision = accel::choose(accel::Accel::Auto, &accel::HostKvm::detect(), probe.has_accel("kvm"))?;
//! println!("QEMU {} runs guests with {}: {}", probe.version, decision.accel.as_str(), decision.reason);
//! # Ok::<(), virtest_qemu_cmdline::Error>(())
//! ```
#![deny(missing_docs)]

pub mod accel;
pub mod binary;
pub mod error;

pub use error::{Error, Result};
