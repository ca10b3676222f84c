//! Where a VM's files are on the host its QEMU runs on.
//!
//! A host that sees this machine's files (this machine, or one whose
//! storage is shared) uses them where they are. A host with storage of
//! its own gets copies: each read-only file the command line names (a
//! disk's base image and its backing chain, the kernel, the initrd) once
//! per host, under its SHA-256 in `<storage>/images/`, checked by hash
//! as it arrives (a file already there under its hash is used as it is);
//! the VM's own files (its cloud-init seed) in `<storage>/vms/<id>/`; and
//! a fresh overlay over the copied base for each disk, which a migration
//! fills from the source (`blockdev-mirror`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use virtest_host::Host;
use virtest_qemu_cmdline::{Arg, PropsOption, QemuCmdline, ValueOption};

use crate::disks::VmDisks;
use crate::error::{Error, Result};

/// The files of a VM on the storage of one host.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The host whose own storage holds the files; `None`: this
    /// machine's files, where they are.
    host: Option<Host>,
    /// Each file of this machine the command line names, and its copy
    /// there.
    copies: Vec<(PathBuf, PathBuf)>,
    /// The overlay of each of the VM's disks there, in order.
    overlays: Vec<PathBuf>,
}

impl Placement {
    /// This machine's files where they are, the disks' overlays those of
    /// `disks`.
    pub(crate) fn here(disks: &VmDisks) -> Placement {
        Placement {
            host: None,
            copies: Vec::new(),
            overlays: disks.overlays().iter().map(|o| o.path.clone()).collect(),
        }
    }

    /// Whether the files of this placement are the ones `host` sees.
    pub(crate) fn serves(&self, host: &Host) -> bool {
        match &self.host {
            None => host.sees_local_files(),
            Some(own) => own.same(host),
        }
    }

    /// Its overlays, in the VM's disk order.
    pub(crate) fn overlays(&self) -> &[PathBuf] {
        &self.overlays
    }

