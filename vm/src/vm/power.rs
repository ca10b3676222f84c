//! Starting and ending QEMU: `power_on` (a fresh boot or a ready
//! snapshot, with the VM's disks and cloud-init seed) and `power_off`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qapi::qmp::{quit, system_powerdown};
use tracing::Instrument;
use virtest_qemu_cmdline::QemuCmdline;
use virtest_qemu_cmdline::accel::{self, Accel, Chosen, HostKvm};
use virtest_qemu_cmdline::binary::{self, BinaryKind, Version};

use virtest_guest::cloud_init::Seed;
use virtest_guest::description::Arch;
use virtest_guest::snapshots::{InUse, SnapshotStore};

use crate::config::Login;
use crate::dirs;
use crate::disks::VmDisks;
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::launch::{ConsoleOutput, GuestLaunch};
use crate::placement::Placement;
use crate::snapshot::{self, BootMode, Start};

use super::{Vm, from_snapshot};

/// How `power_off` ended QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// The VM was not on.
    AlreadyOff,
    /// QEMU had already exited (the guest shut itself down).
    ByGuest,
    /// The guest powered off after the ACPI power button.
    Graceful,
    /// QEMU quit when asked over QMP.
    Quit,
    /// QEMU exited on SIGTERM.
    Terminated,
    /// QEMU was killed with SIGKILL.
    Killed,
}

/// The QEMU binary for a guest of `arch` (`explicit`, else `$QEMU`, else
/// PATH; another architecture's guest has its own,
/// [`binary::find_for`]), checked to offer its `machine` type; the
/// accelerator for `asked`; and QEMU's version. Blocking: it spawns QEMU
/// to probe it (once per binary and process).
fn resolve_qemu(
    explicit: Option<&Path>,
    asked: Accel,
    arch: Arch,
    machine: &str,
) -> Result<(PathBuf, Chosen, Version)> {
    let qemu = binary::find_for(BinaryKind::System, arch, explicit).map_err(Error::Qemu)?;
    let probe = binary::probe(&qemu).map_err(Error::Qemu)?;
    probe.check_machine(machine, arch).map_err(Error::Qemu)?;
    let decision = accel::choose_for(asked, &HostKvm::detect(), probe.has_accel("kvm"), arch)
        .map_err(Error::Qemu)?;
    tracing::debug!(accel = decision.accel.as_str(), reason = %decision.reason, "accelerator");
    Ok((qemu, decision.accel, probe.version))
}

impl Vm {
    /// Starts QEMU: private directories (mode 0700), the console read
    /// into `console.log` and [`Vm::console`], QMP connected with its
    /// transcript in `qmp.log`, QEMU's output in `qemu.log`, and the
    /// guest's sshd forwarded from a free port on 127.0.0.1. Returns once
    /// QMP answers; the guest is then booting.
    ///
    /// With [`BootMode::Snapshot`] the guest is restored from its ready
    /// snapshot instead (made first, by booting, when there is none): it
    /// is ready when this returns, and the first login refreshes its
    /// entropy and clock. [`Vm::start`] says which start it had.
    pub async fn power_on(&mut self) -> Result<()> {
        let span = tracing::info_span!(parent: &self.span, "power_on", phase = "booting");
        self.power_on_inner().instrument(span).await
    }

