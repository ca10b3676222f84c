//! [`Vm`]: one guest's whole life, from `power_on` to `power_off`.
//!
//! Here: the VM's state, its QEMU process and logs, and what QMP does to
//! a running guest. Starting and ending QEMU are in `power`, logging in
//! by SSH in `login`; the crate's other modules add the agent, the
//! serial console, hot-plug and networks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qapi::Enum;
use qapi::qmp::{ImageFormat, RunState, cont, query_status, screendump, stop, system_reset};
use serde_json::Value;
use tracing::Instrument;
use virtest_qmp::{Qmp, TranscriptWriter};
use virtest_remote::SshSession;

use crate::config::VmConfig;
use crate::console::{Console, ConsoleCursor};
use crate::dirs;
use crate::disks::VmDisks;
use crate::error::{Error, Result};
use crate::exit::QemuExit;
use crate::extensions::Extensions;
use crate::instance::Instance;
use crate::placement::Placement;
use crate::snapshot::{BootMode, Start};

mod agent;
mod files;
mod from_snapshot;
mod hotplug;
mod incoming;
mod login;
mod networks;
mod power;
mod ready;
mod serial;
mod shares;
mod tpm;
mod within;

pub use files::VmFiles;
pub use hotplug::Hotplug;
pub use login::SshAccess;
pub use power::PowerOff;
pub use within::Within;

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
    serial: serial::SerialLink,
    /// The guest agent's connection (`agent.rs`), with the socket of the
    /// QEMU process it is connected to.
    agent: agent::AgentLink,
    /// Devices hot-plugged into the running QEMU (`hotplug.rs`), until
    /// it powers off.
    hotplugged: crate::hotplug::Plugged,
    /// The overlays and firmware variables, made at the first power_on
    /// and dropped (removed) after QEMU.
    disks: Option<VmDisks>,
    /// Where the VM's disks are now: their placement on the host of the
    /// QEMU that last ran them (`None` before the first power_on).
    disks_at: Option<Arc<Placement>>,
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
    /// Where the TPM of the VM's last QEMU keeps its state: on which
    /// host, in which directory (for a VM with a TPM).
    tpm_state: Option<(virtest_host::Host, PathBuf)>,
    /// What layers above keep with the VM.
    extensions: Extensions,
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
        self.serial.forget();
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
                vm = config.name.as_deref().unwrap_or("vm"),
                id = %id
            ),
            id,
            host_key: config.guest.login.host_key.clone(),
            disks: None,
            disks_at: None,
            config,
            runtime_dir,
            log_dir,
            console: None,
            qmp_log: None,
            instance: None,
            remote: None,
            serial: Default::default(),
            agent: Default::default(),
            hotplugged: Default::default(),
            generation: 0,
            boot_cursor: ConsoleCursor::default(),
            ready_seen: false,
            start: Start::NotStarted,
            refresh_pending: false,
            tpm_state: None,
            extensions: Extensions::default(),
        }
    }

    /// The VM's name in its test (`vm` unless [`VmConfig::name`] says).
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or("vm")
    }

    /// The VM's short id (in its tracing span and runtime directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Keeps the VM's disk files when it is dropped (for a failed test,
    /// say), in [`VmFiles::disk_dir`].
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

    /// Chooses the host the next `power_on` starts QEMU on: an error
    /// while QEMU runs (move a running VM with a migration).
    pub fn set_host(&mut self, host: virtest_host::Host) -> Result<()> {
        if self.is_on() {
            return Err(Error::State {
                what: format!(
                    "the VM runs on host `{}`: power it off to start it on `{}`, or migrate it there",
                    self.host().name(),
                    host.name()
                ),
            });
        }
        self.config.host = host;
        Ok(())
    }

    /// The tracing span of this VM.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Makes `instance` the VM's QEMU process and returns the previous
    /// one, if any, for the caller to end. The remote session, bound to
    /// the old forwarded port, is dropped: call [`Vm::login_remote`]
    /// again.
    pub fn hand_over(&mut self, instance: Instance) -> Option<Instance> {
        self.remote = None;
        let placement = instance.placement().clone();
        if placement.host().is_none()
            && let Some(disks) = &mut self.disks
        {
            disks.replace_overlays(placement.overlays());
        }
        self.disks_at = Some(placement);
        self.note_tpm_state(&instance);
        self.instance.replace(instance)
    }

    /// What layers above this one keep with the VM.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// What layers above this one keep with the VM, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Takes the VM's QEMU process out of it (for the snapshot maker,
    /// which ends its own).
    pub(crate) fn take_instance(&mut self) -> Option<Instance> {
        self.remote = None;
        self.serial.forget();
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

    /// How the VM's QEMU ended, when it ended by itself: killed, crashed,
    /// or quit by the guest (not through [`Vm::power_off`]).
    pub fn qemu_exit(&self) -> Option<QemuExit> {
        self.instance.as_ref()?.ended()
    }

    /// The error for `action` on a VM that is not on: its QEMU's end
    /// when it ended by itself.
    pub(crate) fn off_error(&self, action: &'static str) -> Error {
        match self.qemu_exit() {
            Some(exit) => Error::QemuEnded {
                action: action.to_string(),
                exit,
            },
            None => Error::Off { action },
        }
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

    /// The host port (on 127.0.0.1) forwarded to the guest's sshd
    /// ([`Vm::ssh_access`] gives it out).
    pub(crate) fn ssh_port(&self) -> Option<u16> {
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

    /// The host the VM's QEMU runs on: the running one's, else the
    /// configured one ([`VmConfig::host`]), where `power_on` starts it.
    pub fn host(&self) -> &virtest_host::Host {
        match &self.instance {
            Some(instance) => instance.host(),
            None => &self.config.host,
        }
    }

    /// The QMP connection of the running QEMU: commands and events.
    pub fn qmp(&self) -> Result<&Qmp> {
        match &self.instance {
            Some(instance) if instance.is_running() => Ok(instance.qmp()),
            _ => Err(self.off_error("use QMP")),
        }
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

    /// Reboots the guest and waits (the login timeout) until it is ready
    /// again; [`Reboot::Guest`] needs a remote session. Call
    /// [`Vm::login_remote`] afterwards.
    pub async fn reboot(&mut self, how: Reboot) -> Result<()> {
        let span = tracing::info_span!(parent: &self.span, "reboot", phase = "rebooting");
        self.serial.forget();
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

    /// Writes a screendump of the display to `path` as PNG (needs the VGA
    /// card, on by default).
    pub async fn screendump(&self, path: &Path) -> Result<()> {
        let path = std::path::absolute(path).map_err(|source| Error::Io {
            what: "resolving",
            path: path.to_path_buf(),
            source,
        })?;
        // QEMU on another host writes there, into its own directory.
        let instance = self.instance()?;
        let host = instance.host();
        let written = match host.is_local() {
            true => path.clone(),
            false => instance
                .endpoints()
                .qmp_socket
                .with_file_name("screendump.png"),
        };
        self.qmp_execute(screendump {
            filename: written.to_string_lossy().into_owned(),
            format: Some(ImageFormat::png),
            device: None,
            head: None,
        })
        .await?;
        if written != path {
            let bytes = host.read_file(&written).await.map_err(Error::Host)?;
            std::fs::write(&path, bytes).map_err(|source| Error::Io {
                what: "writing",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// A QMP command on the running QEMU, its error naming the command.
    /// A connection lost because QEMU ended is told as QEMU's end.
    pub(crate) async fn qmp_execute<C: qapi::Command>(&self, command: C) -> Result<C::Ok> {
        match self.qmp()?.execute(command).await {
            Ok(answer) => Ok(answer),
            Err(source @ virtest_qmp::Error::Disconnected { .. }) => {
                match self.qemu_exit_within(Duration::from_secs(1)).await {
                    Some(exit) => Err(Error::QemuEnded {
                        action: format!("run `{}`", C::NAME),
                        exit,
                    }),
                    None => Err(Error::Qmp {
                        step: format!("`{}`", C::NAME),
                        source,
                    }),
                }
            }
            Err(source) => Err(Error::Qmp {
                step: format!("`{}`", C::NAME),
                source,
            }),
        }
    }

    /// How QEMU ended, waiting at most `deadline` for it to end: its
    /// sockets close a moment before its exit status is known.
    async fn qemu_exit_within(&self, deadline: Duration) -> Option<QemuExit> {
        self.instance.as_ref()?.wait_exit(deadline).await;
        self.qemu_exit()
    }
}
