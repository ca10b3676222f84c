//! The guest description: what a VM boots and how to get into it, as a
//! `guest.toml` a user writes for any image. Paths in the file are
//! relative to its directory.
//!
//! ```toml
//! name = "my-debian"
//! arch = "x86_64"             # or aarch64 (qemu-system-aarch64, machine virt)
//!
//! [boot]                      # no kernel: boot the first disk
//! firmware = "uefi"           # bios (default), uefi, or uefi-secure
//!
//! [[disks]]
//! path = "debian-12.qcow2"    # never written: each VM gets an overlay
//! format = "qcow2"            # qcow2 or raw (default: by extension)
//!
//! [login]
//! user = "root"
//! password = "secret"         # and/or key = "id_ed25519"
//! timeout = 120               # seconds login_remote waits
//!
//! [ready]
//! wait_for = "ssh"            # console (with line = "..."), ssh, cloud-init, agent
//!
//! [machine]
//! memory = 512
//! tpm = true                  # a TPM 2.0 (swtpm) for each VM
//!
//! [[shares]]                  # a host folder the guest mounts by its tag
//! path = "data"
//! tag = "data"
//! readonly = false
//! ```
//!
//! Unknown keys are warnings naming the file and line; a value of the
//! wrong type is an error naming the key and the type expected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use virtest_qemu_cmdline::arch::{self, Arch};

use crate::error::{Error, IoContext, Result};

mod file;
mod share;

#[cfg(feature = "provision")]
pub(crate) use file::DiskFile;
pub(crate) use file::{
    BootFile, CloudInitFile, GuestFile, LoginFile, MachineFile, ReadyFile, ReadyKind,
};
use file::{line_of_key, toml_error};
pub use share::Share;

/// The file name of a guest description in a guest directory.
pub const DESCRIPTION_FILE: &str = "guest.toml";

/// The line a cloud-init guest prints on its serial console once
/// cloud-init's final stage has run, on every boot (the seed's per-boot
/// script writes it).
pub const CLOUD_INIT_READY_LINE: &str = "virtest-cloud-init-ready";

/// A guest, as a VM boots it: loaded from a `guest.toml` with every path
/// made absolute.
///
/// ```no_run
/// use virtest_guest::GuestDescription;
/// let (guest, warnings) = GuestDescription::load("images/my-guest/guest.toml".as_ref())?;
/// for w in &warnings {
///     eprintln!("warning: {w}");
/// }
/// println!("{} logs in as {}", guest.name, guest.login.user);
/// # Ok::<(), virtest_guest::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GuestDescription {
    /// The guest's name (the directory's when the file gives none).
    pub name: String,
    /// The kernel release the guest runs, when known; the built-in boot
    /// test checks it.
    pub kernel_release: Option<String>,
    /// Its architecture (`x86_64` unless the file says `arch =
    /// "aarch64"`): which QEMU runs it.
    pub arch: Arch,
    /// How it boots.
    pub boot: Boot,
    /// Its disks, in the order the guest sees them.
    pub disks: Vec<Disk>,
    /// How to log in.
    pub login: LoginSpec,
    /// How virtest knows the guest is up.
    pub ready: Ready,
    /// Whether each VM gets a NoCloud seed, and what it adds.
    pub cloud_init: CloudInit,
    /// What the machine looks like.
    pub machine: Machine,
    /// Host folders shared into every VM of the guest.
    pub shares: Vec<Share>,
    /// The file this was loaded from.
    pub path: PathBuf,
}

/// How a guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The firmware (SeaBIOS unless the description says `uefi`).
    pub firmware: Firmware,
    /// A kernel QEMU loads directly; `None` boots the first disk.
    pub kernel: Option<KernelBoot>,
}

/// Direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// The kernel (`-kernel`).
    pub kernel: PathBuf,
    /// The initramfs (`-initrd`), if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    pub cmdline: String,
}

/// The machine's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    #[default]
    Bios,
    /// OVMF, from Debian's `ovmf` package.
    Uefi,
    /// OVMF with Secure Boot enforced: its SMM build, and a variable
    /// store with Microsoft's keys enrolled, so a boot loader signed by
    /// Microsoft's UEFI CA (shim) runs and an unsigned one is refused.
    UefiSecure,
}

impl Firmware {
    /// Whether it is OVMF (UEFI), Secure Boot or not.
    pub fn is_uefi(self) -> bool {
        match self {
            Firmware::Bios => false,
            Firmware::Uefi | Firmware::UefiSecure => true,
        }
    }
}

/// One disk of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Where the base image is, or comes from.
    pub source: DiskSource,
    /// The image format.
    pub format: DiskFormat,
}

