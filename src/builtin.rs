//! The tests `virtest run` runs on its own: boot, reboot, migration.
//! Each checks more than the guide's examples: that the guest is the one
//! expected, and stays the same one across migrations.

use crate::harness::{TestDef, params};
use crate::prelude::*;

/// Every built-in test.
pub fn tests() -> Vec<TestDef> {
    vec![
        TestDef::new("Boot", || Boot),
        TestDef::new("Reboot", || Reboot),
        TestDef::new("Migration", || Migration),
        TestDef::new("MigrationMatrix", || crate::matrix::MigrationMatrix),
    ]
}

/// Reads the guest's boot id over the remote session.
pub(crate) async fn boot_id(t: &Test) -> Result<String, TestError> {
    let out =
        t.vm.remote()?
            .run("cat /proc/sys/kernel/random/boot_id")
            .await?;
    Ok(out.stdout.trim().to_string())
}

/// The file the migration test writes before it migrates, in the login
/// user's home: on a guest whose root is a disk, on that disk.
const MARKER: &str = "~/.virtest-migration-marker";

/// Writes a MiB of random data to [`MARKER`]; its checksum.
async fn write_marker(t: &Test) -> Result<String, TestError> {
    let out =
        t.vm.remote()?
            .run(&format!(
                "head -c 1048576 /dev/urandom > {MARKER} && sync && md5sum < {MARKER}"
            ))
            .await?;
    ensure!(out.exit_status == 0, "writing {MARKER}: {}", out.stderr);
    Ok(out.stdout.trim().to_string())
}

/// The checksum of [`MARKER`] as the disk holds it: the page cache is
/// dropped first (as root; another user reads it as the guest sees it).
async fn read_marker(t: &Test) -> Result<String, TestError> {
    let out =
        t.vm.remote()?
            .run(&format!(
                "sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; md5sum < {MARKER}"
            ))
            .await?;
    Ok(out.stdout.trim().to_string())
}

/// Boots the guest (never from a snapshot), logs in, checks its kernel,
/// shuts it down.
pub struct Boot;

impl VirtTest for Boot {
    async fn setup(&mut self, t: &mut Test) -> TestResult {
        t.vm.set_boot(BootMode::Fresh);
        Ok(())
    }

    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let uname = t.vm.remote()?.run("uname -r").await?;
        let expected = t.vm.config().guest.kernel_release.clone();
        if let Some(expected) = expected {
            ensure!(
                uname.stdout.trim() == expected,
                "the guest runs kernel {}, its guest description says {expected}",
                uname.stdout.trim()
            );
        }
        t.log(format_args!("guest kernel {}", uname.stdout.trim()));
        Ok(())
    }

    async fn cleanup(&mut self, t: &mut Test) -> TestResult {
        if let Ok(remote) = t.vm.remote() {
            remote.run("shutdown -h now").await?;
        }
        t.vm.power_off().await?;
        Ok(())
    }
}

/// Boots the guest, then reboots it from inside and by a reset; it must
/// come back each time, as a new boot.
pub struct Reboot;

impl VirtTest for Reboot {
    async fn setup(&mut self, t: &mut Test) -> TestResult {
        t.vm.set_boot(BootMode::Fresh);
        Ok(())
    }

    async fn action(&mut self, t: &mut Test) -> TestResult {
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let mut previous = boot_id(t).await?;
        for how in [virtest_vm::Reboot::Guest, virtest_vm::Reboot::Forced] {
            t.vm.reboot(how).await?;
            t.vm.login_remote().await?;
            let now = boot_id(t).await?;
            ensure!(
                now != previous,
                "after a {how:?} reboot the boot id is unchanged"
            );
            previous = now;
        }
        Ok(())
    }
}

/// Migrates the guest `migration_iterations` times over `migration_mode`,
/// logging in after each; the guest must stay the same one, with the
/// file it wrote before (read back from its disk, where it has one:
/// between hosts of their own storage, the disk was copied).
pub struct Migration;

impl VirtTest for Migration {
    async fn action(&mut self, t: &mut Test) -> TestResult {
        let mut hosts = Vec::new();
        for name in t
            .params
            .value_if_set(&params::MIGRATION_HOSTS)?
            .unwrap_or_default()
        {
            hosts.push(t.add_host(&name).await?);
        }
        if let Some(first) = hosts.first() {
            t.vm.set_host(first.clone())?;
        }
        t.vm.power_on().await?;
        t.vm.login_remote().await?;
        let boot = boot_id(t).await?;
        let marker = write_marker(t).await?;
        let mode = t.params.value(&params::MIGRATION_MODE)?;
        for round in 1..=t.params.value(&params::MIGRATION_ITERATIONS)? {
            let from = t.vm.host().name().to_string();
            let report = match hosts.get(round as usize % hosts.len().max(1)) {
                Some(host) => t.vm.migrate_to(host, mode).await?,
                None => t.vm.migrate(mode).await?,
            };
            t.log(format_args!(
                "migration {round} over {mode} from host {from} to {}, QEMU {} to {} on {}: \
                 {} ms, downtime {} ms, wall {:.0} ms",
                t.vm.host().name(),
                report.source_qemu,
                report.destination_qemu,
                report.machine_type,
                report.total_time_ms,
                report.downtime_ms,
                report.wall_ms
            ));
            t.vm.login_remote().await?;
            ensure!(
                boot_id(t).await? == boot,
                "after migration {round} another guest answered"
            );
            ensure!(
                read_marker(t).await? == marker,
                "after migration {round} the file written before, {MARKER}, is not the same"
            );
        }
        Ok(())
    }
}
