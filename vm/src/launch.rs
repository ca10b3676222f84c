//! The QEMU command line of a guest, from its description.

use std::ffi::OsString;
use std::path::PathBuf;

use virtest_guest::GuestDescription;
use virtest_guest::description::Share;
use virtest_qemu_cmdline::accel::Chosen;
use virtest_qemu_cmdline::binary::Version;
use virtest_qemu_cmdline::cmdline::socket_chardev_props;
use virtest_qemu_cmdline::quirks;
use virtest_qemu_cmdline::{
    Arg, FlagOption, HostFwd, Props, PropsOption, QemuCmdline, ValueOption,
};

use crate::disks::Overlay;
use crate::firmware::UefiFiles;
use crate::network::NetworkNic;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// QEMU writes it to a file.
    File(PathBuf),
    /// QEMU serves it on a unix socket (for a serial session) and also
    /// writes it to `log`.
    Serve {
        /// The socket QEMU listens on.
        socket: PathBuf,
        /// The log file.
        log: PathBuf,
    },
    /// QEMU connects to a unix socket the caller already listens on, so
    /// no output is lost before the caller reads.
    Connect(PathBuf),
}

/// How to run one guest: everything its command line is made from.
#[derive(Debug, Clone)]
pub struct GuestLaunch<'a> {
    /// The guest.
    pub guest: &'a GuestDescription,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The accelerator.
    pub accel: Chosen,
    /// The QEMU binary's version, where known: some versions need a
    /// workaround ([`virtest_qemu_cmdline::quirks`]).
    pub qemu_version: Option<Version>,
    /// Memory in MiB (`None`: the guest's).
    pub memory_mib: Option<u32>,
    /// Processors (`None`: the guest's).
    pub cpus: Option<u32>,
    /// The host port forwarded, on 127.0.0.1, to the guest's sshd (0:
    /// QEMU chooses).
    pub ssh_host_port: u16,
    /// More guest TCP ports forwarded from 127.0.0.1, each on a port QEMU
    /// chooses.
    pub forward_ports: &'a [u16],
    /// NICs on private networks, after the user-mode one.
    pub networks: &'a [NetworkNic],
    /// Where the serial console goes.
    pub console: ConsoleOutput,
    /// Give the guest a standard VGA card (needed for screendumps).
    pub vga: bool,
    /// A unix socket QEMU serves QMP on, if any.
    pub qmp_socket: Option<PathBuf>,
    /// A unix socket QEMU serves the guest agent's channel on, if any
    /// (a virtio-serial port named `org.qemu.guest_agent.0`).
    pub agent_socket: Option<PathBuf>,
    /// The control socket of a TPM emulator (swtpm) QEMU connects to,
    /// for a TPM 2.0 (`tpm-tis`); the emulator must listen before QEMU
    /// starts.
    pub tpm_socket: Option<PathBuf>,
    /// Whether a guest reboot restarts it (else QEMU exits).
    pub allow_reboot: bool,
    /// The VM's overlay of each of the guest's disks, in order (the base
    /// images are never opened for writing).
    pub disks: &'a [Overlay],
    /// The UEFI firmware and this VM's variable store, for a UEFI guest.
    pub uefi: Option<&'a UefiFiles>,
    /// The VM's cloud-init seed volume, attached read-only.
    pub seed: Option<&'a std::path::Path>,
    /// Host folders shared into the guest (virtio-9p); the guest's own
    /// unless a caller says otherwise.
    pub shares: &'a [Share],
    /// Give the guest a VM generation id (`vmgenid`, a new id each time
    /// QEMU starts), on which Linux reseeds its RNG: a VM restored from a
    /// snapshot must not share its siblings' random numbers.
    pub generation_id: bool,
}

