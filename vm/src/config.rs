//! What a VM is made from.

use std::path::PathBuf;
use std::time::Duration;
use virtest_host::Host;

use virtest_guest::GuestDescription;
use virtest_guest::description::Share;
use virtest_guest::snapshots::StateFormat;
use virtest_qemu_cmdline::Arg;
use virtest_qemu_cmdline::accel::Accel;

use crate::error::{Error, Result};
use crate::snapshot::BootMode;

/// How `login_remote` authenticates.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Login {
    /// The guest's own credentials: its key, else its password (the
    /// default).
    #[default]
    Guest,
    /// A private key file.
    Key(PathBuf),
    /// A password.
    Password(String),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Guest => f.write_str("Guest"),
            Login::Key(path) => f.debug_tuple("Key").field(path).finish(),
            Login::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// Everything a [`Vm`](crate::Vm) is made from. Only `guest` is needed;
/// the rest has defaults, most of them the guest's.
///
/// ```no_run
/// # fn f() -> virtest_vm::Result<()> {
/// use virtest_vm::{Vm, VmConfig};
/// let mut config = VmConfig::default_guest()?;
/// config.memory_mib = Some(512);
/// config.log_dir = Some("results/vm".into());
/// let vm = Vm::new(config);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The VM's name in a test of several (`None`: `vm`); it names the
    /// VM in every log line.
    pub name: Option<String>,
    /// The guest: how it boots, its disks, how to log in, its machine.
    pub guest: GuestDescription,
    /// The QEMU binary (`None`: `$QEMU`, then `qemu-system-x86_64` on PATH).
    pub qemu: Option<PathBuf>,
    /// The accelerator (`auto`: KVM where it can boot a guest, else TCG).
    pub accel: Accel,
    /// Memory in MiB (`None`: the guest's hint).
    pub memory_mib: Option<u32>,
    /// Processors (`None`: the guest's).
    pub cpus: Option<u32>,
    /// More QEMU options, appended (devices, objects, ...).
    pub extra_args: Vec<Arg>,
    /// Guest TCP ports forwarded from 127.0.0.1, besides SSH: ports QEMU
    /// chooses, which [`crate::Vm::forwarded_port`] tells.
    pub forward_ports: Vec<u16>,
    /// The VM's NICs on private networks, besides its user-mode NIC
    /// (added by [`crate::Network::join`]).
    pub networks: Vec<crate::NetworkNic>,
    /// Give the guest a guest agent channel (the virtio-serial port
    /// `org.qemu.guest_agent.0`) that [`crate::Vm::agent`] speaks to;
    /// the guest must run `qemu-ga` on it.
    pub agent: bool,
    /// Give the guest a VGA card, which screendumps need.
    pub vga: bool,
    /// Give the guest a TPM 2.0: each QEMU process gets an `swtpm` of
    /// its own, whose state moves with a live migration and is part of
    /// a ready snapshot (the guest's `machine.tpm`, to start with).
    pub tpm: bool,
    /// swtpm, the TPM emulator (`None`: `$SWTPM`, then `swtpm` on PATH).
    pub swtpm: Option<PathBuf>,
    /// Host folders shared into the guest (the guest's own, from its
    /// description, and those [`crate::Vm::share`] adds). A VM with one
    /// cannot be migrated.
    pub shares: Vec<Share>,
    /// Where `console.log`, `qmp.log` and `qemu.log` go (`None`: the VM's
    /// private runtime directory, removed when the VM is dropped).
    pub log_dir: Option<PathBuf>,
    /// The user `login_remote` logs in as (`None`: the guest's).
    pub user: Option<String>,
    /// How `login_remote` authenticates.
    pub login: Login,
    /// How long `login_remote` (and a reboot) waits for the guest (the
    /// guest's `login.timeout`, 60 s unless it says).
    pub login_timeout: Duration,
    /// qemu-img, which makes the overlays of a guest with disks (`None`:
    /// `$QEMU_IMG`, then `qemu-img` on PATH).
    pub qemu_img: Option<PathBuf>,
    /// Keep the VM's disk overlays when it is dropped (they are removed
    /// otherwise).
    pub keep_disks: bool,
    /// On a destination QEMU of another binary, run the versioned
    /// machine type the source runs (`q35` on 7.2 is `pc-q35-7.2`), which
    /// [`Vm::start_incoming`](crate::Vm::start_incoming) does; off, the
    /// destination gets `-machine` as written and QEMU itself refuses a
    /// state of another type.
    pub pin_machine_type: bool,
    /// How long `power_off` waits for the guest to power itself off
    /// after an ACPI power-button press before it asks QEMU to quit.
    pub graceful_timeout: Duration,
    /// How long QEMU may take to start (console and QMP connected).
    pub start_timeout: Duration,
    /// Boot, or start from a ready snapshot ([`BootMode::Fresh`] here;
    /// the harness's `boot` parameter defaults to snapshots).
    pub boot: BootMode,
    /// Where ready snapshots are kept (`None`: the cache's `snapshots/`).
    pub snapshot_dir: Option<PathBuf>,
    /// How a ready snapshot's state is written: QEMU's migration stream
    /// (the default: it restores faster, see the README), or mapped-ram
    /// (QEMU 9.0 on; a snapshot of its own, its key says so).
    pub snapshot_format: StateFormat,
    /// The host `power_on` starts QEMU on ([`Host::local`] here; see
    /// `virtest_host` for hosts over SSH and simulated ones).
    pub host: Host,
}

impl VmConfig {
    /// A configuration with the defaults, for `guest`.
    pub fn new(guest: GuestDescription) -> VmConfig {
        VmConfig {
            login_timeout: guest.login.timeout,
            shares: guest.shares.clone(),
            tpm: guest.machine.tpm,
            swtpm: None,
            guest,
            qemu: None,
            accel: Accel::Auto,
            memory_mib: None,
            cpus: None,
            extra_args: Vec::new(),
            vga: true,
            log_dir: None,
            name: None,
            user: None,
            login: Login::Guest,
            qemu_img: None,
            keep_disks: false,
            pin_machine_type: true,
            forward_ports: Vec::new(),
            networks: Vec::new(),
            agent: true,
            graceful_timeout: Duration::from_secs(20),
            start_timeout: Duration::from_secs(30),
            boot: BootMode::Fresh,
            snapshot_dir: None,
            snapshot_format: StateFormat::Stream,
            host: Host::local(),
        }
    }

    /// The default guest that `virtest bootstrap` built into the cache.
    pub fn default_guest() -> Result<VmConfig> {
        let home = virtest_guest::cache::default_home().map_err(|source| Error::Guest {
            guest: PathBuf::from("default"),
            source,
        })?;
        let dir = virtest_guest::cache::guest_dir(&home, "default");
        let (guest, _) = GuestDescription::load(&dir).map_err(|source| Error::Guest {
            guest: dir.clone(),
            source,
        })?;
        Ok(VmConfig::new(guest))
    }
}
