//! A guest booted by a command line built here with `virtest-qemu-cmdline`
//! and started with `std::process`: what the layers below `vm` test
//! against. It keeps to what a guest needs to boot and be logged into
//! (its kernel or disks, memory, user networking with sshd forwarded,
//! an RNG, the serial console), none of what the VM layer adds.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use virtest_guest::GuestDescription;
use virtest_guest::cloud_init::Seed;
use virtest_qemu_cmdline::binary::{self, BinaryKind};
use virtest_qemu_cmdline::cmdline::socket_chardev_props;
use virtest_qemu_cmdline::{
    Arg, FlagOption, HostFwd, Props, PropsOption, QemuCmdline, ValueOption,
};

use crate::free_port;

/// How [`Qemu::start`] runs a guest.
#[derive(Debug, Clone, Copy, Default)]
pub struct QemuOptions {
    /// A guest reboot restarts it (else QEMU exits, `-no-reboot`).
    pub reboot_allowed: bool,
    /// The console is also served on `<dir>/console.sock`.
    pub console_socket: bool,
}

/// A QEMU process running a guest, killed and reaped on drop.
pub struct Qemu {
    /// The process.
    pub child: Child,
    /// The serial console's log.
    pub console: PathBuf,
    /// The host port (on 127.0.0.1) forwarded to the guest's sshd.
    pub port: u16,
    /// The guest's description.
    pub guest: GuestDescription,
    /// The private key the guest accepts: its own, or for a cloud-init
    /// guest virtest's, which its seed authorizes.
    pub login_key: Option<PathBuf>,
    /// Its console log, socket and disk overlays.
    pub dir: tempfile::TempDir,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    /// Boots the default guest.
    pub fn boot(reboot_allowed: bool) -> Qemu {
        let options = QemuOptions {
            reboot_allowed,
            ..QemuOptions::default()
        };
        Qemu::start(crate::description(), options)
    }

    /// Boots `guest` under TCG, with a qcow2 overlay over each of its
    /// disks in the process's directory, and for a cloud-init guest a
    /// NoCloud seed authorizing virtest's key.
    pub fn start(guest: &GuestDescription, options: QemuOptions) -> Qemu {
        let dir = tempfile::tempdir().expect("making a temporary directory");
        let console = dir.path().join("console.log");
        let port = free_port();
        let qemu = binary::find(BinaryKind::System, None).expect("a QEMU system emulator");
        let machine = &guest.machine;
        let mut cmd = QemuCmdline::new(&qemu);
        cmd.machine(&machine.machine_type)
            .accel("tcg")
            .memory_mib(machine.memory_mib)
            .flag(FlagOption::NoDefaults)
            .flag(FlagOption::NoUserConfig);
        cmd.push(Arg::Props(PropsOption::Display, Props::with_head("none")));
        if let Some(kernel) = &guest.boot.kernel {
            let initrd = kernel.initrd.as_ref().map(|p| p.to_string_lossy());
            cmd.direct_boot(
                &kernel.kernel.to_string_lossy(),
                initrd.as_deref(),
                &kernel.cmdline,
            );
        }
        for (index, disk) in guest.disks.iter().enumerate() {
            let overlay = dir.path().join(format!("disk{index}.qcow2"));
            make_overlay(disk, &overlay);
            let id = format!("disk{index}");
            let boot_index = index.to_string();
            cmd.virtio_disk(&id, &overlay, "qcow2", &[], &[("bootindex", &boot_index)]);
        }
        let mut login_key = guest.login.key.clone();
        if guest.cloud_init.enabled {
            let seed = dir.path().join("seed.img");
            login_key = Some(write_seed(guest, &seed));
            cmd.virtio_disk("seed", &seed, "raw", &[("readonly", "on")], &[]);
        }
        if machine.cpus != 1 {
            cmd.smp(machine.cpus);
        }
        if options.console_socket {
            let socket = dir.path().join("console.sock");
            let mut chardev = socket_chardev_props("console", &socket.to_string_lossy());
            chardev.set("logfile", console.to_string_lossy());
            cmd.push(Arg::Props(PropsOption::Chardev, chardev));
            cmd.set_value(ValueOption::Serial, "chardev:console");
        } else {
            cmd.set_value(ValueOption::Serial, format!("file:{}", console.display()));
        }
        cmd.user_netdev("net0", &[HostFwd::tcp(port, guest.login.port)])
            .device(&machine.net_device, &[("netdev", "net0")])
            .device("virtio-rng-pci", &[]);
        if !options.reboot_allowed {
            cmd.flag(FlagOption::NoReboot);
        }
        cmd.validate().expect("a valid command line");
        let child = cmd
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting QEMU");
        Qemu {
            child,
            console,
            port,
            guest: guest.clone(),
            login_key,
            dir,
        }
    }

    /// Waits until the console shows the guest's ready line (its own,
    /// or cloud-init's) `count` times; a guest ready when its sshd or
    /// agent answers has none: this returns at once.
    pub fn wait_ready(&mut self, count: usize, deadline: Duration) -> Duration {
        let start = Instant::now();
        let Some(marker) = self.guest.ready.console_line().map(str::to_string) else {
            return start.elapsed();
        };
        loop {
            let text = std::fs::read_to_string(&self.console).unwrap_or_default();
            if text.matches(marker.as_str()).count() >= count {
                return start.elapsed();
            }
            if let Some(status) = self.child.try_wait().expect("waiting for QEMU") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("QEMU exited ({status}) before the ready line: {stderr}\nconsole:\n{text}");
            }
            assert!(
                start.elapsed() < deadline,
                "no ready line within {deadline:?}; console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for QEMU") {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "QEMU still running after {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A qcow2 overlay at `overlay` over `disk`'s base image, which stays
/// unwritten.
fn make_overlay(disk: &virtest_guest::description::Disk, overlay: &std::path::Path) {
    let virtest_guest::description::DiskSource::File(base) = &disk.source else {
        panic!("the test kit boots guests whose disks are files");
    };
    let qemu_img = binary::find(BinaryKind::Img, None).expect("qemu-img");
    let status = std::process::Command::new(qemu_img)
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            disk.format.as_str(),
            "-b",
        ])
        .arg(base)
        .arg(overlay)
        .status()
        .expect("running qemu-img");
    assert!(status.success(), "qemu-img create failed: {status}");
}

/// Writes a NoCloud seed for `guest` at `path` that authorizes virtest's
/// key for its login user, and returns that key.
fn write_seed(guest: &GuestDescription, path: &std::path::Path) -> PathBuf {
    let home = virtest_guest::cache::default_home().expect("virtest's cache directory");
    let key = virtest_guest::keys::virtest_key(&home).expect("virtest's key");
    let public = virtest_guest::keys::public_line_of(&key).expect("virtest's public key");
    let seed = Seed {
        instance_id: "virtest-testkit".into(),
        hostname: "virtest-testkit".into(),
        user: guest.login.user.clone(),
        authorized_keys: vec![public],
        password: guest.login.password.clone(),
        user_data: guest.cloud_init.user_data.clone(),
    };
    seed.write(path).expect("writing the cloud-init seed");
    key
}
