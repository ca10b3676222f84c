//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong finding, probing or describing QEMU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No binary was found in any place looked at.
    #[error("{what} not found; tried {}; install it with `apt-get install {package}` or set {var}", tried.join(", "))]
    BinaryNotFound {
        /// What was looked for ("QEMU system emulator").
        what: &'static str,
        /// The places tried, in order.
        tried: Vec<String>,
        /// The Debian package that provides it.
        package: String,
        /// The environment variable that names it.
        var: String,
    },
    /// A binary ran but does not look like QEMU.
    #[error("`{path}` does not look like QEMU: `{flag}` printed {output:?}")]
    NotQemu {
        /// The binary.
        path: PathBuf,
        /// The flag it was run with.
        flag: &'static str,
        /// What it printed (start).
        output: String,
    },
    /// A binary could not be run, or did not finish in time.
    #[error("running `{path} {flag}` failed: {reason}")]
    Probe {
        /// The binary.
        path: PathBuf,
        /// The flag it was run with.
        flag: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// KVM was asked for where it cannot run guests.
    #[error("accelerator kvm was asked for, but {reason}; use accel=tcg or accel=auto")]
    KvmUnavailable {
        /// Why not.
        reason: String,
    },
    /// A command line that QEMU would refuse, found before running it.
    #[error("invalid QEMU option `{option}`: {reason}")]
    Invalid {
        /// The option at fault, as it would be rendered.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An accelerator name that is not one of auto, kvm, tcg.
    #[error("unknown accelerator `{0}`; valid: auto, kvm, tcg")]
    UnknownAccel(String),
    /// A command line written as text does not split into words (a
    /// quote is not closed).
    #[error(
        "the command line `{text}` does not split into words as a shell would: a quote is not closed"
    )]
    Unsplittable {
        /// The text, its first 80 characters.
        text: String,
    },
    /// Two QEMUs share no machine type a VM can migrate between them on.
    #[error(transparent)]
    NoSharedMachine(Box<crate::machine_types::NoSharedMachine>),
    /// A system emulator lacks the machine type a guest runs on: most
    /// often it is another architecture's.
    #[error(
        "QEMU `{path}` has no machine type `{machine}`, which this {arch} guest runs on: \
         give {arch} guests {emulator} (`apt-get install {package}`, or set ${var})",
        emulator = arch.system_emulator(),
        package = arch.emulator_package(),
        var = crate::binary::BinaryKind::System.env_var_for(*arch)
    )]
    NoMachine {
        /// The binary.
        path: PathBuf,
        /// The machine type.
        machine: String,
        /// The guest's architecture.
        arch: crate::arch::Arch,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
