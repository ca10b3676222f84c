//! A UEFI guest's firmware: which build runs a guest of each
//! architecture (OVMF for x86_64, AAVMF for aarch64, as Debian installs
//! them), and the files one VM gets of it.

use std::path::{Path, PathBuf};

use virtest_guest::description::{Arch, Firmware};

use crate::error::{Error, Result};

/// UEFI firmware files of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiFiles {
    /// The shared firmware code (read-only).
    pub code: PathBuf,
    /// This VM's own variable store.
    pub vars: PathBuf,
    /// The store it was copied from.
    pub template: PathBuf,
    /// Whether the code enforces Secure Boot (it then needs SMM, and
    /// flash only SMM code may write).
    pub secure: bool,
}

/// A UEFI build for one architecture, where a Debian package installs it.
struct Build {
    /// The directory, unless `dir_var` names another.
    dir: &'static str,
    /// The environment variable that names another directory.
    dir_var: &'static str,
    /// The package that installs it.
    package: &'static str,
    /// Its code, and the variable store each VM gets a copy of.
    plain: (&'static str, &'static str),
    /// The code that enforces Secure Boot (built with SMM), and a store
    /// with Microsoft's keys enrolled and Secure Boot on; `None` where
    /// virtest does not boot one.
    secure: Option<(&'static str, &'static str)>,
}

const OVMF: Build = Build {
    dir: "/usr/share/OVMF",
    dir_var: "VIRTEST_OVMF_DIR",
    package: "ovmf",
    plain: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    secure: Some(("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")),
};

const AAVMF: Build = Build {
    dir: "/usr/share/AAVMF",
    dir_var: "VIRTEST_AAVMF_DIR",
    package: "qemu-efi-aarch64",
    plain: ("AAVMF_CODE.fd", "AAVMF_VARS.fd"),
    secure: None,
};

fn build(arch: Arch) -> &'static Build {
    match arch {
        Arch::X86_64 => &OVMF,
        Arch::Aarch64 => &AAVMF,
    }
}

impl Build {
    /// `$<dir_var>` if set, else the package's directory.
    fn dir(&self) -> PathBuf {
        std::env::var_os(self.dir_var)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(self.dir), PathBuf::from)
    }
}

impl UefiFiles {
    /// The files of `firmware` for a guest of `arch` in `dir` (the
    /// build's directory when `None`: `$VIRTEST_OVMF_DIR` or Debian's
    /// `/usr/share/OVMF`; `$VIRTEST_AAVMF_DIR` or `/usr/share/AAVMF`),
    /// with the VM's store at `vars`; nothing is checked or copied.
    /// Secure Boot is x86_64's: a guest description refuses it for
    /// another architecture.
    ///
    /// ```
    /// use virtest_guest::description::{Arch, Firmware};
    /// use virtest_vm::UefiFiles;
    /// let files = UefiFiles::of(Firmware::Uefi, Arch::Aarch64, None, "vars.fd".into());
    /// assert!(files.code.ends_with("AAVMF_CODE.fd"));
    /// ```
    pub fn of(firmware: Firmware, arch: Arch, dir: Option<&Path>, vars: PathBuf) -> UefiFiles {
        let build = build(arch);
        let dir = dir.map_or_else(|| build.dir(), Path::to_path_buf);
        let secure = firmware == Firmware::UefiSecure && build.secure.is_some();
        let (code, template) = match build.secure {
            Some(files) if secure => files,
            _ => build.plain,
        };
        UefiFiles {
            code: dir.join(code),
            vars,
            template: dir.join(template),
            secure,
        }
    }

    /// [`UefiFiles::of`] the installed build, checked to be there: the
    /// error names the package to install. Its `vars` is still to be
    /// made ([`UefiFiles::with_vars`]).
    pub(crate) fn installed(firmware: Firmware, arch: Arch) -> Result<UefiFiles> {
        UefiFiles::of(firmware, arch, None, PathBuf::new()).check(build(arch))
    }

    fn check(self, build: &Build) -> Result<UefiFiles> {
        for file in [&self.code, &self.template] {
            if !file.is_file() {
                return Err(Error::Firmware {
                    missing: file.clone(),
                    package: build.package,
                    dir_var: build.dir_var,
                });
            }
        }
        Ok(self)
    }

    /// These files with a private copy of the variable store at `vars`.
    pub(crate) fn with_vars(self, vars: PathBuf) -> Result<UefiFiles> {
        std::fs::copy(&self.template, &vars).map_err(|source| Error::Io {
            what: "copying the UEFI variable store to",
            path: vars.clone(),
            source,
        })?;
        Ok(UefiFiles { vars, ..self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_firmware_names_its_package() {
        let empty = tempfile::tempdir().unwrap();
        for (arch, file, package) in [
            (Arch::X86_64, "OVMF_CODE_4M.fd", "apt-get install ovmf"),
            (
                Arch::Aarch64,
                "AAVMF_CODE.fd",
                "apt-get install qemu-efi-aarch64",
            ),
        ] {
            let files = UefiFiles::of(Firmware::Uefi, arch, Some(empty.path()), PathBuf::new());
            let error = files.check(build(arch)).unwrap_err().to_string();
            assert!(error.contains(file), "{error}");
            assert!(error.contains(package), "{error}");
        }
    }

    #[test]
    fn secure_boot_takes_the_smm_build_and_microsofts_keys() {
        let files = UefiFiles::of(Firmware::UefiSecure, Arch::X86_64, None, "v".into());
        assert!(files.secure);
        assert!(files.code.ends_with("OVMF_CODE_4M.secboot.fd"));
        assert!(files.template.ends_with("OVMF_VARS_4M.ms.fd"));
    }
}
