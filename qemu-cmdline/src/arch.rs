//! The guest architectures virtest runs, and what each needs of QEMU:
//! its system emulator, machine type, processor and serial console.

use std::fmt;
use std::str::FromStr;

use crate::accel::Chosen;

/// A guest's architecture.
///
/// ```
/// use virtest_qemu_cmdline::arch::Arch;
/// let arm: Arch = "aarch64".parse().unwrap();
/// assert_eq!(arm.system_emulator(), "qemu-system-aarch64");
/// assert_eq!(arm.default_machine(), "virt");
/// assert!("sparc".parse::<Arch>().unwrap_err().to_string().contains("x86_64, aarch64"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    /// 64-bit x86 (`amd64`).
    #[default]
    X86_64,
    /// 64-bit Arm (`arm64`).
    Aarch64,
}

/// Every architecture, in the order errors list them.
pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

/// An architecture virtest does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an architecture virtest runs guests of: it runs x86_64, aarch64")]
pub struct UnknownArch(pub String);

impl Arch {
    /// This machine's architecture, when virtest runs its guests.
    pub fn host() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }

    /// Whether this is the machine's own architecture (where KVM can run
    /// it).
    pub fn is_host(self) -> bool {
        Arch::host() == Some(self)
    }

    /// Its name, as the kernel and QEMU spell it (`aarch64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for it (`arm64`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Its GNU triplet, as Debian's library directories name it.
    pub fn triplet(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// The system emulator that runs it.
    pub fn system_emulator(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian package of that emulator.
    pub fn emulator_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The machine type a guest gets unless it names one.
    pub fn default_machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
        }
    }

    /// The kernel's name for the first serial port of that machine.
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// The `-cpu` a guest gets under `accel`, where QEMU's default does
    /// not do. Arm's `virt` defaults to a 32-bit Cortex-A15; under TCG a
    /// Cortex-A72 boots in a tenth of the time of `max`, whose pointer
    /// authentication QEMU emulates in full.
    pub fn cpu(self, accel: Chosen) -> Option<&'static str> {
        match (self, accel) {
            (Arch::X86_64, _) => None,
            (Arch::Aarch64, Chosen::Kvm) => Some("host"),
            (Arch::Aarch64, Chosen::Tcg) => Some("cortex-a72"),
        }
    }

    /// Whether its machines carry a VM generation id (`vmgenid`, an ACPI
    /// device): on `virt` a kernel booted with a device tree has no ACPI.
    pub fn has_generation_id(self) -> bool {
        self == Arch::X86_64
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// The kernel's name (`aarch64`) or Debian's (`arm64`).
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        ALL.into_iter()
            .find(|a| s == a.as_str() || s == a.debian())
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for arch in ALL {
            assert_eq!(arch.as_str().parse::<Arch>(), Ok(arch));
            assert_eq!(arch.debian().parse::<Arch>(), Ok(arch));
        }
        let err = "sparc".parse::<Arch>().unwrap_err().to_string();
        assert!(
            err.contains("`sparc`") && err.contains("x86_64, aarch64"),
            "{err}"
        );
        assert!("".parse::<Arch>().is_err());
        assert!("AARCH64".parse::<Arch>().is_err());
    }

    #[test]
    fn arm_gets_a_64_bit_processor_and_its_own_console() {
        assert_eq!(Arch::Aarch64.cpu(Chosen::Tcg), Some("cortex-a72"));
        assert_eq!(Arch::Aarch64.cpu(Chosen::Kvm), Some("host"));
        assert_eq!(Arch::X86_64.cpu(Chosen::Tcg), None);
        assert_eq!(Arch::Aarch64.serial_console(), "ttyAMA0");
        assert!(!Arch::Aarch64.has_generation_id());
    }
}
