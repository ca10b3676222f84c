//! The QEMU command line of a guest, from its manifest.

use std::path::PathBuf;

use virtest_guest::Manifest;
use virtest_qemu_cmdline::accel::Chosen;
use virtest_qemu_cmdline::cmdline::socket_chardev_props;
use virtest_qemu_cmdline::{
    Arg, FlagOption, HostFwd, Props, PropsOption, QemuCmdline, ValueOption,
};

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
    pub manifest: &'a Manifest,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The accelerator.
    pub accel: Chosen,
    /// Memory in MiB (`None`: the manifest's hint).
    pub memory_mib: Option<u32>,
    /// The host port forwarded, on 127.0.0.1, to the guest's sshd.
    pub ssh_host_port: u16,
    /// Processors (`None`: QEMU's default, one).
    pub cpus: Option<u32>,
    /// Where the serial console goes.
    pub console: ConsoleOutput,
    /// Give the guest a standard VGA card (needed for screendumps).
    pub vga: bool,
    /// A unix socket QEMU serves QMP on, if any.
    pub qmp_socket: Option<PathBuf>,
    /// Whether a guest reboot restarts it (else QEMU exits).
    pub allow_reboot: bool,
}

impl GuestLaunch<'_> {
    /// The command line: the manifest's machine and devices, direct kernel
    /// boot, user networking with sshd forwarded to 127.0.0.1, the console
    /// to a file, and nothing QEMU would add by default.
    ///
    /// ```no_run
    /// # fn f(manifest: &virtest_guest::Manifest) {
    /// use virtest_qemu_cmdline::accel::Chosen;
    /// use virtest_vm::{ConsoleOutput, GuestLaunch};
    /// let launch = GuestLaunch {
    ///     manifest,
    ///     qemu: "qemu-system-x86_64".into(),
    ///     accel: Chosen::Tcg,
    ///     memory_mib: None,
    ///     ssh_host_port: 40022,
    ///     cpus: None,
    ///     console: ConsoleOutput::File("/tmp/console.log".into()),
    ///     vga: false,
    ///     qmp_socket: None,
    ///     allow_reboot: false,
    /// };
    /// let child = launch.cmdline().to_command().spawn();
    /// # }
    /// ```
    pub fn cmdline(&self) -> QemuCmdline {
        let m = self.manifest;
        let mut cmd = QemuCmdline::new(&self.qemu);
        cmd.machine(&m.qemu.machine)
            .accel(self.accel.as_str())
            .memory_mib(self.memory_mib.unwrap_or(m.qemu.memory_mib))
            .flag(FlagOption::NoDefaults)
            .flag(FlagOption::NoUserConfig);
        cmd.push(Arg::Props(PropsOption::Display, Props::with_head("none")));
        cmd.direct_boot(
            &m.kernel_path().to_string_lossy(),
            Some(&m.initrd_path().to_string_lossy()),
            &m.cmdline,
        );
        if let Some(cpus) = self.cpus {
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
        cmd.user_netdev("net0", &[HostFwd::tcp(self.ssh_host_port, m.ssh_port)])
            .device(&m.qemu.net_device, &[("netdev", "net0")]);
        for device in &m.qemu.devices {
            cmd.device(device, &[]);
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
        cmd
    }
}
