//! Choosing the accelerator: `auto` takes KVM only where it can boot a
//! stock kernel, which needs a hardware KVM module; anything else gets
//! TCG, with the reason said.
//!
//! Some hosts have a `/dev/kvm` that is not hardware virtualization: a
//! PVM hypervisor (`kvm_pvm`) opens fine but hangs a stock kernel during
//! boot. Such hosts get TCG under `auto`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::arch::Arch;
use crate::error::{Error, Result};

/// The accelerator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM where it works, else TCG.
    #[default]
    Auto,
    /// KVM; an error where it does not work.
    Kvm,
    /// TCG, QEMU's emulator.
    Tcg,
}

impl Accel {
    /// The names `accel` takes, as [`FromStr`] reads them.
    pub const NAMES: [&str; 3] = ["auto", "kvm", "tcg"];
}

impl FromStr for Accel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Accel> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(Error::UnknownAccel(other.to_string())),
        }
    }
}

/// An accelerator QEMU will run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg`.
    Tcg,
}

impl Chosen {
    /// The name QEMU knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Chosen::Kvm => "kvm",
            Chosen::Tcg => "tcg",
        }
    }
}

/// The accelerator chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What QEMU gets.
    pub accel: Chosen,
    /// Why, in a sentence.
    pub reason: String,
}

/// Why KVM cannot boot a stock kernel here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvmUnusable {
    /// `/dev/kvm` does not open read-write.
    #[error("{path} does not open read-write ({reason})")]
    Device {
        /// The device.
        path: PathBuf,
        /// What opening it said.
        reason: String,
    },
    /// No hardware KVM module is loaded (a PVM one may be).
    #[error("no hardware KVM module (kvm_intel, kvm_amd) is loaded (KVM modules loaded: {loaded})")]
    NoHardwareModule {
        /// The KVM modules that are loaded, or `none`.
        loaded: String,
    },
    /// The QEMU binary has no KVM.
    #[error("this QEMU binary was built without KVM")]
    NotBuiltIn,
    /// The guest is of another architecture than this machine.
    #[error("the guest is {guest} and this machine {host}: KVM runs only the machine's own")]
    ForeignArch {
        /// The guest's architecture.
        guest: Arch,
        /// This machine's.
        host: &'static str,
    },
}

/// What the host offers for KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKvm {
    /// Whether `/dev/kvm` opens for reading and writing (and why not).
    pub device: std::result::Result<(), KvmUnusable>,
    /// Loaded KVM modules (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub modules: Vec<String>,
}

impl HostKvm {
    /// Reads this host's `/dev/kvm` and `/sys/module`.
    pub fn detect() -> HostKvm {
        HostKvm::detect_at(&PathBuf::from("/dev/kvm"), &PathBuf::from("/sys/module"))
    }

    /// [`HostKvm::detect`] with other paths, for tests.
    pub fn detect_at(device: &std::path::Path, sys_module: &std::path::Path) -> HostKvm {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map(drop)
            .map_err(|e| KvmUnusable::Device {
                path: device.to_path_buf(),
                reason: e.to_string(),
            });
        let modules = std::fs::read_dir(sys_module)
            .map(|entries| {
                let mut found: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("kvm_"))
                    .collect();
                found.sort();
                found
            })
            .unwrap_or_default();
        HostKvm { device, modules }
    }

    /// The hardware KVM module loaded, if any.
    pub fn hardware_module(&self) -> Option<&str> {
        self.modules
            .iter()
            .map(String::as_str)
            .find(|m| matches!(*m, "kvm_intel" | "kvm_amd"))
    }

    /// Whether KVM can boot a stock kernel here, and if not why.
    pub fn usable(&self) -> std::result::Result<&str, KvmUnusable> {
        self.device.clone()?;
        self.hardware_module()
            .ok_or_else(|| KvmUnusable::NoHardwareModule {
                loaded: if self.modules.is_empty() {
                    "none".to_string()
                } else {
                    self.modules.join(", ")
                },
            })
    }
}

/// Decides the accelerator for `requested` on `host`, given whether the
/// QEMU binary was built with KVM.
///
/// ```
/// use virtest_qemu_cmdline::accel::{choose, Accel, Chosen, HostKvm};
/// let pvm = HostKvm { device: Ok(()), modules: vec!["kvm_pvm".into()] };
/// let decision = choose(Accel::Auto, &pvm, true).unwrap();
/// assert_eq!(decision.accel, Chosen::Tcg);
/// assert!(decision.reason.contains("kvm_pvm"));
/// ```
pub fn choose(requested: Accel, host: &HostKvm, qemu_has_kvm: bool) -> Result<Decision> {
    decide(requested, host, qemu_has_kvm)
}