    async fn power_on_inner(&mut self) -> Result<()> {
        if let Some(instance) = self.instance.as_ref().filter(|i| i.is_running()) {
            return Err(Error::AlreadyOn {
                pid: instance.pid(),
            });
        }
        self.instance = None;
        self.remote = None;
        self.serial.forget();
        let name = self.config.name.as_deref().unwrap_or("vm");
        self.hotplugged.release_all(name);
        // Finding and probing QEMU spawns it and waits: not on the async
        // workers, which other tests' VMs share.
        let (explicit, asked) = (self.config.qemu.clone(), self.config.accel);
        let (arch, machine) = (
            self.config.guest.arch,
            self.config.guest.machine.machine_type.clone(),
        );
        let (qemu, accel, qemu_version) = tokio::task::spawn_blocking(move || {
            resolve_qemu(explicit.as_deref(), asked, arch, &machine)
        })
        .await
        .map_err(|e| Error::State {
            what: format!("finding QEMU failed: {e}"),
        })??;
        // A host that names its QEMU runs that one; the command line is
        // made for the one found here.
        let qemu = self.config.host.qemu().map_or(qemu, Path::to_path_buf);
        let binary = qemu.clone();
        self.check_shares(&self.config.host)?;
        self.check_tpm()?;
        dirs::create_runtime_dir(&self.runtime_dir)?;
        dirs::create_private(&self.log_dir).map_err(|source| Error::Io {
            what: "creating the VM directory",
            path: self.log_dir.clone(),
            source,
        })?;
        let first_power_on = self.disks.is_none();
        if first_power_on {
            self.disks = Some(self.create_disks().await?);
        }
        let config = self.config.clone();
        let disks = self.disks.as_ref().expect("made above");
        let (overlays, uefi) = (disks.overlays().to_vec(), disks.uefi().cloned());
        let seed = disks.seed().map(Path::to_path_buf);
        let generation_id =
            self.config.boot == BootMode::Snapshot && self.snapshot_unsupported().is_none();
        let launch = move |endpoints: &Endpoints| {
            let mut cmdline = GuestLaunch {
                guest: &config.guest,
                qemu: qemu.clone(),
                accel,
                qemu_version: Some(qemu_version),
                memory_mib: config.memory_mib,
                cpus: config.cpus,
                ssh_host_port: 0,
                forward_ports: &config.forward_ports,
                networks: &config.networks,
                console: ConsoleOutput::Connect(endpoints.console_socket.clone()),
                vga: config.vga,
                qmp_socket: Some(endpoints.qmp_socket.clone()),
                agent_socket: config.agent.then(|| endpoints.agent_socket.clone()),
                tpm_socket: config.tpm.then(|| endpoints.tpm_socket.clone()),
                allow_reboot: true,
                disks: &overlays,
                uefi: uefi.as_ref(),
                seed: seed.as_deref(),
                shares: &config.shares,
                generation_id,
            }
            .cmdline();
            for arg in &config.extra_args {
                cmdline.push(arg.clone());
            }
            cmdline
        };
        self.boot_cursor = self.console()?.cursor();
        self.ready_seen = false;
        let (instance, start) = match self.config.boot {
            BootMode::Fresh => (
                self.start_instance_with(
                    &self.config.host.clone(),
                    &launch,
                    self.local_files(),
                    false,
                )
                .await?,
                Start::Fresh {
                    why_not_snapshot: None,
                },
            ),
            BootMode::Snapshot => {
                self.start_from_snapshot(&binary, &launch, first_power_on)
                    .await?
            }
        };
        let restored = start.is_restored();
        self.ready_seen = restored;
        self.refresh_pending = restored;
        tracing::info!(
            pid = instance.pid(),
            ssh_port = ?instance.endpoints().host_port(self.config.guest.login.port),
            accel = accel.as_str(),
            start = %start,
            "powered on"
        );
        self.start = start;
        self.disks_at = Some(instance.placement().clone());
        self.note_tpm_state(&instance);
        self.instance = Some(instance);
        Ok(())
    }

    /// Starts from the guest's ready snapshot where one can serve, else
    /// boots (saying why). A VM with disks restores only at its first
    /// power_on: later, its disks hold what it wrote, and it boots them.
    async fn start_from_snapshot(
        &mut self,
        qemu: &Path,
        launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
        first_power_on: bool,
    ) -> Result<(Instance, Start)> {
        let has_disks = self.disks.as_ref().is_some_and(|d| !d.is_empty());
        let store = match (&self.config.snapshot_dir, self.snapshot_unsupported()) {
            (_, Some(why)) => Err(why.to_string()),
            _ if has_disks && !first_power_on => Err(
                "the VM's disks hold what it wrote since its first start, so it boots them".into(),
            ),
            (Some(dir), None) => Ok(SnapshotStore::new(dir)),
            (None, None) => virtest_guest::cache::default_home()
                .map(|home| SnapshotStore::in_cache(&home))
                .map_err(|e| format!("no cache for snapshots: {e}")),
        };
        match store {
            Ok(store) => {
                let probe = binary::probe(qemu).map_err(Error::Qemu)?;
                let seed = match self.config.guest.cloud_init.enabled {
                    true => Some(self.seed()?),
                    false => None,
                };
                let key = snapshot::key(
                    &self.config,
                    &probe,
                    launch,
                    self.disks.as_ref(),
                    seed.as_ref(),
                )?;
                from_snapshot::start(self, &store, &key, launch).await
            }
            Err(why) => {
                tracing::debug!(why, "booting fresh");
                let host = self.config.host.clone();
                let instance = self
                    .start_instance_with(&host, launch, self.local_files(), false)
                    .await?;
                let why_not_snapshot = Some(why);
                Ok((instance, Start::Fresh { why_not_snapshot }))
            }
        }
    }