impl<'a> GuestLaunch<'a> {
    /// The launch of `guest` on `qemu` under `accel`, its console to
    /// `console`, with nothing else: no QMP or agent socket, no forwarded
    /// port but SSH on one QEMU chooses, no VGA, no disks of the VM's
    /// own, and `-no-reboot`. Set the fields a caller needs.
    ///
    /// ```no_run
    /// # fn f(guest: &virtest_guest::GuestDescription) {
    /// use virtest_qemu_cmdline::accel::Chosen;
    /// use virtest_vm::{ConsoleOutput, GuestLaunch};
    /// let launch = GuestLaunch {
    ///     ssh_host_port: 40022,
    ///     qmp_socket: Some("/tmp/vm/qmp.sock".into()),
    ///     ..GuestLaunch::new(
    ///         guest,
    ///         "qemu-system-x86_64".into(),
    ///         Chosen::Tcg,
    ///         ConsoleOutput::File("/tmp/vm/console.log".into()),
    ///     )
    /// };
    /// let child = launch.cmdline().to_command().spawn();
    /// # }
    /// ```
    pub fn new(
        guest: &'a GuestDescription,
        qemu: PathBuf,
        accel: Chosen,
        console: ConsoleOutput,
    ) -> GuestLaunch<'a> {
        GuestLaunch {
            guest,
            qemu,
            accel,
            qemu_version: None,
            memory_mib: None,
            cpus: None,
            ssh_host_port: 0,
            forward_ports: &[],
            networks: &[],
            console,
            vga: false,
            qmp_socket: None,
            agent_socket: None,
            tpm_socket: None,
            allow_reboot: false,
            disks: &[],
            uefi: None,
            seed: None,
            shares: &guest.shares,
            generation_id: false,
        }
    }

    /// The command line: the guest's machine and devices, its firmware,
    /// its disks (through the VM's overlays), direct kernel boot when the
    /// guest has a kernel, user networking with sshd forwarded to
    /// 127.0.0.1, a NIC on each private network, a random-number device,
    /// and nothing QEMU would add by default.
    pub fn cmdline(&self) -> QemuCmdline {
        let guest = self.guest;
        let machine = &guest.machine;
        let mut cmd = QemuCmdline::new(&self.qemu);
        cmd.machine(&machine.machine_type)
            .accel(self.accel.as_str());
        if let Some(cpu) = guest.arch.cpu(self.accel) {
            cmd.cpu(cpu);
        }
        let mib = self.memory_mib.unwrap_or(machine.memory_mib);
        match self.qemu_version {
            Some(version) if quirks::tcg_migration_loses_writes(version, self.accel) => {
                cmd.memory_kib(quirks::guest_ram_kib(mib, version, self.accel))
            }
            _ => cmd.memory_mib(mib),
        };
        cmd.flag(FlagOption::NoDefaults)
            .flag(FlagOption::NoUserConfig);
        cmd.push(Arg::Props(PropsOption::Display, Props::with_head("none")));
        if let Some(uefi) = self.uefi.filter(|_| guest.boot.firmware.is_uefi()) {
            if uefi.secure {
                // Secure Boot's variables live in flash only SMM writes.
                let mut machine = Props::with_head(&guest.machine.machine_type);
                machine.set("smm", "on");
                cmd.set_props(PropsOption::Machine, machine);
                cmd.push(Arg::Raw(vec![
                    "-global".into(),
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                ]));
            }
            for (unit, file, readonly) in [(0, &uefi.code, true), (1, &uefi.vars, false)] {
                let mut drive = Props::default();
                drive
                    .set("if", "pflash")
                    .set("format", "raw")
                    .set("unit", unit.to_string())
                    .set("file", file.to_string_lossy());
                if readonly {
                    drive.set("readonly", "on");
                }
                cmd.push(Arg::Props(PropsOption::Drive, drive));
            }
        }
        if let Some(kernel) = &guest.boot.kernel {
            cmd.direct_boot(
                &kernel.kernel.to_string_lossy(),
                kernel
                    .initrd
                    .as_deref()
                    .map(|p| p.to_string_lossy())
                    .as_deref(),
                &kernel.cmdline,
            );
        }
        for (index, overlay) in self.disks.iter().enumerate() {
            let id = disk_id(index);
            let boot_index = index.to_string();
            let device: &[(&str, &str)] = match guest.boot.kernel {
                None => &[("bootindex", &boot_index)],
                Some(_) => &[],
            };
            let drive = [("discard", "unmap")];
            cmd.virtio_disk(&id, &overlay.path, "qcow2", &drive, device);
        }
        if let Some(seed) = self.seed {
            cmd.virtio_disk("seed", seed, "raw", &[("readonly", "on")], &[]);
        }
        let cpus = self.cpus.unwrap_or(machine.cpus);
        if cpus != 1 {
            cmd.smp(cpus);
        }
        match &self.console {
            ConsoleOutput::File(log) => {
                cmd.set_value(ValueOption::Serial, format!("file:{}", log.display()));
            }
            ConsoleOutput::Serve { socket, log } => {
                let mut chardev = socket_chardev_props("console", &socket.to_string_lossy());
                chardev.set("logfile", log.to_string_lossy());
                cmd.push(Arg::Props(PropsOption::Chardev, chardev));
                cmd.set_value(ValueOption::Serial, "chardev:console");
            }
            ConsoleOutput::Connect(socket) => {
                let mut chardev = Props::with_head("socket");
                chardev
                    .set("id", "console")
                    .set("path", socket.to_string_lossy())
                    .set("server", "off");
                cmd.push(Arg::Props(PropsOption::Chardev, chardev));
                cmd.set_value(ValueOption::Serial, "chardev:console");
            }
        }
        if self.vga {
            cmd.device("VGA", &[]);
        }
        let mut forwards = vec![HostFwd::tcp(self.ssh_host_port, guest.login.port)];
        forwards.extend(self.forward_ports.iter().map(|&port| HostFwd::tcp(0, port)));
        cmd.user_netdev("net0", &forwards)
            .device(&machine.net_device, &[("netdev", "net0")]);
        for nic in self.networks {
            let id = nic.netdev_id();
            cmd.multicast_netdev(&id, nic.segment);
            cmd.device(&machine.net_device, &[("netdev", &id), ("mac", &nic.mac)]);
        }
        cmd.device("virtio-rng-pci", &[]);
        for (index, share) in self.shares.iter().enumerate() {
            push_share(&mut cmd, index, share);
        }
        for port in crate::hotplug::root_ports(&machine.machine_type) {
            cmd.push(Arg::Props(PropsOption::Device, port));
        }
        if self.generation_id && guest.arch.has_generation_id() {
            cmd.device("vmgenid", &[("guid", "auto")]);
        }
        for device in &machine.devices {
            let props = Props::parse(device, true);
            cmd.push(Arg::Props(PropsOption::Device, props));
        }
        if let Some(socket) = &self.agent_socket {
            cmd.push(Arg::Props(
                PropsOption::Chardev,
                socket_chardev_props("agent", &socket.to_string_lossy()),
            ));
            cmd.device("virtio-serial-pci", &[("id", "agent-serial")]);
            cmd.device(
                "virtserialport",
                &[("chardev", "agent"), ("name", "org.qemu.guest_agent.0")],
            );
        }
        if let Some(socket) = &self.tpm_socket {
            let mut chardev = Props::with_head("socket");
            chardev
                .set("id", "tpm")
                .set("path", socket.to_string_lossy());
            cmd.push(Arg::Props(PropsOption::Chardev, chardev));
            let mut tpmdev = Props::with_head("emulator");
            tpmdev.set("id", "tpm0").set("chardev", "tpm");
            cmd.push(Arg::Props(PropsOption::Tpmdev, tpmdev));
            cmd.device("tpm-tis", &[("tpmdev", "tpm0")]);
        }
        if let Some(socket) = &self.qmp_socket {
            cmd.set_value(
                ValueOption::Qmp,
                format!("unix:{},server=on,wait=off", socket.display()),
            );
        }
        if !self.allow_reboot {
            cmd.flag(FlagOption::NoReboot);
        }
        if !machine.qemu_args.is_empty() {
            let argv: Vec<OsString> = machine.qemu_args.iter().map(OsString::from).collect();
            let (extra, _) = QemuCmdline::parse(&self.qemu, &argv);
            for arg in extra.args {
                cmd.push(arg);
            }
        }
        cmd
    }
}

