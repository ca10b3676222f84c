//! The guest manifest: what the VM layer reads to boot a guest and log
//! into it. Paths in the file are relative to its directory, so a cache
//! can move.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::description::{
    BootFile, CloudInitFile, DESCRIPTION_FILE, GuestDescription, GuestFile, LoginFile, MachineFile,
    ReadyFile, ReadyKind,
};
use crate::error::{Error, IoContext, Result};

/// The manifest file's name in a guest directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The version of the manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;

/// A bootable guest, as recorded by bootstrap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version ([`FORMAT`]).
    pub format: u32,
    /// The guest's name (`default`).
    pub name: String,
    /// The guest architecture (`x86_64`).
    pub arch: String,
    /// The kernel QEMU boots (`-kernel`): an uncompressed PVH `vmlinux`
    /// where possible, else the bzImage.
    pub kernel: PathBuf,
    /// The original compressed kernel image.
    pub kernel_image: PathBuf,
    /// The kernel release (`6.1.0-26-amd64`), where known.
    pub kernel_release: Option<String>,
    /// The initramfs (`-initrd`).
    pub initrd: PathBuf,
    /// The kernel command line (`-append`).
    pub cmdline: String,
    /// The line the guest prints on its serial console when sshd listens.
    pub ready_marker: String,
    /// How to log in.
    pub credentials: Credentials,
    /// The guest's SSH host key, to check the server against.
    pub host_key: HostKey,
    /// The guest port sshd listens on.
    pub ssh_port: u16,
    /// What QEMU should give this guest.
    pub qemu: QemuHints,
    /// Every file of the guest with its size and SHA-256.
    pub files: Vec<FileRecord>,
    /// SHA-256 over the `files` records: one value naming this build.
    pub content_hash: String,
    /// Where the kernel, busybox and dropbear came from.
    pub sources: Sources,
    /// A hash of everything the build was made from; bootstrap rebuilds
    /// when it changes.
    pub inputs: String,
    /// Directory the manifest was loaded from (not serialized).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Login credentials of a guest.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    /// The user (`root`).
    pub user: String,
    /// The password.
    pub password: String,
    /// The private key file (mode 0600).
    pub private_key: PathBuf,
    /// The public key, as an OpenSSH line.
    pub public_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("private_key", &self.private_key)
            .finish()
    }
}

/// A guest's SSH host key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostKey {
    /// The public key, as an OpenSSH line.
    pub public: String,
    /// Its SHA-256 fingerprint (`SHA256:...`).
    pub fingerprint: String,
}

/// What the guest expects of its virtual machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QemuHints {
    /// Machine type (`-machine`).
    pub machine: String,
    /// Memory in MiB that boots it comfortably.
    pub memory_mib: u32,
    /// The serial device the console is on (`ttyS0`).
    pub console: String,
    /// The network device model the guest has a driver for.
    pub net_device: String,
    /// Devices the guest expects (`virtio-rng-pci`).
    pub devices: Vec<String>,
}

/// One file of a guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    /// Relative to the manifest's directory.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl FileRecord {
    /// Records a file as it is now.
    pub fn of(dir: &Path, name: &str) -> Result<FileRecord> {
        let path = dir.join(name);
        let (size, sha256) = hash_file(&path)?;
        Ok(FileRecord {
            path: name.into(),
            size,
            sha256,
        })
    }
}

/// Where each component came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sources {
    /// The kernel.
    pub kernel: Origin,
    /// Busybox.
    pub busybox: Origin,
    /// Dropbear.
    pub dropbear: Origin,
    /// The guest agent.
    pub qemu_ga: Origin,
}