/// Where a disk's base image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A file on the host.
    File(PathBuf),
    /// A file to download once into the cache, checked against its
    /// SHA-256.
    Url {
        /// Where it is.
        url: String,
        /// Its SHA-256, hex.
        sha256: String,
    },
}

/// A disk image format QEMU reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// QEMU's copy-on-write format.
    Qcow2,
    /// Plain bytes.
    Raw,
}

impl DiskFormat {
    /// The name QEMU and qemu-img use.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// The format a file name suggests: `.raw` and `.img` are raw,
    /// anything else qcow2.
    fn by_extension(path: &str) -> DiskFormat {
        match Path::new(path).extension().and_then(|e| e.to_str()) {
            Some("raw" | "img") => DiskFormat::Raw,
            _ => DiskFormat::Qcow2,
        }
    }
}

/// How to log into a guest.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginSpec {
    /// The user.
    pub user: String,
    /// A password the guest accepts.
    pub password: Option<String>,
    /// A private key the guest accepts (its public half is
    /// `<key>.pub`).
    pub key: Option<PathBuf>,
    /// The guest's SSH host key (an OpenSSH public key line); `None`
    /// trusts the first key a VM presents and holds it to that key for
    /// the rest of its life.
    pub host_key: Option<String>,
    /// The guest port sshd listens on.
    pub port: u16,
    /// How long `login_remote` waits by default.
    pub timeout: Duration,
}

impl std::fmt::Debug for LoginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginSpec")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .field("host_key", &self.host_key)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How virtest knows a guest is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// The guest prints this text on its serial console.
    Console(String),
    /// sshd answers: logins are tried until one succeeds.
    Ssh,
    /// cloud-init's final stage has run the seed's per-boot script,
    /// which prints [`CLOUD_INIT_READY_LINE`] on the console.
    CloudInit,
    /// The guest agent (`qemu-ga`) answers on the VM's agent channel.
    Agent,
}

impl Ready {
    /// The line the console shows once the guest is ready (its own, or
    /// cloud-init's); `None` when readiness is not a console line.
    ///
    /// ```
    /// use virtest_guest::description::{CLOUD_INIT_READY_LINE, Ready};
    /// assert_eq!(Ready::CloudInit.console_line(), Some(CLOUD_INIT_READY_LINE));
    /// assert_eq!(Ready::Ssh.console_line(), None);
    /// ```
    pub fn console_line(&self) -> Option<&str> {
        match self {
            Ready::Console(line) => Some(line),
            Ready::CloudInit => Some(CLOUD_INIT_READY_LINE),
            Ready::Ssh | Ready::Agent => None,
        }
    }
}

/// The NoCloud seed of a cloud-init guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudInit {
    /// Whether each VM gets a seed.
    pub enabled: bool,
    /// The user's own `user-data` snippets (YAML files of cloud-config
    /// keys), merged into the seed's.
    pub user_data: Vec<PathBuf>,
}

/// What the virtual machine looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The machine type (`q35`; `virt` for aarch64).
    pub machine_type: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Processors.
    pub cpus: u32,
    /// The network card model the guest has a driver for.
    pub net_device: String,
    /// More devices, by QEMU's `-device` text (`virtio-rng-pci` is
    /// always there: without entropy a distro's sshd stalls).
    pub devices: Vec<String>,
    /// More QEMU arguments, appended verbatim.
    pub qemu_args: Vec<String>,
    /// Whether each VM has a TPM 2.0 (an `swtpm` of its own).
    pub tpm: bool,
}

impl GuestDescription {
    /// Reads and checks a description: `path` is a `guest.toml` or a
    /// directory holding one. Returns it with warnings about keys it does
    /// not know (each naming the file and line).
    pub fn load(path: &Path) -> Result<(GuestDescription, Vec<String>)> {
        let path = if path.is_dir() {
            path.join(DESCRIPTION_FILE)
        } else {
            path.to_path_buf()
        };
        let path = std::path::absolute(&path).io_context("resolving", &path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Description {
            path: path.clone(),
            reason: match e.kind() {
                std::io::ErrorKind::NotFound => "there is no such file".into(),
                _ => format!("it cannot be read ({e})"),
            },
        })?;
        GuestDescription::parse(&text, &path)
    }

