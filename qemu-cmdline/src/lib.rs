//! The QEMU command line as data, and the QEMU binaries it runs.
//!
//! A [`QemuCmdline`] is a binary and its options in order, each typed by
//! the kind of value it takes ([`Arg`]): property lists ([`Props`], with
//! QEMU's comma escaping), plain values, flags, and options this crate
//! does not model, kept verbatim. It renders to an argv, parses back from
//! one (or from text a shell would split), validates ids and references,
//! and clones itself for the destination of a live migration. Pure and
//! fast: no tokio.
//!
//! # Layout
//!
//! - [`cmdline`]: the command line, builders, parse and render.
//! - [`args`], [`props`], [`hostfwd`]: options, property lists, port forwards.
//! - `validate`, [`incoming`]: checks, the clone for a migration.
//! - [`binary`]: find `qemu-system-*`, `qemu-img`; probe version,
//!   accelerators and machine types (cached per binary).
//! - [`accel`]: choose KVM or TCG for `accel=auto|kvm|tcg`, with a reason.
//! - [`quirks`]: defects of particular QEMU versions, and what avoids them.
//!
//! # Example
//!
//! The default guest's command line, rendered and cloned for migration:
//!
//! ```
//! use virtest_qemu_cmdline::{Endpoint, FlagOption, HostFwd, QemuCmdline};
//!
//! let mut cmd = QemuCmdline::new("qemu-system-x86_64");
//! cmd.machine("q35").accel("tcg").memory_mib(256).flag(FlagOption::NoDefaults);
//! cmd.direct_boot("/cache/vmlinux", Some("/cache/initramfs.cpio.gz"), "console=ttyS0 panic=-1 quiet");
//! cmd.socket_chardev("console", "/run/vm/console.sock").set_value(virtest_qemu_cmdline::ValueOption::Serial, "chardev:console");
//! cmd.user_netdev("net0", &[HostFwd::tcp(40022, 22)]).device("virtio-net-pci", &[("netdev", "net0")]);
//! cmd.device("virtio-rng-pci", &[]);
//! cmd.validate()?;
//! let argv = cmd.to_args();
//! assert!(argv.iter().any(|a| a == "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"));
//!
//! let dst = cmd.clone_for_incoming("defer", |e| match e {
//!     Endpoint::Path(p) => Endpoint::Path(p.with_extension("dst.sock")),
//!     Endpoint::Port(_) => Endpoint::Port(40023),
//! });
//! assert!(dst.display().ends_with("-incoming defer"));
//! assert!(dst.display().contains("path=/run/vm/console.dst.sock"));
//! # Ok::<(), virtest_qemu_cmdline::Error>(())
//! ```
#![deny(missing_docs)]

pub mod accel;
pub mod args;
pub mod binary;
pub mod cmdline;
pub mod error;
pub mod hostfwd;
pub mod incoming;
pub mod props;
pub mod quirks;
mod validate;

pub use args::{Arg, FlagOption, PropsOption, ValueOption};
pub use cmdline::{ParseWarning, QemuCmdline};
pub use error::{Error, Result};
pub use hostfwd::HostFwd;
pub use incoming::Endpoint;
pub use props::Props;