impl Manifest {
    /// Reads the manifest in `dir` and checks that each file it lists is
    /// there with the recorded size (cheap; see [`Manifest::verify`] for
    /// the full check).
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bad = |reason: String| Error::Manifest {
            path: path.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot be read ({e})")))?;
        let mut manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(format!("does not parse ({e})")))?;
        if manifest.format != FORMAT {
            return Err(bad(format!("format {} is not {FORMAT}", manifest.format)));
        }
        manifest.dir = dir.to_path_buf();
        for record in &manifest.files {
            let file = dir.join(&record.path);
            let size = std::fs::metadata(&file)
                .map(|m| m.len())
                .map_err(|e| bad(format!("`{}` is missing ({e})", record.path.display())))?;
            if size != record.size {
                return Err(bad(format!(
                    "`{}` is {size} bytes, recorded as {}",
                    record.path.display(),
                    record.size
                )));
            }
        }
        Ok(manifest)
    }

    /// Re-hashes every file and compares with the records.
    pub fn verify(&self) -> Result<()> {
        for record in &self.files {
            let (_, sha256) = hash_file(&self.dir.join(&record.path))?;
            if sha256 != record.sha256 {
                return Err(Error::Manifest {
                    path: self.dir.join(MANIFEST_FILE),
                    reason: format!(
                        "`{}` does not match its recorded SHA-256",
                        record.path.display()
                    ),
                });
            }
        }
        if content_hash(&self.files) != self.content_hash {
            return Err(Error::Manifest {
                path: self.dir.join(MANIFEST_FILE),
                reason: "the content hash does not match the file records".into(),
            });
        }
        Ok(())
    }

    /// The kernel to boot, as an absolute path.
    pub fn kernel_path(&self) -> PathBuf {
        self.dir.join(&self.kernel)
    }

    /// The initramfs, as an absolute path.
    pub fn initrd_path(&self) -> PathBuf {
        self.dir.join(&self.initrd)
    }

    /// The recorded size of the initramfs, in bytes.
    pub fn initrd_size(&self) -> u64 {
        self.files
            .iter()
            .find(|f| f.path == self.initrd)
            .map_or(0, |f| f.size)
    }

    /// The client private key, as an absolute path.
    pub fn private_key_path(&self) -> PathBuf {
        self.dir.join(&self.credentials.private_key)
    }

    /// Writes `guest.toml` into the manifest's directory (atomically): the
    /// description the VM layer boots this build from. Holds the
    /// password, so it is private (mode 0600) like the manifest.
    pub fn write_description(&self) -> Result<()> {
        let file = GuestFile {
            name: Some(self.name.clone()),
            kernel_release: self.kernel_release.clone(),
            arch: Some(self.arch.clone()),
            boot: BootFile {
                firmware: None,
                kernel: Some(self.kernel.to_string_lossy().into_owned()),
                initrd: Some(self.initrd.to_string_lossy().into_owned()),
                cmdline: Some(self.cmdline.clone()),
            },
            disks: Vec::new(),
            login: LoginFile {
                user: self.credentials.user.clone(),
                password: Some(self.credentials.password.clone()),
                key: Some(self.credentials.private_key.to_string_lossy().into_owned()),
                host_key: Some(self.host_key.public.clone()),
                port: Some(self.ssh_port),
                timeout: None,
            },
            ready: ReadyFile {
                wait_for: ReadyKind::Console,
                line: Some(self.ready_marker.clone()),
            },
            cloud_init: CloudInitFile::default(),
            machine: MachineFile {
                machine_type: Some(self.qemu.machine.clone()),
                memory: Some(self.qemu.memory_mib),
                cpus: None,
                net_device: Some(self.qemu.net_device.clone()),
                devices: self
                    .qemu
                    .devices
                    .iter()
                    .filter(|d| *d != "virtio-rng-pci")
                    .cloned()
                    .collect(),
                qemu_args: Vec::new(),
                tpm: None,
            },
            shares: Vec::new(),
        };
        let text = format!(
            "# Written by `virtest bootstrap` from {MANIFEST_FILE}; rewritten with it.\n{}",
            file.to_toml()
        );
        write_atomically(&self.dir.join(DESCRIPTION_FILE), text.as_bytes())
    }

    /// The description `guest.toml` of this build (see
    /// [`Manifest::write_description`]).
    pub fn description(&self) -> Result<GuestDescription> {
        GuestDescription::load(&self.dir.join(DESCRIPTION_FILE)).map(|(guest, _)| guest)
    }

    /// Writes the manifest into `dir` (atomically: a temporary file renamed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifests serialize");
        write_atomically(&dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

/// Writes a private file (mode 0600) through a temporary file renamed
/// over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    crate::keys::write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).io_context("writing", path)
}

/// SHA-256 over the file records, in order.
pub fn content_hash(files: &[FileRecord]) -> String {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(format!("{}\0{}\0{}\n", f.path.display(), f.size, f.sha256));
    }
    hex(&hasher.finalize())
}

/// Size and SHA-256 of a file.
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).io_context("reading", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).io_context("reading", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where one component was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Origin {
    /// A path the user gave.
    User {
        /// The path.
        path: PathBuf,
    },
    /// A file already on the host.
    Host {
        /// The path.
        path: PathBuf,
    },
    /// A Debian package, fetched with `apt-get download`.
    Package {
        /// The package name.
        name: String,
        /// Its version.
        version: String,
    },
}

impl Origin {
    /// A string that changes when the component's content may have: the
    /// path with size and mtime, or the package and version.
    pub fn identity(&self) -> String {
        match self {
            Origin::User { path } | Origin::Host { path } => {
                let meta = std::fs::metadata(path).ok();
                let mtime = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                format!(
                    "{}:{}:{:?}",
                    path.display(),
                    meta.map_or(0, |m| m.len()),
                    mtime
                )
            }
            Origin::Package { name, version } => format!("{name}={version}"),
        }
    }
}
