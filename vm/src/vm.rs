//! [`Vm`]: one guest's whole life, from `power_on` to `power_off`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qapi::Enum;
use qapi::qmp::{
    ImageFormat, RunState, cont, query_status, quit, screendump, stop, system_powerdown,
    system_reset,
};
use serde_json::Value;
use tracing::Instrument;
use virtest_qemu_cmdline::QemuCmdline;
use virtest_qemu_cmdline::accel::{self, Accel, Chosen, HostKvm};
use virtest_qemu_cmdline::binary::{self, BinaryKind, Version};
use virtest_qmp::{Qmp, TranscriptWriter};
use virtest_remote::{Auth, SshConfig, SshSession};

use virtest_guest::cloud_init::Seed;
use virtest_guest::description::{CLOUD_INIT_READY_LINE, Ready};
use virtest_guest::snapshots::SnapshotStore;

use crate::config::{Login, VmConfig};
use crate::console::{Console, ConsoleCursor};
use crate::dirs;
use crate::disks::{Overlay, VmDisks};
use crate::error::{Error, Result};
use crate::instance::{Endpoints, Files, Instance};
use crate::launch::{ConsoleOutput, GuestLaunch};
use crate::network::NetworkNic;
use crate::snapshot::{self, BootMode, Start};

/// What the VM is doing, as QEMU says (`query-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    /// No QEMU process.
    Off,
    /// The guest runs.
    Running,
    /// Stopped by `pause` (or a debugger).
    Paused,
    /// Waiting for an incoming migration.
    InMigrate,
    /// The source after a completed migration.
    PostMigrate,
    /// The guest shut down and QEMU was told to stay.
    Shutdown,
    /// Any other QEMU run state, by its QAPI name.
    Other(String),
}

/// How a reboot is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// The guest reboots itself (`reboot` over the remote session).
    Guest,
    /// QEMU resets the machine (`system_reset`), like a reset button.
    Forced,
}

/// The QEMU binary (`explicit`, else `$QEMU`, else PATH), the
/// accelerator for `asked`, and QEMU's version. Blocking: it spawns QEMU
/// to probe it (once per binary and process).
fn resolve_qemu(explicit: Option<&Path>, asked: Accel) -> Result<(PathBuf, Chosen, Version)> {
    let qemu = binary::find(BinaryKind::System, explicit).map_err(Error::Qemu)?;
    let probe = binary::probe(&qemu).map_err(Error::Qemu)?;
    let decision =
        accel::choose(asked, &HostKvm::detect(), probe.has_accel("kvm")).map_err(Error::Qemu)?;
    tracing::debug!(accel = decision.accel.as_str(), reason = %decision.reason, "accelerator");
    Ok((qemu, decision.accel, probe.version))
}

/// How to log into a running guest by SSH, for a person: see
/// [`Vm::ssh_access`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The user.
    pub user: String,
    /// The private key, or `None` for a password login (the password is
    /// not given out).
    pub key: Option<PathBuf>,
    /// The guest's host key (`ssh-ed25519 AAAA...`), once a login saw it.
    pub host_key: Option<String>,
}

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