/// [`choose`] for a guest of `guest`: one of another architecture than
/// the machine's runs under TCG (and `accel=kvm` is an error saying
/// why).
///
/// ```
/// use virtest_qemu_cmdline::accel::{choose_for, Accel, Chosen, HostKvm};
/// use virtest_qemu_cmdline::arch::Arch;
/// let intel = HostKvm { device: Ok(()), modules: vec!["kvm_intel".into()] };
/// let arm = choose_for(Accel::Auto, &intel, true, Arch::Aarch64).unwrap();
/// assert_eq!(arm.accel, Chosen::Tcg);
/// assert!(arm.reason.contains("aarch64"));
/// ```
pub fn choose_for(
    requested: Accel,
    host: &HostKvm,
    qemu_has_kvm: bool,
    guest: Arch,
) -> Result<Decision> {
    if !guest.is_host() {
        let foreign = HostKvm {
            device: Err(KvmUnusable::ForeignArch {
                guest,
                host: std::env::consts::ARCH,
            }),
            modules: host.modules.clone(),
        };
        return decide(requested, &foreign, qemu_has_kvm);
    }
    decide(requested, host, qemu_has_kvm)
}

fn decide(requested: Accel, host: &HostKvm, qemu_has_kvm: bool) -> Result<Decision> {
    let kvm = host.usable().and_then(|module| {
        if qemu_has_kvm {
            Ok(module)
        } else {
            Err(KvmUnusable::NotBuiltIn)
        }
    });
    match (requested, kvm) {
        (Accel::Tcg, _) => Ok(Decision {
            accel: Chosen::Tcg,
            reason: "accel=tcg was asked for".into(),
        }),
        (Accel::Auto | Accel::Kvm, Ok(module)) => Ok(Decision {
            accel: Chosen::Kvm,
            reason: format!("/dev/kvm opens and {module} is loaded"),
        }),
        (Accel::Kvm, Err(reason)) => Err(Error::KvmUnavailable {
            reason: reason.to_string(),
        }),
        (Accel::Auto, Err(reason)) => Ok(Decision {
            accel: Chosen::Tcg,
            reason: format!("KVM is not usable: {reason}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(device: bool, modules: &[&str]) -> HostKvm {
        HostKvm {
            device: if device {
                Ok(())
            } else {
                Err(KvmUnusable::Device {
                    path: "/dev/kvm".into(),
                    reason: "permission denied".into(),
                })
            },
            modules: modules.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn auto_takes_kvm_only_with_a_hardware_module() {
        let intel = choose(Accel::Auto, &host(true, &["kvm_intel"]), true).unwrap();
        assert_eq!(intel.accel, Chosen::Kvm);
        assert_eq!(
            choose(Accel::Auto, &host(true, &["kvm_amd"]), true)
                .unwrap()
                .accel,
            Chosen::Kvm
        );
        let pvm = choose(Accel::Auto, &host(true, &["kvm_pvm"]), true).unwrap();
        assert_eq!(pvm.accel, Chosen::Tcg);
        assert!(pvm.reason.contains("kvm_pvm"), "{}", pvm.reason);
        let no_dev = choose(Accel::Auto, &host(false, &["kvm_intel"]), true).unwrap();
        assert_eq!(no_dev.accel, Chosen::Tcg);
        assert!(no_dev.reason.contains("/dev/kvm"), "{}", no_dev.reason);
        let no_build = choose(Accel::Auto, &host(true, &["kvm_intel"]), false).unwrap();
        assert!(no_build.reason.contains("built without KVM"));
    }

    #[test]
    fn kvm_asked_for_where_it_cannot_work_is_an_error() {
        let err = choose(Accel::Kvm, &host(true, &["kvm_pvm"]), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kvm_pvm") && err.contains("accel=tcg"),
            "{err}"
        );
    }

    #[test]
    fn names_parse() {
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!(
            "hvf"
                .parse::<Accel>()
                .unwrap_err()
                .to_string()
                .contains("valid: auto, kvm, tcg")
        );
    }

    #[test]
    fn detection_reads_the_given_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(dir.path().join("module/virtio")).unwrap();
        let found = HostKvm::detect_at(&dir.path().join("kvm"), &dir.path().join("module"));
        assert_eq!(found.modules, ["kvm_pvm"]);
        assert!(found.device.is_err());
        assert!(found.usable().is_err());
    }
}