    /// Why no snapshot can serve this VM, if none can.
    fn snapshot_unsupported(&self) -> Option<&'static str> {
        if !self.config.host.is_local() {
            return Some(
                "a VM on another host boots: a snapshot's state goes to QEMU as a file descriptor, which SSH does not carry",
            );
        }
        let seed_password = matches!(self.config.login, Login::Password(_))
            || self.config.guest.login.password.is_some();
        snapshot::unsupported(&self.config.guest, seed_password)
    }

    /// Makes the VM's disk state the one frozen in a snapshot (nothing
    /// for a guest without disks), keeping the snapshot `held` in use as
    /// long as the VM's overlays are over its disks.
    pub(crate) async fn adopt_disks(&mut self, snapshot: &Path, held: InUse) -> Result<()> {
        match &mut self.disks {
            Some(disks) => disks.adopt(snapshot, held).await,
            None => Ok(()),
        }
    }

    /// Moves the VM's disk state into a snapshot being made (QEMU has
    /// ended).
    pub(crate) fn freeze_disks_into(&self, snapshot: &Path) -> std::io::Result<()> {
        match &self.disks {
            Some(disks) => disks.freeze_into(snapshot),
            None => Ok(()),
        }
    }

    /// Makes the VM's disk state anew from the guest's images, for a
    /// boot after a snapshot start fell through.
    /// This machine's files of the VM, where they are: what the command
    /// line of a power_on names.
    pub(crate) fn local_files(&self) -> Arc<Placement> {
        let disks = self.disks.as_ref().expect("made at the first power_on");
        Arc::new(Placement::here(disks))
    }

    pub(crate) async fn recreate_disks(&mut self) -> Result<()> {
        if self.disks.as_ref().is_some_and(|d| !d.is_empty()) {
            self.disks = None;
            self.disks_at = None;
            self.disks = Some(self.create_disks().await?);
        }
        Ok(())
    }

    /// The overlays over the guest's disks and its UEFI variables, in the
    /// VM's private `disks/` directory; kept when the config says.
    async fn create_disks(&self) -> Result<VmDisks> {
        let guest = &self.config.guest;
        let dir = self.log_dir.join("disks");
        let qemu_img = if guest.disks.is_empty() {
            PathBuf::new()
        } else {
            binary::find(BinaryKind::Img, self.config.qemu_img.as_deref()).map_err(Error::Qemu)?
        };
        let seed = match guest.cloud_init.enabled {
            true => Some(self.seed()?),
            false => None,
        };
        let mut disks = VmDisks::create(guest, &dir, &qemu_img, seed.as_ref()).await?;
        if self.config.keep_disks {
            disks.keep();
        }
        Ok(disks)
    }

    /// This VM's cloud-init seed: a fresh instance, the login user with
    /// the login key and the password when one is set.
    fn seed(&self) -> Result<Seed> {
        let guest = &self.config.guest;
        let guest_error = |source| Error::Guest {
            guest: guest.path.clone(),
            source,
        };
        let key = self.login_key().ok_or_else(|| Error::State {
            what: "a cloud-init guest needs a login key; none was found".into(),
        })?;
        let public = virtest_guest::keys::public_line_of(&key).map_err(guest_error)?;
        let password = match &self.config.login {
            Login::Password(password) => Some(password.clone()),
            Login::Guest | Login::Key(_) => guest.login.password.clone(),
        };
        let name = format!("virtest-{}", self.id);
        Ok(Seed {
            instance_id: name.clone(),
            hostname: name,
            user: self.login_user(),
            authorized_keys: vec![public],
            password,
            user_data: guest.cloud_init.user_data.clone(),
        })
    }

    /// Ends QEMU, gently first: the ACPI power button and the configured
    /// graceful timeout, then QMP `quit`, then SIGTERM, then SIGKILL.
    /// Always reaps. A guest that already shut itself down is fine.
    pub async fn power_off(&mut self) -> Result<PowerOff> {
        let graceful = self.config.graceful_timeout;
        self.power_off_within(graceful).await
    }

    /// [`Vm::power_off`], waiting at most `graceful` for the guest; with
    /// zero, the guest is not asked and QEMU quits at once.
    pub(crate) async fn power_off_within(&mut self, graceful: Duration) -> Result<PowerOff> {
        let span = tracing::info_span!(parent: &self.span, "power_off", phase = "powering off");
        self.remote = None;
        self.serial.forget();
        let Some(mut instance) = self.instance.take() else {
            return Ok(PowerOff::AlreadyOff);
        };
        let how = async {
            if !instance.is_running() {
                return PowerOff::ByGuest;
            }
            let qmp = instance.qmp().clone();
            let quick = Duration::from_secs(2);
            let steps: [(PowerOff, Duration); 4] = [
                (PowerOff::Graceful, graceful),
                (PowerOff::Quit, Duration::from_secs(3)),
                (PowerOff::Terminated, Duration::from_secs(3)),
                (PowerOff::Killed, Duration::from_secs(5)),
            ];
            for (how, wait) in steps {
                match how {
                    // No time for the guest: do not ask it.
                    PowerOff::Graceful if wait.is_zero() => continue,
                    PowerOff::Graceful => {
                        let asked = qmp.execute_within(system_powerdown {}, quick);
                        if asked.await.is_err() && !instance.is_running() {
                            return PowerOff::ByGuest;
                        }
                    }
                    PowerOff::Quit => {
                        let _ = qmp.execute_within(quit {}, quick).await;
                    }
                    PowerOff::Terminated => instance.signal(rustix::process::Signal::TERM).await,
                    PowerOff::Killed | PowerOff::AlreadyOff | PowerOff::ByGuest => {
                        instance.signal(rustix::process::Signal::KILL).await
                    }
                }
                if instance.wait_exit(wait).await.is_some() {
                    return how;
                }
                tracing::debug!(?how, "QEMU still running");
            }
            PowerOff::Killed
        }
        .instrument(span.clone())
        .await;
        instance.drain_console(Duration::from_secs(1)).await;
        instance.drain_qmp(Duration::from_secs(1)).await;
        drop(instance);
        self.files().qmp_log_written().await;
        span.in_scope(|| tracing::info!(?how, "powered off"));
        Ok(how)
    }
}