/// A virtual machine: made from a [`VmConfig`], started by
/// [`Vm::power_on`], stopped by [`Vm::power_off`]. Dropping a VM that is on
/// kills and reaps its QEMU.
///
/// ```no_run
/// # async fn f() -> virtest_vm::Result<()> {
/// use virtest_vm::{Vm, VmConfig};
/// let mut vm = Vm::new(VmConfig::default_guest()?);
/// vm.power_on().await?;
/// vm.login_remote().await?;
/// let uname = vm.remote()?.run("uname -r").await?;
/// println!("{}", uname.stdout);
/// vm.remote()?.run("shutdown -h now").await?;
/// vm.power_off().await?;
/// # Ok(()) }
/// ```
pub struct Vm {
    id: String,
    config: VmConfig,
    span: tracing::Span,
    /// Sockets, and logs when no log directory is configured.
    runtime_dir: PathBuf,
    log_dir: PathBuf,
    console: Option<Console>,
    /// `qmp.log`'s writer, shared by every QEMU process of the VM.
    qmp_log: Option<TranscriptWriter>,
    // Dropped before the runtime directory is removed.
    instance: Option<Instance>,
    remote: Option<SshSession>,
    /// The serial console session (`serial.rs`), until a power cycle or
    /// reboot.
    pub(crate) serial: Option<crate::serial::SerialLogin>,
    /// The guest agent's connection (`agent.rs`), with the socket of the
    /// QEMU process it is connected to.
    pub(crate) agent: Option<(PathBuf, virtest_qmp::Qga)>,
    /// Devices hot-plugged into the running QEMU (`hotplug.rs`), until
    /// it powers off.
    pub(crate) hotplugged: Vec<crate::hotplug::Hotplugged>,
    /// The overlays and firmware variables, made at the first power_on
    /// and dropped (removed) after QEMU.
    disks: Option<VmDisks>,
    /// The host key every login must present: the guest's, or the one
    /// the first login saw.
    host_key: Option<String>,
    /// How many QEMU processes this VM has started (names their sockets).
    generation: u32,
    /// The console position where the current boot began.
    boot_cursor: ConsoleCursor,
    /// Whether the ready line of the current boot has been seen.
    ready_seen: bool,
    /// How the last `power_on` started QEMU.
    start: Start,
    /// Whether the next login must refresh what a restored clone shares
    /// with its siblings (entropy, clock).
    refresh_pending: bool,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.id)
            .field("instance", &self.instance)
            .field("log_dir", &self.log_dir)
            .finish()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.remote = None;
        self.serial = None;
        self.instance = None;
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

impl Vm {
    /// A VM, not started.
    pub fn new(config: VmConfig) -> Vm {
        let id = dirs::short_id();
        let runtime_dir = dirs::runtime_dir(&id);
        let log_dir = config
            .log_dir
            .clone()
            .unwrap_or_else(|| runtime_dir.clone());
        Vm {
            span: tracing::info_span!(
                "vm",
                name = config.name.as_deref().unwrap_or("vm"),
                id = %id
            ),
            id,
            host_key: config.guest.login.host_key.clone(),
            disks: None,
            config,
            runtime_dir,
            log_dir,
            console: None,
            qmp_log: None,
            instance: None,
            remote: None,
            serial: None,
            agent: None,
            hotplugged: Vec::new(),
            generation: 0,
            boot_cursor: ConsoleCursor::default(),
            ready_seen: false,
            start: Start::NotStarted,
            refresh_pending: false,
        }
    }

