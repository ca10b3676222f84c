//! The VM's side of its TPM: which swtpm a new QEMU process gets, with
//! which state.

use std::path::Path;

use virtest_host::Host;

use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::tpm::{TpmFiles, find_swtpm};

use super::Vm;

impl Vm {
    /// Refuses a TPM that cannot work for this guest: one QEMU loads a
    /// kernel and initrd for. QEMU places the initrd just under the room
    /// it keeps for the ACPI tables at the top of RAM, and the TPM's
    /// 64 KiB event log makes the tables outgrow that room: the initrd
    /// overwrites them, and the guest has neither ACPI nor a TPM (seen
    /// on QEMU 7.2 and 10.0).
    /// Also refuses a TPM without swtpm to run it.
    pub(super) fn check_tpm(&self) -> Result<()> {
        if !self.config.tpm {
            return Ok(());
        }
        let arch = self.config.guest.arch;
        if arch != virtest_guest::description::Arch::X86_64 {
            return Err(Error::Tpm {
                reason: format!(
                    "the guest `{}` is {arch}, and virtest gives a TPM (`tpm-tis`, an x86 \
                     ISA device) to x86_64 guests only",
                    self.config.guest.name
                ),
            });
        }
        find_swtpm(self.config.swtpm.as_deref(), &self.config.host)?;
        match &self.config.guest.boot.kernel {
            Some(kernel) if kernel.initrd.is_some() => Err(Error::Tpm {
                reason: format!(
                    "the guest `{}` boots a kernel and initrd QEMU loads, and QEMU puts that \
                     initrd over the ACPI tables once a TPM's event log is among them (the guest \
                     would lose ACPI and find no TPM): give the TPM to a guest that boots from its \
                     disk (the Debian guest, say), or boot this one without an initrd",
                    self.config.guest.name
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The TPM emulator a QEMU of generation `self.generation` on `host`
    /// gets, if the VM has a TPM: its state in `host_sockets`, empty for
    /// an `incoming` QEMU (the migration brings the state), else the
    /// state the VM's last QEMU on that host left (a power cycle keeps
    /// what the TPM holds).
    pub(super) async fn tpm_files(
        &self,
        host: &Host,
        host_sockets: &Path,
        incoming: bool,
    ) -> Result<Option<TpmFiles>> {
        if !self.config.tpm {
            return Ok(None);
        }
        let binary = find_swtpm(self.config.swtpm.as_deref(), host)?;
        let state_dir = host_sockets.join(format!("tpm-{}", self.generation));
        if let Some((last_host, last)) = &self.tpm_state
            && !incoming
            && last_host.same(host)
        {
            let script = r#"[ ! -d "$1" ] || mv -T "$1" "$2""#;
            let (from, to) = (last.to_string_lossy(), state_dir.to_string_lossy());
            host.check(&["sh", "-c", script, "sh", &from, &to])
                .await
                .map_err(Error::Host)?;
        }
        Ok(Some(TpmFiles {
            binary,
            state_dir,
            log: self.log_dir.join("swtpm.log"),
        }))
    }

    /// Remembers where `instance`'s TPM keeps its state, for the VM's
    /// next power_on.
    pub(super) fn note_tpm_state(&mut self, instance: &Instance) {
        if let Some(dir) = instance.tpm_state_dir() {
            self.tpm_state = Some((instance.host().clone(), dir.to_path_buf()));
        }
    }
}