    /// The host whose own storage holds the files (`None`: this
    /// machine's files).
    pub(crate) fn host(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// Places the files of the VM `id` on `host` afresh, for its QEMU
    /// generation `generation`: copies of `inputs` (files the command
    /// line reads) and of each disk's base chain where the host has
    /// storage of its own, and a new, empty overlay over each base.
    pub(crate) async fn fresh(
        host: &Host,
        id: &str,
        generation: u32,
        disks: &VmDisks,
        inputs: &[PathBuf],
    ) -> Result<Placement> {
        if disks.uefi().is_some() && !host.sees_local_files() {
            return Err(Error::State {
                what: format!(
                    "a UEFI guest's variable store is not copied to a host's own storage yet, \
                     so it cannot run on `{}`: give the host shared storage (`storage = \"shared\"`)",
                    host.name()
                ),
            });
        }
        let name = |index: usize| format!("disk{index}.g{generation}.qcow2");
        let local_qemu_img = disks.qemu_img().to_string_lossy();
        let Some(storage) = host.storage_dir() else {
            let mut overlays = Vec::new();
            for (index, overlay) in disks.overlays().iter().enumerate() {
                let path = disks.dir().join(name(index));
                let format = overlay.base_format.as_str();
                let base = overlay.base.to_string_lossy();
                let path_shown = path.to_string_lossy();
                let argv = qemu_img_create(&local_qemu_img, format, &base, &path_shown);
                Host::local().check(&argv).await.map_err(Error::Host)?;
                overlays.push(path);
            }
            return Ok(Placement {
                host: None,
                copies: Vec::new(),
                overlays,
            });
        };
        let images = storage.join("images");
        let vm_dir = storage.join("vms").join(id);
        let (images_shown, vm_shown) = (images.to_string_lossy(), vm_dir.to_string_lossy());
        // What an earlier placement there left is stale: the disks moved.
        let script = r#"rm -rf "$2" && mkdir -p -m 700 "$1" "$2""#;
        host.check(&["sh", "-c", script, "sh", &images_shown, &vm_shown])
            .await
            .map_err(Error::Host)?;
        let mut placement = Placement {
            host: Some(host.clone()),
            copies: Vec::new(),
            overlays: Vec::new(),
        };
        for input in inputs {
            let there = match input.starts_with(disks.dir()) {
                // The VM's own: its copy goes with its other files.
                true => vm_dir.join(input.file_name().expect("a file")),
                false => images.join(hashed_name(input).await?),
            };
            placement.copies.push((input.clone(), there));
        }
        let there: Vec<&Path> = placement.copies.iter().map(|(_, t)| t.as_path()).collect();
        let present = host.present(&there).await.map_err(Error::Host)?;
        for (input, there) in &placement.copies {
            if !present.contains(there) {
                copy_in(host, input, there).await?;
            }
        }
        let qemu_img = remote_qemu_img(host);
        for (index, overlay) in disks.overlays().iter().enumerate() {
            let base = placement
                .copy_chain(host, &images, &overlay.base, &local_qemu_img)
                .await?;
            let path = vm_dir.join(name(index));
            let (base, shown) = (base.to_string_lossy(), path.to_string_lossy());
            let argv = qemu_img_create(&qemu_img, overlay.base_format.as_str(), &base, &shown);
            host.check(&argv).await.map_err(Error::Host)?;
            placement.overlays.push(path);
        }
        Ok(placement)
    }

    /// Copies the image `base` and the images under it to `images` on
    /// `host`, each once, each copy's backing file its parent's copy.
    /// Returns the path of `base`'s copy.
    async fn copy_chain(
        &mut self,
        host: &Host,
        images: &Path,
        base: &Path,
        local_qemu_img: &str,
    ) -> Result<PathBuf> {
        let chain = backing_chain(local_qemu_img, base).await?;
        let mut below: Option<(PathBuf, String)> = None;
        for link in chain.iter().rev() {
            let there = images.join(hashed_name(&link.path).await?);
            if self.there(&link.path) != link.path {
                // Copied already, for another disk.
                below = Some((there, link.format.clone()));
                continue;
            }
            if let Some((parent, format)) = &below {
                // It arrives under a temporary name, then its backing
                // file is made its parent's copy.
                let incoming = there.with_extension(format!("incoming.{}", std::process::id()));
                if !exists(host, &there).await? {
                    copy_in(host, &link.path, &incoming).await?;
                    let (parent, shown) = (parent.to_string_lossy(), incoming.to_string_lossy());
                    let qemu_img = remote_qemu_img(host);
                    let argv = [
                        &qemu_img, "rebase", "-u", "-f", "qcow2", "-F", format, "-b", &parent,
                        &shown,
                    ];
                    host.check(&argv).await.map_err(Error::Host)?;
                    let there_shown = there.to_string_lossy();
                    host.check(&["mv", "-f", &shown, &there_shown])
                        .await
                        .map_err(Error::Host)?;
                }
            } else if !exists(host, &there).await? {
                copy_in(host, &link.path, &there).await?;
            }
            self.copies.push((link.path.clone(), there.clone()));
            below = Some((there, link.format.clone()));
        }
        Ok(below.expect("a chain has its base").0)
    }

    /// The path there of this machine's file `path` (itself when it is
    /// not copied).
    fn there(&self, path: &Path) -> PathBuf {
        self.copies
            .iter()
            .find(|(here, _)| here == path)
            .map_or_else(|| path.to_path_buf(), |(_, there)| there.clone())
    }

    /// This machine's file whose copy is `there` (itself when none is).
    fn here_of(&self, there: &Path) -> PathBuf {
        self.copies
            .iter()
            .find(|(_, copy)| copy == there)
            .map_or_else(|| there.to_path_buf(), |(here, _)| here.clone())
    }

    /// Makes `cmdline`, which names the files of `from`, name this
    /// placement's: the kernel, the initrd, and each `-drive`'s file.
    pub(crate) fn rewrite(&self, cmdline: &mut QemuCmdline, from: &Placement) {
        let map = |path: &str| -> String {
            let path = Path::new(path);
            if let Some(index) = from.overlays.iter().position(|o| o == path) {
                return self.overlays[index].to_string_lossy().into_owned();
            }
            self.there(&from.here_of(path))
                .to_string_lossy()
                .into_owned()
        };
        for arg in &mut cmdline.args {
            match arg {
                Arg::Value(ValueOption::Kernel | ValueOption::Initrd, value) => {
                    *value = map(value);
                }
                Arg::Props(PropsOption::Drive, props) => {
                    for (key, value) in props.entries_mut() {
                        if let (Some(v), "file") = (value.as_mut(), key.as_str()) {
                            *v = map(v);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// One image of a backing chain.
struct ChainLink {
    path: PathBuf,
    format: String,
}

/// `base` and the images under it, top first (`qemu-img info
/// --backing-chain`).
async fn backing_chain(qemu_img: &str, base: &Path) -> Result<Vec<ChainLink>> {
    let shown = base.to_string_lossy();
    let argv = [
        qemu_img,
        "info",
        "-U",
        "--backing-chain",
        "--output=json",
        &shown,
    ];
    let bad = |reason: String| Error::Disk {
        path: base.to_path_buf(),
        reason,
    };
    let said = Host::local()
        .check(&argv)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let infos: Vec<serde_json::Value> =
        serde_json::from_str(&said).map_err(|e| bad(format!("qemu-img info said: {e}")))?;
    infos
        .iter()
        .map(|info| {
            let field = |name: &str| info.get(name).and_then(|v| v.as_str()).map(str::to_string);
            match (field("filename"), field("format")) {
                (Some(path), Some(format)) => Ok(ChainLink {
                    path: path.into(),
                    format,
                }),
                _ => Err(bad(format!("qemu-img info said no file or format: {info}"))),
            }
        })
        .collect()
}

/// `qemu-img create -q -f qcow2 -F FORMAT -b BASE OVERLAY`.
fn qemu_img_create<'a>(
    qemu_img: &'a str,
    format: &'a str,
    base: &'a str,
    overlay: &'a str,
) -> [&'a str; 10] {
    [
        qemu_img, "create", "-q", "-f", "qcow2", "-F", format, "-b", base, overlay,
    ]
}

/// The qemu-img beside the host's QEMU, else the one on its PATH.
fn remote_qemu_img(host: &Host) -> String {
    host.qemu()
        .and_then(Path::parent)
        .map_or_else(|| "qemu-img".into(), |dir| dir.join("qemu-img"))
        .to_string_lossy()
        .into_owned()
}

/// Whether `path` is there on `host`.
async fn exists(host: &Host, path: &Path) -> Result<bool> {
    Ok(!host.present(&[path]).await.map_err(Error::Host)?.is_empty())
}

/// Copies `here` to `there` on `host`, checked by hash.
async fn copy_in(host: &Host, here: &Path, there: &Path) -> Result<()> {
    let size = std::fs::metadata(here)
        .map_err(|source| Error::Io {
            what: "reading",
            path: here.to_path_buf(),
            source,
        })?
        .len();
    let started = std::time::Instant::now();
    // However slow the link: a minute, and a second per MiB.
    let deadline = Duration::from_secs(60 + size / (1 << 20));
    let sha256 = sha256_here(here).await?;
    host.copy_in(here, there, &sha256, deadline)
        .await
        .map_err(Error::Host)?;
    tracing::info!(
        file = %here.display(),
        host = host.name(),
        bytes = size,
        elapsed = ?started.elapsed(),
        "copied to the host's storage"
    );
    Ok(())
}

/// The name a read-only file's copy has: its SHA-256, and its extension.
async fn hashed_name(path: &Path) -> Result<String> {
    let sha256 = sha256_here(path).await?;
    Ok(match path.extension() {
        Some(ext) => format!("{sha256}.{}", ext.to_string_lossy()),
        None => sha256,
    })
}

/// The SHA-256 of this machine's file `path`, computed once per process
/// for each size and modification time.
async fn sha256_here(path: &Path) -> Result<String> {
    type Key = (PathBuf, u64, SystemTime);
    static KNOWN: Mutex<Option<HashMap<Key, String>>> = Mutex::new(None);
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let key = (
        path.to_path_buf(),
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let known = |k: &Key| KNOWN.lock().expect("hash lock").as_ref()?.get(k).cloned();
    if let Some(sum) = known(&key) {
        return Ok(sum);
    }
    let sum = Host::local().sha256(path).await.map_err(Error::Host)?;
    KNOWN
        .lock()
        .expect("hash lock")
        .get_or_insert_default()
        .insert(key, sum.clone());
    Ok(sum)
}
