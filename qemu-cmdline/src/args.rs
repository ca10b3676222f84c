//! The options of a QEMU command line, typed by the kind of value each
//! takes.

use std::ffi::OsString;

use crate::props::Props;

/// Options that take a property list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropsOption {
    /// `-machine q35,accel=tcg` (head: machine type).
    Machine,
    /// `-accel tcg,thread=multi` (head: accelerator).
    Accel,
    /// `-cpu max,+avx2` (head: model).
    Cpu,
    /// `-m 256` or `-m size=256M,maxmem=1G` (head: size).
    Memory,
    /// `-smp 2,sockets=1` (head: CPU count).
    Smp,
    /// `-device virtio-net-pci,netdev=n0` (head: driver).
    Device,
    /// `-netdev user,id=n0,hostfwd=...` (head: backend type).
    Netdev,
    /// `-chardev socket,id=c0,path=...` (head: backend).
    Chardev,
    /// `-object rng-random,id=rng0,filename=/dev/urandom` (head: QOM type).
    Object,
    /// `-display none` (head: display type).
    Display,
    /// `-name guest,debug-threads=on` (head: name).
    Name,
    /// `-mon chardev=c0,mode=control`.
    Mon,
    /// `-drive file=...,if=none,id=d0`.
    Drive,
    /// `-blockdev driver=qcow2,node-name=disk,...`.
    Blockdev,
    /// `-fsdev local,id=fs0,path=...` (head: backend): a host folder a
    /// virtio-9p device shares.
    Fsdev,
    /// `-tpmdev emulator,id=tpm0,chardev=c0` (head: backend): the TPM a
    /// `tpm-tis` device is.
    Tpmdev,
}

/// Options that take one plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueOption {
    /// `-kernel PATH`.
    Kernel,
    /// `-initrd PATH`.
    Initrd,
    /// `-append CMDLINE`.
    Append,
    /// `-serial DEV` (`chardev:c0`, `file:PATH`, `stdio`).
    Serial,
    /// `-qmp DEV` (`unix:PATH,server=on,wait=off`).
    Qmp,
    /// `-vga TYPE`.
    Vga,
    /// `-uuid UUID`.
    Uuid,
    /// `-pidfile PATH`.
    Pidfile,
    /// `-incoming URI` (`defer`, `tcp:...`).
    Incoming,
}

/// Options that take no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagOption {
    /// `-nodefaults`.
    NoDefaults,
    /// `-no-user-config`.
    NoUserConfig,
    /// `-no-reboot`.
    NoReboot,
    /// `-no-shutdown`.
    NoShutdown,
    /// `-S` (start paused).
    Paused,
    /// `-nographic`.
    NoGraphic,
}

/// One option of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An option with a property list.
    Props(PropsOption, Props),
    /// An option with one value.
    Value(ValueOption, String),
    /// An option without a value.
    Flag(FlagOption),
    /// An option this crate does not model, with the values that followed
    /// it, kept verbatim.
    Raw(Vec<OsString>),
}

impl PropsOption {
    /// Every option of this kind.
    pub const ALL: [PropsOption; 16] = [
        PropsOption::Machine,
        PropsOption::Accel,
        PropsOption::Cpu,
        PropsOption::Memory,
        PropsOption::Smp,
        PropsOption::Device,
        PropsOption::Netdev,
        PropsOption::Chardev,
        PropsOption::Object,
        PropsOption::Display,
        PropsOption::Name,
        PropsOption::Mon,
        PropsOption::Drive,
        PropsOption::Blockdev,
        PropsOption::Fsdev,
        PropsOption::Tpmdev,
    ];