/// Shares `share` as the VM's share `index`: an `-fsdev` for the
/// directory and the virtio-9p device the guest mounts by its tag. The
/// guest's files get the host's ownership (`security_model=none`: a
/// guest's chown is ignored), and a folder holding other file systems
/// keeps its inode numbers apart (`multidevs=remap`).
fn push_share(cmd: &mut QemuCmdline, index: usize, share: &Share) {
    let id = format!("share{index}");
    let mut fsdev = Props::with_head("local");
    fsdev
        .set("id", &id)
        .set("path", share.path.to_string_lossy())
        .set("security_model", "none")
        .set("multidevs", "remap");
    if share.readonly {
        fsdev.set("readonly", "on");
    }
    cmd.push(Arg::Props(PropsOption::Fsdev, fsdev));
    cmd.device(
        "virtio-9p-pci",
        &[("fsdev", &id), ("mount_tag", &share.tag)],
    );
}

/// The `-drive` id of the guest's disk `index`.
pub(crate) fn disk_id(index: usize) -> String {
    format!("disk{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(arch: &str) -> GuestDescription {
        let text = format!(
            "arch = \"{arch}\"\n[boot]\nkernel = \"k\"\ninitrd = \"i\"\n\
             [login]\nuser = \"root\"\npassword = \"x\"\n"
        );
        GuestDescription::parse(&text, "/g/guest.toml".as_ref())
            .unwrap()
            .0
    }

    fn args(guest: &GuestDescription) -> String {
        let launch = GuestLaunch {
            generation_id: true,
            ..GuestLaunch::new(
                guest,
                guest.arch.system_emulator().into(),
                Chosen::Tcg,
                ConsoleOutput::File("/c.log".into()),
            )
        };
        let argv = launch.cmdline().to_args();
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn an_arm_guest_gets_virt_a_64_bit_processor_and_no_generation_id() {
        let arm = args(&guest("aarch64"));
        assert!(arm.contains("-machine virt"), "{arm}");
        assert!(arm.contains("-cpu cortex-a72"), "{arm}");
        assert!(!arm.contains("vmgenid"), "{arm}");
        assert!(arm.contains("pcie-root-port"), "hot-plug ports: {arm}");
        let x86 = args(&guest("x86_64"));
        assert!(x86.contains("-machine q35"), "{x86}");
        assert!(!x86.contains("-cpu"), "{x86}");
        assert!(x86.contains("vmgenid"), "{x86}");
    }
}