    /// The VM's name in its test (`vm` unless [`VmConfig::name`] says).
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or("vm")
    }

    /// Adds a NIC on a network (for [`crate::Network::join`], which checks).
    pub(crate) fn join_network(&mut self, nic: NetworkNic) {
        self.config.networks.push(nic);
    }

    /// The VM's short id (in its tracing span and runtime directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Where `console.log`, `qmp.log` and `qemu.log` are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The private directory of the VM's sockets.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The VM's disk overlays (empty before the first `power_on`, and
    /// for a guest without disks).
    pub fn overlays(&self) -> &[Overlay] {
        self.disks.as_ref().map_or(&[], |d| d.overlays())
    }

    /// The directory of the VM's overlays and firmware variables, once
    /// made.
    pub fn disk_dir(&self) -> Option<&Path> {
        self.disks.as_ref().map(|d| d.dir())
    }

    /// Keeps the VM's disk files when it is dropped (for a failed test,
    /// say), in [`Vm::disk_dir`].
    pub fn keep_disks(&mut self) {
        if let Some(disks) = &mut self.disks {
            disks.keep();
        }
    }

    /// How the last `power_on` started the VM: booted, or restored from a
    /// ready snapshot (and whether it made it).
    pub fn start(&self) -> &Start {
        &self.start
    }

    /// Chooses how the next `power_on` starts the VM; a test of booting
    /// sets [`BootMode::Fresh`] whatever its parameters say.
    pub fn set_boot(&mut self, boot: BootMode) {
        self.config.boot = boot;
    }

    /// The host key logins must present, once known.
    pub fn host_key(&self) -> Option<&str> {
        self.host_key.as_deref()
    }

    /// The tracing span of this VM.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

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
        let span = tracing::info_span!(parent: &self.span, "power_on");
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
        self.serial = None;
        for device in std::mem::take(&mut self.hotplugged) {
            device.release(self.name());
        }
        // Finding and probing QEMU spawns it and waits: not on the async
        // workers, which other tests' VMs share.
        let (explicit, asked) = (self.config.qemu.clone(), self.config.accel);
        let (qemu, accel, qemu_version) =
            tokio::task::spawn_blocking(move || resolve_qemu(explicit.as_deref(), asked))
                .await
                .map_err(|e| Error::State {
                    what: format!("finding QEMU failed: {e}"),
                })??;
        let binary = qemu.clone();
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
                allow_reboot: true,
                disks: &overlays,
                uefi: uefi.as_ref(),
                seed: seed.as_deref(),
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
                self.start_instance_with(&launch).await?,
                Start::Fresh {
                    why_not_snapshot: None,
                },
            ),
            BootMode::Snapshot => {
                self.start_from_snapshot(&binary, &launch, first_power_on)
                    .await?
            }
        };
        let restored = matches!(
            start,
            Start::MadeSnapshot { .. } | Start::FromSnapshot { .. }
        );
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
                    &self.config.guest,
                    &probe,
                    launch,
                    self.disks.as_ref(),
                    seed.as_ref(),
                    &self.config.networks,
                )?;
                snapshot::start(self, &store, &key, launch).await
            }
            Err(why) => {
                tracing::debug!(why, "booting fresh");
                let instance = self.start_instance_with(launch).await?;
                let why_not_snapshot = Some(why);
                Ok((instance, Start::Fresh { why_not_snapshot }))
            }
        }
    }

    /// Why no snapshot can serve this VM, if none can.
    fn snapshot_unsupported(&self) -> Option<&'static str> {
        let seed_password = matches!(self.config.login, Login::Password(_))
            || self.config.guest.login.password.is_some();
        snapshot::unsupported(&self.config.guest, seed_password)
    }

    /// Makes the VM's disk state the one frozen in a snapshot (nothing
    /// for a guest without disks).
    pub(crate) async fn adopt_disks(&mut self, snapshot: &Path) -> Result<()> {
        match &mut self.disks {
            Some(disks) => disks.adopt(snapshot).await,
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
    pub(crate) async fn recreate_disks(&mut self) -> Result<()> {
        if self.disks.as_ref().is_some_and(|d| !d.is_empty()) {
            self.disks = None;
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

    /// The user `login_remote` logs in as.
    pub(crate) fn login_user(&self) -> String {
        self.config
            .user
            .clone()
            .unwrap_or_else(|| self.config.guest.login.user.clone())
    }

    /// The private key logins use: the config's, the guest's, or for a
    /// cloud-init guest that names none, virtest's own.
    fn login_key(&self) -> Option<PathBuf> {
        let guest = &self.config.guest;
        match &self.config.login {
            Login::Key(key) => Some(key.clone()),
            Login::Guest | Login::Password(_) => guest.login.key.clone().or_else(|| {
                let home = virtest_guest::cache::default_home().ok()?;
                guest
                    .cloud_init
                    .enabled
                    .then(|| virtest_guest::keys::virtest_key(&home).ok())
                    .flatten()
            }),
        }
    }

    /// Starts another QEMU process of this VM from the command line
    /// `build` makes for fresh endpoints, sharing the VM's console and
    /// logs. For the migration layer, which starts a destination this way
    /// and hands it to [`Vm::replace_instance`].
    pub async fn start_instance_with(
        &mut self,
        build: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    ) -> Result<Instance> {
        let console = self.console()?.clone();
        let qmp_log = self.qmp_log()?;
        self.generation += 1;
        let files = Files {
            sockets: &self.runtime_dir,
            qemu_log: &self.log_dir.join("qemu.log"),
            qmp_log: &qmp_log,
            console: &console,
        };
        Instance::start(&files, self.generation, self.config.start_timeout, build).await
    }

    /// Makes `instance` the VM's QEMU process and returns the previous
    /// one, if any. The remote session, bound to the old forwarded port,
    /// is dropped: call [`Vm::login_remote`] again.
    pub fn replace_instance(&mut self, instance: Instance) -> Option<Instance> {
        self.remote = None;
        self.instance.replace(instance)
    }

    /// Takes the VM's QEMU process out of it (for the snapshot maker,
    /// which ends its own).
    pub(crate) fn take_instance(&mut self) -> Option<Instance> {
        self.remote = None;
        self.serial = None;
        self.instance.take()
    }

    /// The VM's current QEMU process, to change (its recorded command
    /// line, after a hot-plug).
    pub(crate) fn instance_mut(&mut self) -> Result<&mut Instance> {
        self.instance.as_mut().ok_or(Error::Off {
            action: "change the QEMU process",
        })
    }

    /// The VM's current QEMU process.
    pub fn instance(&self) -> Result<&Instance> {
        self.instance.as_ref().ok_or(Error::Off {
            action: "reach QEMU",
        })
    }

    /// The console: every byte the guest wrote to its serial port, across
    /// power cycles and migrations.
    pub fn console(&mut self) -> Result<&Console> {
        if self.console.is_none() {
            dirs::create_private(&self.log_dir).map_err(|source| Error::Io {
                what: "creating the VM directory",
                path: self.log_dir.clone(),
                source,
            })?;
            let path = self.log_dir.join("console.log");
            let console = Console::create(&path).map_err(|source| Error::Io {
                what: "opening",
                path,
                source,
            })?;
            self.console = Some(console);
        }
        Ok(self.console.as_ref().expect("console set above"))
    }

    /// The writer of `qmp.log`, started with the VM's first QEMU (after
    /// [`Vm::console`] made the directory).
    fn qmp_log(&mut self) -> Result<TranscriptWriter> {
        if let Some(writer) = &self.qmp_log {
            return Ok(writer.clone());
        }
        let path = self.log_dir.join("qmp.log");
        let opened = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|file| TranscriptWriter::spawn(Box::new(file)));
        let writer = opened.map_err(|source| Error::Io {
            what: "opening",
            path,
            source,
        })?;
        Ok(self.qmp_log.insert(writer).clone())
    }

    /// Waits until `qmp.log` holds every line sent and received so far,
    /// for at most 5 s (a disk that hangs longer is warned of).
    async fn qmp_log_written(&self) {
        let Some(writer) = &self.qmp_log else { return };
        let wait = Duration::from_secs(5);
        if tokio::time::timeout(wait, writer.written()).await.is_err() {
            tracing::warn!(
                path = %self.log_dir.join("qmp.log").display(),
                "the QMP transcript is still not written after {wait:?}; reading it as it is"
            );
        }
    }

    /// Whether a QEMU was ever started for this VM (it may have ended
    /// since): then it has a console and QMP events to show.
    pub fn has_started_qemu(&self) -> bool {
        self.generation > 0
    }

    /// Whether QEMU is running.
    pub fn is_on(&self) -> bool {
        self.instance.as_ref().is_some_and(Instance::is_running)
    }

    /// QEMU's pid, while on.
    pub fn pid(&self) -> Option<u32> {
        self.instance
            .as_ref()
            .filter(|i| i.is_running())
            .map(Instance::pid)
    }

    /// The host port (on 127.0.0.1) forwarded to the guest's sshd.
    pub fn ssh_port(&self) -> Option<u16> {
        self.forwarded_port(self.config.guest.login.port)
    }

    /// The host port (on 127.0.0.1) forwarded to the guest's TCP port
    /// `guest_port`: its sshd's, or one of [`VmConfig::forward_ports`].
    /// QEMU chooses it, so it changes with each QEMU process (after a
    /// migration, say): ask again rather than keep it.
    ///
    /// ```no_run
    /// # async fn f(mut vm: virtest_vm::Vm) -> virtest_vm::Result<()> {
    /// // With `forward_ports: vec![80]` in the VmConfig:
    /// vm.power_on().await?;
    /// let web = format!("http://127.0.0.1:{}/", vm.forwarded_port(80).unwrap());
    /// # Ok(()) }
    /// ```
    pub fn forwarded_port(&self, guest_port: u16) -> Option<u16> {
        self.instance.as_ref()?.endpoints().host_port(guest_port)
    }

    /// The QMP connection of the running QEMU: commands and events.
    pub fn qmp(&self) -> Result<&Qmp> {
        match &self.instance {
            Some(instance) if instance.is_running() => Ok(instance.qmp()),
            _ => Err(Error::Off { action: "use QMP" }),
        }
    }

    /// The command line QEMU runs with.
    pub fn cmdline(&self) -> Option<&QemuCmdline> {
        self.instance.as_ref().map(Instance::cmdline)
    }

    /// QEMU's run state.
    pub async fn state(&self) -> Result<VmState> {
        if !self.is_on() {
            return Ok(VmState::Off);
        }
        let status = self.qmp_execute(query_status {}).await?;
        Ok(match status.status {
            RunState::running => VmState::Running,
            RunState::paused => VmState::Paused,
            RunState::inmigrate => VmState::InMigrate,
            RunState::postmigrate => VmState::PostMigrate,
            RunState::shutdown => VmState::Shutdown,
            other => VmState::Other(other.name().to_string()),
        })
    }

    /// Stops the guest's processors (its clock stops too).
    pub async fn pause(&self) -> Result<()> {
        self.qmp_execute(stop {}).await.map(drop)
    }

    /// Starts the processors again.
    pub async fn resume(&self) -> Result<()> {
        self.qmp_execute(cont {}).await.map(drop)
    }

    /// Resets the machine and returns at once; the guest boots again.
    pub async fn reset(&mut self) -> Result<()> {
        self.remote = None;
        self.serial = None;
        let cursor = self.console()?.cursor();
        self.qmp_execute(system_reset {}).await?;
        self.boot_cursor = cursor;
        self.ready_seen = false;
        Ok(())
    }

    /// Reboots the guest and waits (the login timeout) until it is ready
    /// again; [`Reboot::Guest`] needs a remote session. Call
    /// [`Vm::login_remote`] afterwards.
    pub async fn reboot(&mut self, how: Reboot) -> Result<()> {
        let span = tracing::info_span!(parent: &self.span, "reboot");
        self.serial = None;
        async {
            let cursor = self.console()?.cursor();
            let since = self.qmp()?.event_cursor();
            match how {
                Reboot::Forced => {
                    self.qmp_execute(system_reset {}).await?;
                }
                Reboot::Guest => {
                    let remote = self.remote.take().ok_or(Error::NoRemote)?;
                    // The session may end before `reboot` reports back.
                    let _ = remote.run("reboot").await;
                }
            }
            self.boot_cursor = cursor;
            self.ready_seen = false;
            let deadline = self.config.login_timeout;
            self.qmp()?
                .wait_event(since, "RESET", &Value::Null, deadline)
                .await
                .map_err(|source| Error::Qmp {
                    step: "waiting for the reset of the reboot".into(),
                    source,
                })?;
            self.wait_ready(deadline).await?;
            tracing::info!(?how, "rebooted");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Waits until `pattern` appears on the console in the current boot.
    pub async fn wait_for_console(
        &mut self,
        pattern: &str,
        deadline: Duration,
    ) -> Result<ConsoleCursor> {
        let since = self.boot_cursor;
        self.wait_for_console_from(since, pattern, deadline).await
    }

    /// Waits until `pattern` appears on the console after `since`
    /// (see [`Console::cursor`]); returns where it ends. Fails at once
    /// when QEMU exits.
    pub async fn wait_for_console_from(
        &mut self,
        since: ConsoleCursor,
        pattern: &str,
        deadline: Duration,
    ) -> Result<ConsoleCursor> {
        let console = self.console()?.clone();
        let mut changes = console.changes();
        let start = Instant::now();
        loop {
            if let Some(end) = console.find(since, pattern) {
                return Ok(end);
            }
            let instance = self.instance.as_mut().ok_or(Error::Off {
                action: "wait for the console",
            })?;
            let left = deadline.saturating_sub(start.elapsed());
            tokio::select! {
                _ = changes.changed() => {}
                status = instance.exited() => {
                    instance.drain_console(Duration::from_secs(1)).await;
                    if let Some(end) = console.find(since, pattern) {
                        return Ok(end);
                    }
                    let during = format!("while waiting for `{pattern}` on the console\nlast console lines:\n{}", console.tail(30));
                    return Err(instance.exit_error(status, &during));
                }
                _ = tokio::time::sleep(left) => {
                    return Err(Error::ConsoleTimeout {
                        pattern: pattern.to_string(),
                        after: deadline,
                        console_tail: console.tail(30),
                    });
                }
            }
        }
    }

    /// Waits until the guest is ready in the current boot: its ready line
    /// (its own, or cloud-init's), or its agent answering; at once when
    /// that was seen already, or when the guest's readiness is its sshd
    /// answering, which `login_remote` tries.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let marker = match &self.config.guest.ready {
            Ready::Console(line) => line.clone(),
            Ready::CloudInit => CLOUD_INIT_READY_LINE.to_string(),
            Ready::Ssh => return Ok(()),
            Ready::Agent if self.ready_seen => return Ok(()),
            Ready::Agent => {
                self.agent_within(deadline).await?;
                self.ready_seen = true;
                return Ok(());
            }
        };
        if self.ready_seen {
            return Ok(());
        }
        self.wait_for_console(&marker, deadline).await?;
        self.ready_seen = true;
        Ok(())
    }

    /// Writes a screendump of the display to `path` as PNG (needs the VGA
    /// card, on by default).
    pub async fn screendump(&self, path: &Path) -> Result<()> {
        let path = std::path::absolute(path).map_err(|source| Error::Io {
            what: "resolving",
            path: path.to_path_buf(),
            source,
        })?;
        self.qmp_execute(screendump {
            filename: path.to_string_lossy().into_owned(),
            format: Some(ImageFormat::png),
            device: None,
            head: None,
        })
        .await
        .map(drop)
    }

    /// The QMP events every QEMU of this VM sent, across power cycles and
    /// migrations, oldest first: read back from `qmp.log`, once every
    /// line received so far is written.
    pub async fn recorded_events(&self) -> Result<Vec<Value>> {
        self.qmp_log_written().await;
        let path = self.log_dir.join("qmp.log");
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

    /// Logs into the guest over SSH, waiting up to the configured login
    /// timeout (60 s by default); the session is then [`Vm::remote`].
    pub async fn login_remote(&mut self) -> Result<&SshSession> {
        let deadline = self.config.login_timeout;
        self.login_remote_within(deadline).await
    }

    /// [`Vm::login_remote`] with its own deadline. On timeout the error
    /// holds the console's last 30 lines.
    pub async fn login_remote_within(&mut self, deadline: Duration) -> Result<&SshSession> {
        let span = tracing::info_span!(parent: &self.span, "login_remote");
        let start = Instant::now();
        let port = self
            .ssh_port()
            .filter(|_| self.is_on())
            .ok_or(Error::Off { action: "log in" })?;
        self.remote = None;
        async {
            self.wait_ready_to_log_in(deadline).await?;
            let config = self.ssh_config(port)?;
            let left = deadline.saturating_sub(start.elapsed());
            // The session's span must hang off the VM's, not off this
            // call's: it lives as long as the session.
            let login = SshSession::wait_for_login(&config, left).instrument(self.span.clone());
            match login.await {
                Ok(session) => {
                    tracing::info!(elapsed = ?start.elapsed(), port, "logged in");
                    if std::mem::take(&mut self.refresh_pending) {
                        match snapshot::refresh(&session).await {
                            Ok(()) => tracing::debug!("refreshed the restored guest's entropy and clock"),
                            Err(e) => tracing::warn!(error = %e, "the restored guest shares its clock with the snapshot"),
                        }
                    }
                    if self.nics().next().is_some() {
                        self.set_network_addresses(&session).await?;
                    }
                    if self.host_key.is_none() {
                        tracing::info!(
                            fingerprint = session.host_key_fingerprint(),
                            "trusting the guest's host key on first use; later logins must present it"
                        );
                        self.host_key = Some(session.host_key().to_string());
                    }
                    Ok(session)
                }
                Err(source) => Err(Error::Login {
                    reason: match &source {
                        virtest_remote::Error::Auth { .. } => format!(
                            "the guest refused the login ({source}): check the password or key"
                        ),
                        virtest_remote::Error::HostKey { .. } => format!(
                            "the guest presented another SSH host key than this VM's ({source}): \
                             the guest is not the one first logged into, or its keys were remade"
                        ),
                        _ => format!("no SSH login into the guest within {deadline:?}"),
                    },
                    after: deadline,
                    console_tail: self.console()?.tail(30),
                    source: Some(Box::new(source)),
                }),
            }
        }
        .instrument(span)
        .await
        .map(|session| &*self.remote.insert(session))
    }

    /// Waits for the guest's ready signal, as `login_remote` does first;
    /// a guest that never gives it is an [`Error::Login`] that says so.
    pub(crate) async fn wait_ready_to_log_in(&mut self, deadline: Duration) -> Result<()> {
        match self.wait_ready(deadline).await {
            Err(Error::ConsoleTimeout {
                pattern,
                console_tail,
                ..
            }) => {
                let mut reason = format!(
                    "the guest did not get ready within {deadline:?}: it never printed `{pattern}` on its console"
                );
                if let Some(seed) = self.disks.as_ref().and_then(|d| d.seed()) {
                    reason.push_str(&format!(
                        " (its cloud-init seed, which prints it, is `{}`)",
                        seed.display()
                    ));
                }
                Err(Error::Login {
                    reason,
                    after: deadline,
                    console_tail,
                    source: None,
                })
            }
            other => other,
        }
    }

    /// How a person logs into the running guest with OpenSSH: what
    /// [`Vm::login_remote`] uses (`None` while off or when the guest has
    /// no way in).
    pub fn ssh_access(&self) -> Option<SshAccess> {
        let port = self.ssh_port().filter(|_| self.is_on())?;
        let config = self.ssh_config(port).ok()?;
        Some(SshAccess {
            port,
            user: config.user,
            key: match config.auth {
                Auth::KeyFile(key) => Some(key),
                Auth::Password(_) | Auth::Key(_) => None,
            },
            host_key: self.host_key.clone(),
        })
    }

    fn ssh_config(&self, port: u16) -> Result<SshConfig> {
        let login = &self.config.guest.login;
        Ok(SshConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            user: self.login_user(),
            auth: match (&self.config.login, self.login_key(), &login.password) {
                (Login::Password(password), _, _) => Auth::Password(password.clone()),
                (Login::Guest | Login::Key(_), Some(key), _) => Auth::KeyFile(key),
                (Login::Guest | Login::Key(_), None, Some(password)) => {
                    Auth::Password(password.clone())
                }
                (Login::Guest | Login::Key(_), None, None) => {
                    return Err(Error::State {
                        what: format!(
                            "no way to log into guest `{}`: its description gives no key or password, \
                             and virtest's own key (for a cloud-init guest) could not be made in the cache",
                            self.config.guest.name
                        ),
                    });
                }
            },
            known_host_keys: self.host_key.iter().cloned().collect(),
        })
    }

    /// The session `login_remote` opened.
    pub fn remote(&self) -> Result<&SshSession> {
        self.remote.as_ref().ok_or(Error::NoRemote)
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
    pub async fn power_off_within(&mut self, graceful: Duration) -> Result<PowerOff> {
        let span = tracing::info_span!(parent: &self.span, "power_off");
        self.remote = None;
        self.serial = None;
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
                    PowerOff::Terminated => instance.signal(libc::SIGTERM),
                    PowerOff::Killed | PowerOff::AlreadyOff | PowerOff::ByGuest => {
                        instance.signal(libc::SIGKILL)
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
        self.qmp_log_written().await;
        span.in_scope(|| tracing::info!(?how, "powered off"));
        Ok(how)
    }

    /// A QMP command on the running QEMU, its error naming the command.
    pub(crate) async fn qmp_execute<C: qapi::Command>(&self, command: C) -> Result<C::Ok> {
        self.qmp()?
            .execute(command)
            .await
            .map_err(|source| Error::Qmp {
                step: format!("`{}`", C::NAME),
                source,
            })
    }
}