    /// Parses the text of a description that lives at `path` (paths in
    /// it are relative to its directory).
    pub fn parse(text: &str, path: &Path) -> Result<(GuestDescription, Vec<String>)> {
        let bad = |reason: String| Error::Description {
            path: path.to_path_buf(),
            reason,
        };
        let mut unknown = Vec::new();
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| bad(toml_error(text, &e)))?;
        let mut note_unknown = |key: serde_ignored::Path| unknown.push(key.to_string());
        let ignoring = serde_ignored::Deserializer::new(deserializer, &mut note_unknown);
        let file: GuestFile = serde_path_to_error::deserialize(ignoring).map_err(|e| {
            let key = e.path().to_string();
            bad(format!("`{key}`: {}", toml_error(text, e.inner())))
        })?;
        let mut located: Vec<(Option<usize>, &String)> = unknown
            .iter()
            .map(|key| (line_of_key(text, key), key))
            .collect();
        located.sort();
        let warnings = located
            .into_iter()
            .map(|(line, key)| match line {
                Some(line) => format!("{}:{line}: unknown key `{key}` (ignored)", path.display()),
                None => format!("{}: unknown key `{key}` (ignored)", path.display()),
            })
            .collect();
        let dir = path.parent().unwrap_or(Path::new("/"));
        let description = file.resolve(dir, path).map_err(bad)?;
        Ok((description, warnings))
    }

    /// The directory the description lives in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(GuestDescription, Vec<String>)> {
        GuestDescription::parse(text, Path::new("/images/mine/guest.toml"))
    }

    #[test]
    fn a_disk_guest_with_defaults() {
        let (guest, warnings) =
            parse("[[disks]]\npath = \"disk.img\"\n[login]\nuser = \"root\"\npassword = \"pw\"\n")
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(guest.name, "mine");
        assert_eq!(guest.boot.firmware, Firmware::Bios);
        assert_eq!(guest.boot.kernel, None);
        assert_eq!(
            guest.disks,
            [Disk {
                source: DiskSource::File("/images/mine/disk.img".into()),
                format: DiskFormat::Raw,
            }]
        );
        assert_eq!(guest.ready, Ready::Ssh);
        assert_eq!(guest.login.port, 22);
        assert_eq!(guest.login.timeout, Duration::from_secs(60));
        assert_eq!(guest.machine.machine_type, "q35");
        assert_eq!(guest.machine.memory_mib, 256);
        assert!(!guest.machine.tpm);
        assert!(!format!("{:?}", guest.login).contains("\"pw\""));
    }

    #[test]
    fn a_kernel_guest_in_full() {
        let text = r#"
name = "tiny"
kernel_release = "6.1.0-26-amd64"
[boot]
firmware = "uefi"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "root=/dev/vda console=ttyS0"
[[disks]]
url = "http://127.0.0.1:8080/disk.qcow2"
sha256 = "AB00000000000000000000000000000000000000000000000000000000000000"
[login]
user = "tester"
key = "keys/id_ed25519"
host_key = "ssh-ed25519 AAAA"
port = 2222
timeout = 120.5
[ready]
wait_for = "console"
line = "login:"
[machine]
type = "pc"
memory = 1024
cpus = 2
tpm = true
devices = ["virtio-balloon-pci"]
qemu_args = ["-cpu", "max"]
[[shares]]
path = "data"
tag = "data"
[[shares]]
path = "/srv/logs"
tag = "logs"
readonly = true
"#;
        let (guest, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let kernel = guest.boot.kernel.as_ref().unwrap();
        assert_eq!(kernel.kernel, Path::new("/images/mine/vmlinuz"));
        assert_eq!(
            kernel.initrd.as_deref(),
            Some(Path::new("/images/mine/initrd.img"))
        );
        assert_eq!(guest.boot.firmware, Firmware::Uefi);
        assert_eq!(
            guest.disks[0].source,
            DiskSource::Url {
                url: "http://127.0.0.1:8080/disk.qcow2".into(),
                sha256: format!("ab{}", "0".repeat(62)),
            }
        );
        assert_eq!(guest.disks[0].format, DiskFormat::Qcow2);
        assert_eq!(
            guest.login.key.as_deref(),
            Some(Path::new("/images/mine/keys/id_ed25519"))
        );
        assert_eq!(guest.login.timeout, Duration::from_secs_f64(120.5));
        assert_eq!(guest.ready, Ready::Console("login:".into()));
        assert_eq!(guest.machine.cpus, 2);
        assert!(guest.machine.tpm);
        assert_eq!(guest.machine.qemu_args, ["-cpu", "max"]);
        assert_eq!(
            guest.shares,
            [
                Share::new("/images/mine/data", "data").unwrap(),
                Share {
                    readonly: true,
                    ..Share::new("/srv/logs", "logs").unwrap()
                },
            ]
        );
    }

    #[test]
    fn unknown_keys_are_warnings_with_file_and_line() {
        let text = "[login]\nuser = \"root\"\npasword = \"x\"\nkey = \"k\"\n\n[[disks]]\npath = \"a.qcow2\"\nfmt = \"raw\"\n";
        let (_, warnings) = parse(text).unwrap();
        assert_eq!(
            warnings,
            [
                "/images/mine/guest.toml:3: unknown key `login.pasword` (ignored)",
                "/images/mine/guest.toml:8: unknown key `disks.0.fmt` (ignored)",
            ]
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_type() {
        let text = "[[disks]]\npath = \"a.qcow2\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[machine]\nmemory = \"lots\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("/images/mine/guest.toml"), "{error}");
        assert!(error.contains("`machine.memory`"), "{error}");
        assert!(error.contains("line 7"), "{error}");
        assert!(error.contains("u32"), "{error}");
        let text =
            "[[disks]]\npath = \"a\"\nformat = \"vmdk\"\n[login]\nuser = \"root\"\nkey = \"k\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("`disks[0].format`"), "{error}");
        assert!(error.contains("qcow2") && error.contains("raw"), "{error}");
    }

    #[test]
    fn secure_boot_is_a_firmware() {
        let text = "[boot]\nfirmware = \"uefi-secure\"\n[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n";
        let (guest, _) = parse(text).unwrap();
        assert_eq!(guest.boot.firmware, Firmware::UefiSecure);
        assert!(guest.boot.firmware.is_uefi() && !Firmware::Bios.is_uefi());
    }

    #[test]
    fn the_agent_can_be_the_ready_signal() {
        let text = "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[ready]\nwait_for = \"agent\"\n";
        assert_eq!(parse(text).unwrap().0.ready, Ready::Agent);
        let with_line = format!("{text}line = \"x\"\n");
        let error = parse(&with_line).unwrap_err().to_string();
        assert!(error.contains("only for"), "{error}");
    }

    #[test]
    fn inconsistent_descriptions_say_what_is_missing() {
        let cases = [
            ("[login]\nuser = \"root\"\nkey = \"k\"\n", "nothing to boot"),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\n",
                "no way to log in",
            ),
            (
                "[[disks]]\nurl = \"http://x/a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n",
                "without its `sha256`",
            ),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[ready]\nwait_for = \"console\"\n",
                "needs the text in `ready.line`",
            ),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[ready]\nwait_for = \"cloud-init\"\n",
                "needs `cloud_init.enabled = true`",
            ),
            (
                "[boot]\ninitrd = \"i\"\n[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n",
                "need `boot.kernel`",
            ),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[machine]\ncpus = 0\n",
                "at least 1",
            ),
            ("[[disks]]\npath = \"a\"\n", "`login`"),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[[shares]]\npath = \"d\"\ntag = \"a b\"\n",
                "share tag `a b`",
            ),
            (
                "[[disks]]\npath = \"a\"\n[login]\nuser = \"root\"\nkey = \"k\"\n[[shares]]\npath = \"d\"\ntag = \"t\"\n[[shares]]\npath = \"e\"\ntag = \"t\"\n",
                "two shares have the tag `t`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}\n→ {error}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = GuestDescription::load(Path::new("/nonexistent/guest.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/guest.toml"), "{error}");
        assert!(error.contains("no such file"), "{error}");
    }

    #[test]
    fn an_arm_guest_runs_on_virt_and_other_architectures_are_refused() {
        let body = "[[disks]]\npath = \"d.qcow2\"\n[login]\nuser = \"root\"\npassword = \"x\"\n";
        let (guest, _) = parse(&format!("arch = \"aarch64\"\n{body}")).unwrap();
        assert_eq!(guest.arch, Arch::Aarch64);
        assert_eq!(guest.machine.machine_type, "virt");
        let (guest, _) = parse(body).unwrap();
        assert_eq!(guest.arch, Arch::X86_64);
        let error = parse(&format!("arch = \"sparc\"\n{body}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`arch`: `sparc`"), "{error}");
        assert!(error.contains("x86_64, aarch64"), "{error}");
        let error = parse(&format!(
            "arch = \"aarch64\"\n[boot]\nfirmware = \"uefi-secure\"\n{body}"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("is for x86_64 guests"), "{error}");
        let (guest, _) = parse(&format!(
            "arch = \"aarch64\"\n[boot]\nfirmware = \"uefi\"\n{body}"
        ))
        .unwrap();
        assert_eq!(guest.boot.firmware, Firmware::Uefi);
    }

    #[test]
    fn a_written_file_reads_back() {
        let file = GuestFile {
            name: Some("default".into()),
            boot: BootFile {
                kernel: Some("vmlinux".into()),
                initrd: Some("initrd.gz".into()),
                cmdline: Some("console=ttyS0".into()),
                firmware: None,
            },
            login: LoginFile {
                user: "root".into(),
                key: Some("id_ed25519".into()),
                ..Default::default()
            },
            ready: ReadyFile {
                wait_for: ReadyKind::Console,
                line: Some("ready".into()),
            },
            ..Default::default()
        };
        let (guest, warnings) = parse(&file.to_toml()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(guest.name, "default");
        assert_eq!(guest.ready, Ready::Console("ready".into()));
    }
}
