//! [`Vm::files`]: where a VM's logs, sockets and disks are, and the QMP
//! events its transcript recorded.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::Vm;
use crate::disks::Overlay;
use crate::error::{Error, Result};

/// Where one VM's files are, from [`Vm::files`].
///
/// ```no_run
/// # fn f(vm: &virtest_vm::Vm) {
/// let console_log = vm.files().log_dir().join("console.log");
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct VmFiles<'vm> {
    vm: &'vm Vm,
}

impl<'vm> VmFiles<'vm> {
    /// Where `console.log`, `qmp.log` and `qemu.log` are.
    pub fn log_dir(self) -> &'vm Path {
        &self.vm.log_dir
    }

    /// The private directory of the VM's sockets.
    pub fn runtime_dir(self) -> &'vm Path {
        &self.vm.runtime_dir
    }

    /// The VM's disk overlays (empty before the first `power_on`, and
    /// for a guest without disks).
    pub fn overlays(self) -> &'vm [Overlay] {
        self.vm.disks.as_ref().map_or(&[], |d| d.overlays())
    }

    /// The directory of the VM's overlays and firmware variables, once
    /// made; [`Vm::keep_disks`] keeps it.
    pub fn disk_dir(self) -> Option<&'vm Path> {
        self.vm.disks.as_ref().map(|d| d.dir())
    }

    /// The QMP events every QEMU of this VM sent, across power cycles and
    /// migrations, oldest first: read back from `qmp.log`, once every
    /// line received so far is written.
    pub async fn recorded_events(self) -> Result<Vec<Value>> {
        self.qmp_log_written().await;
        let path = self.log_dir().join("qmp.log");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(virtest_qmp::transcript::events(&String::from_utf8_lossy(
                &bytes,
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(Error::Io {
                what: "reading",
                path,
                source,
            }),
        }
    }

    /// Waits until `qmp.log` holds every line sent and received so far,
    /// for at most 5 s (a disk that hangs longer is warned of).
    pub(super) async fn qmp_log_written(self) {
        let Some(writer) = &self.vm.qmp_log else {
            return;
        };
        let wait = Duration::from_secs(5);
        if tokio::time::timeout(wait, writer.written()).await.is_err() {
            tracing::warn!(
                path = %self.log_dir().join("qmp.log").display(),
                "the QMP transcript is still not written after {wait:?}; reading it as it is"
            );
        }
    }
}

impl Vm {
    /// Where the VM's logs, sockets and disks are.
    pub fn files(&self) -> VmFiles<'_> {
        VmFiles { vm: self }
    }
}
