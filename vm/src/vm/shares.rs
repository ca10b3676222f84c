//! Host folders shared into the guest (virtio-9p): added before the VM
//! starts, checked on the host it starts on.

use std::path::PathBuf;

use virtest_guest::description::Share;
use virtest_host::Host;

use crate::error::{Error, Result};

use super::Vm;

impl Vm {
    /// Shares the host directory `dir` into the guest, which mounts it by
    /// `tag` ([`Share::mount_command`]); files written on either side are
    /// seen on the other. Takes effect at the next `power_on`, so it is
    /// an error while QEMU runs; also for a tag the VM already shares, a
    /// tag QEMU would not take, or a directory that is not there.
    ///
    /// QEMU cannot migrate a VM with a shared folder: `migrate` refuses
    /// it before it starts anything.
    ///
    /// ```no_run
    /// # async fn f(vm: &mut virtest_vm::Vm) -> virtest_vm::Result<()> {
    /// let share = vm.share("/srv/results", "results")?;
    /// vm.power_on().await?;
    /// vm.login_remote().await?;
    /// vm.remote()?.run(&format!("mkdir -p /mnt && {}", share.mount_command("/mnt"))).await?;
    /// # Ok(()) }
    /// ```
    pub fn share(&mut self, dir: impl Into<PathBuf>, tag: &str) -> Result<Share> {
        if self.is_on() {
            return Err(Error::Share {
                reason: format!(
                    "`{tag}` cannot be added while QEMU runs (QEMU has no hot-plug of a shared \
                     folder): share it before power_on"
                ),
            });
        }
        let share = Share::new(dir, tag).map_err(|reason| Error::Share { reason })?;
        if self.config.shares.iter().any(|s| s.tag == share.tag) {
            return Err(Error::Share {
                reason: format!("the VM already shares a folder as `{tag}`"),
            });
        }
        share
            .check_directory()
            .map_err(|reason| Error::Share { reason })?;
        self.config.shares.push(share.clone());
        Ok(share)
    }

    /// Checks, before QEMU starts on `host`, that each shared folder is a
    /// directory there.
    pub(super) fn check_shares(&self, host: &Host) -> Result<()> {
        let Some(first) = self.config.shares.first() else {
            return Ok(());
        };
        if !host.sees_local_files() {
            return Err(Error::Share {
                reason: format!(
                    "`{}` is a folder of this machine, and host `{}` has storage of its own: \
                     share folders on this machine or on a host with shared storage",
                    first.tag,
                    host.name()
                ),
            });
        }
        for share in &self.config.shares {
            share
                .check_directory()
                .map_err(|reason| Error::Share { reason })?;
        }
        Ok(())
    }
}