    /// The option's name without its dash.
    pub fn name(self) -> &'static str {
        match self {
            PropsOption::Machine => "machine",
            PropsOption::Accel => "accel",
            PropsOption::Cpu => "cpu",
            PropsOption::Memory => "m",
            PropsOption::Smp => "smp",
            PropsOption::Device => "device",
            PropsOption::Netdev => "netdev",
            PropsOption::Chardev => "chardev",
            PropsOption::Object => "object",
            PropsOption::Display => "display",
            PropsOption::Name => "name",
            PropsOption::Mon => "mon",
            PropsOption::Drive => "drive",
            PropsOption::Blockdev => "blockdev",
            PropsOption::Fsdev => "fsdev",
            PropsOption::Tpmdev => "tpmdev",
        }
    }

    /// Whether a first item without `=` is the option's implied value.
    pub fn has_head(self) -> bool {
        !matches!(
            self,
            PropsOption::Mon | PropsOption::Drive | PropsOption::Blockdev
        )
    }

    /// Whether the option may appear once only (later ones replace it).
    pub fn is_single(self) -> bool {
        matches!(
            self,
            PropsOption::Machine
                | PropsOption::Cpu
                | PropsOption::Memory
                | PropsOption::Smp
                | PropsOption::Display
                | PropsOption::Name
        )
    }

    /// The key that names an instance (`id`, `node-name`), for options
    /// that may repeat.
    pub fn id_key(self) -> Option<&'static str> {
        match self {
            PropsOption::Device
            | PropsOption::Netdev
            | PropsOption::Chardev
            | PropsOption::Object
            | PropsOption::Drive
            | PropsOption::Fsdev
            | PropsOption::Tpmdev => Some("id"),
            PropsOption::Blockdev => Some("node-name"),
            _ => None,
        }
    }
}

impl ValueOption {
    /// Every option of this kind.
    pub const ALL: [ValueOption; 9] = [
        ValueOption::Kernel,
        ValueOption::Initrd,
        ValueOption::Append,
        ValueOption::Serial,
        ValueOption::Qmp,
        ValueOption::Vga,
        ValueOption::Uuid,
        ValueOption::Pidfile,
        ValueOption::Incoming,
    ];

    /// The option's name without its dash.
    pub fn name(self) -> &'static str {
        match self {
            ValueOption::Kernel => "kernel",
            ValueOption::Initrd => "initrd",
            ValueOption::Append => "append",
            ValueOption::Serial => "serial",
            ValueOption::Qmp => "qmp",
            ValueOption::Vga => "vga",
            ValueOption::Uuid => "uuid",
            ValueOption::Pidfile => "pidfile",
            ValueOption::Incoming => "incoming",
        }
    }

    /// Whether the option may appear once only.
    pub fn is_single(self) -> bool {
        !matches!(self, ValueOption::Serial | ValueOption::Qmp)
    }
}

impl FlagOption {
    /// Every option of this kind.
    pub const ALL: [FlagOption; 6] = [
        FlagOption::NoDefaults,
        FlagOption::NoUserConfig,
        FlagOption::NoReboot,
        FlagOption::NoShutdown,
        FlagOption::Paused,
        FlagOption::NoGraphic,
    ];

    /// The option's name without its dash.
    pub fn name(self) -> &'static str {
        match self {
            FlagOption::NoDefaults => "nodefaults",
            FlagOption::NoUserConfig => "no-user-config",
            FlagOption::NoReboot => "no-reboot",
            FlagOption::NoShutdown => "no-shutdown",
            FlagOption::Paused => "S",
            FlagOption::NoGraphic => "nographic",
        }
    }
}

impl Arg {
    /// The option as QEMU's argv has it.
    pub fn to_args(&self) -> Vec<OsString> {
        match self {
            Arg::Props(option, props) => vec![
                format!("-{}", option.name()).into(),
                props.to_string().into(),
            ],
            Arg::Value(option, value) => vec![format!("-{}", option.name()).into(), value.into()],
            Arg::Flag(flag) => vec![format!("-{}", flag.name()).into()],
            Arg::Raw(args) => args.clone(),
        }
    }

    /// The option as one line, for messages (`-device virtio-net-pci,netdev=n0`).
    pub fn display(&self) -> String {
        self.to_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
