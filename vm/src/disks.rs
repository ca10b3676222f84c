//! A VM's writable disk state: a qcow2 overlay over each base image of its
//! guest, for UEFI guests a copy of the firmware's variable store, and for
//! cloud-init guests the VM's NoCloud seed.
//! Base images are never written. The files live in the VM's private
//! `disks/` directory, made at the first `power_on` and kept across power
//! cycles and migrations (a destination opens the very same files), and
//! removed with the VM unless it is asked to keep them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtest_guest::GuestDescription;
use virtest_guest::cloud_init::Seed;
use virtest_guest::description::{DiskFormat, DiskSource};
use virtest_guest::snapshots::InUse;

use crate::error::{Error, Result};
use crate::firmware::UefiFiles;

/// One overlay: the file QEMU writes, over a base it only reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The overlay (qcow2), in the VM's disk directory.
    pub path: PathBuf,
    /// The base image it is backed by.
    pub base: PathBuf,
    /// The base image's format.
    pub base_format: DiskFormat,
}

/// The disk state of one VM. Dropping it removes its files unless
/// [`VmDisks::keep`] was called.
#[derive(Debug)]
pub(crate) struct VmDisks {
    dir: PathBuf,
    overlays: Vec<Overlay>,
    uefi: Option<UefiFiles>,
    seed: Option<PathBuf>,
    /// Whether the seed holds a password: it is never kept, since kept
    /// disks end up in a test's results.
    seed_has_secret: bool,
    keep: bool,
    /// qemu-img, to make overlays again over a snapshot's disks.
    qemu_img: PathBuf,
    /// The files the disk state is made from: the base images, the UEFI
    /// code and variable template (what a snapshot's key must cover).
    sources: Vec<PathBuf>,
    /// The snapshot the overlays are over, marked in use.
    snapshot: Option<InUse>,
}

impl Drop for VmDisks {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if let (Some(seed), true) = (&self.seed, self.seed_has_secret) {
            let _ = std::fs::remove_file(seed);
        }
    }
}

impl VmDisks {
    /// Makes the overlays, the UEFI variable store and the cloud-init
    /// `seed` of `guest` in `dir` (created private). `qemu_img` is the
    /// qemu-img binary.
    pub(crate) async fn create(
        guest: &GuestDescription,
        dir: &Path,
        qemu_img: &Path,
        seed: Option<&Seed>,
    ) -> Result<VmDisks> {
        crate::dirs::create_private(dir).map_err(|source| Error::Io {
            what: "creating the disk directory",
            path: dir.to_path_buf(),
            source,
        })?;
        // From here on, dropping `disks` (on any error) removes the files.
        let mut disks = VmDisks {
            dir: dir.to_path_buf(),
            overlays: Vec::new(),
            uefi: None,
            seed: None,
            seed_has_secret: false,
            keep: false,
            qemu_img: qemu_img.to_path_buf(),
            sources: Vec::new(),
            snapshot: None,
        };
        for (index, disk) in guest.disks.iter().enumerate() {
            let base = match &disk.source {
                DiskSource::File(path) => path.clone(),
                DiskSource::Url { url, sha256 } => fetch_image(guest, url, sha256).await?,
            };
            let overlay = Overlay {
                path: dir.join(format!("disk{index}.qcow2")),
                base,
                base_format: disk.format,
            };
            crate::image::check_image(qemu_img, &overlay.base, disk.format)
                .await
                .map_err(|reason| Error::Disk {
                    path: overlay.base.clone(),
                    reason,
                })?;
            create_overlay(qemu_img, &overlay).await?;
            disks.sources.push(overlay.base.clone());
            disks.overlays.push(overlay);
        }
        if guest.boot.firmware.is_uefi() {
            let uefi = UefiFiles::installed(guest.boot.firmware, guest.arch)?
                .with_vars(dir.join("uefi-vars.fd"))?;
            disks
                .sources
                .extend([uefi.code.clone(), uefi.template.clone()]);
            disks.uefi = Some(uefi);
        }
        if let Some(seed) = seed {
            let path = dir.join("seed.img");
            write_seed(guest, seed, &path)?;
            tracing::debug!(seed = %path.display(), instance = %seed.instance_id, "cloud-init seed written");
            disks.seed = Some(path);
            disks.seed_has_secret = seed.password.is_some();
        }
        Ok(disks)
    }

    /// The cloud-init seed volume, for a cloud-init guest.
    pub(crate) fn seed(&self) -> Option<&Path> {
        self.seed.as_deref()
    }

    /// The overlays, in the guest's disk order.
    pub(crate) fn overlays(&self) -> &[Overlay] {
        &self.overlays
    }

    /// The UEFI files, for a UEFI guest.
    pub(crate) fn uefi(&self) -> Option<&UefiFiles> {
        self.uefi.as_ref()
    }

    /// The directory holding the files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The qemu-img it makes overlays with.
    pub(crate) fn qemu_img(&self) -> &Path {
        &self.qemu_img
    }

    /// Makes `paths` (files in its directory, over the same bases) the
    /// overlays, and removes the ones they replace: the VM's disks came
    /// back to this machine, into new overlays.
    pub(crate) fn replace_overlays(&mut self, paths: &[PathBuf]) {
        for (overlay, path) in self.overlays.iter_mut().zip(paths) {
            if overlay.path != *path {
                let _ = std::fs::remove_file(&overlay.path);
                overlay.path = path.clone();
            }
        }
    }

    /// Keeps the files when the VM is dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    /// Whether there is anything a snapshot must freeze (overlays, UEFI
    /// variables, a seed).
    pub(crate) fn is_empty(&self) -> bool {
        self.overlays.is_empty() && self.uefi.is_none() && self.seed.is_none()
    }

    /// The base images and UEFI files the disk state is made from.
    pub(crate) fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Moves the overlays into `snapshot` (a snapshot being made, once
    /// QEMU has ended) and copies the seed and the UEFI variables there,
    /// under the names the VM uses. The VM's overlays are gone until
    /// [`VmDisks::adopt`].
    pub(crate) fn freeze_into(&self, snapshot: &Path) -> std::io::Result<()> {
        for overlay in &self.overlays {
            let to = snapshot.join(overlay.path.file_name().expect("a file"));
            if std::fs::rename(&overlay.path, &to).is_err() {
                // Another filesystem: copy, then remove.
                std::fs::copy(&overlay.path, &to)?;
                std::fs::remove_file(&overlay.path)?;
            }
        }
        for file in self.uefi.iter().map(|u| &u.vars).chain(&self.seed) {
            std::fs::copy(file, snapshot.join(file.file_name().expect("a file")))?;
        }
        Ok(())
    }

    /// Makes the VM's disk state the one frozen in `snapshot`: each
    /// overlay made again over the snapshot's (read-only) copy, the seed
    /// and UEFI variables copied from it. What the VM wrote before is
    /// discarded.
    pub(crate) async fn adopt(&mut self, snapshot: &Path, held: InUse) -> Result<()> {
        if !self.overlays.is_empty() {
            self.snapshot = Some(held);
        }
        for overlay in &mut self.overlays {
            let frozen = snapshot.join(overlay.path.file_name().expect("a file"));
            let _ = std::fs::remove_file(&overlay.path);
            overlay.base = frozen;
            overlay.base_format = DiskFormat::Qcow2;
            create_overlay(&self.qemu_img, overlay).await?;
        }
        for file in self.uefi.iter().map(|u| &u.vars).chain(&self.seed) {
            let from = snapshot.join(file.file_name().expect("a file"));
            let io_error = |source| Error::Io {
                what: "copying a snapshot's file to",
                path: file.clone(),
                source,
            };
            // The snapshot's copy is read-only; the VM's must not be.
            let _ = std::fs::remove_file(file);
            std::fs::copy(&from, file).map_err(io_error)?;
            std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io_error)?;
        }
        Ok(())
    }
}

/// The cloud-init seed volume of a VM, written to `path`.
#[cfg(feature = "provision")]
fn write_seed(guest: &GuestDescription, seed: &Seed, path: &Path) -> Result<()> {
    seed.write(path).map_err(|source| Error::Guest {
        guest: guest.path.clone(),
        source,
    })
}

/// Without the `provision` feature, no seed can be written.
#[cfg(not(feature = "provision"))]
fn write_seed(guest: &GuestDescription, _: &Seed, _: &Path) -> Result<()> {
    Err(Error::NotProvisioned {
        what: format!("the cloud-init seed of `{}`", guest.path.display()),
    })
}

/// The image at `url` from the cache, downloaded first when missing
/// (progress in the log every tenth of the way).
#[cfg(feature = "provision")]
async fn fetch_image(guest: &GuestDescription, url: &str, sha256: &str) -> Result<PathBuf> {
    let guest_error = |source| Error::Guest {
        guest: guest.path.clone(),
        source,
    };
    let home = virtest_guest::cache::default_home().map_err(guest_error)?;
    let (url, sha256) = (url.to_string(), sha256.to_string());
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut logged = 0;
        let mut progress = |got: u64, total: Option<u64>| {
            if let Some(total) = total.filter(|t| *t > 0) {
                let tenth = got * 10 / total;
                if tenth > logged {
                    logged = tenth;
                    tracing::info!(%url, got, total, "downloading: {}%", tenth * 10);
                }
            }
        };
        virtest_guest::images::fetch(&home, &url, &sha256, &mut progress)
    })
    .await
    .expect("fetching does not panic")
    .map_err(guest_error)
}

/// Without the `provision` feature, an image by URL is used only when it
/// is in the cache already.
#[cfg(not(feature = "provision"))]
async fn fetch_image(guest: &GuestDescription, url: &str, sha256: &str) -> Result<PathBuf> {
    let home = virtest_guest::cache::default_home().map_err(|source| Error::Guest {
        guest: guest.path.clone(),
        source,
    })?;
    let path = virtest_guest::images::cached_path(&home, url, sha256);
    match path.is_file() {
        true => Ok(path),
        false => Err(Error::NotProvisioned {
            what: format!(
                "downloading `{url}` (not in the cache at `{}`)",
                path.display()
            ),
        }),
    }
}

/// How long one qemu-img command may take (it makes a small file or
/// reads a header).
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `qemu-img create -q -f qcow2 ARGS...`: `Err` with qemu-img's
/// own message when it fails.
pub(crate) async fn qemu_img_create(
    qemu_img: &Path,
    args: &[&OsStr],
) -> Result<std::result::Result<(), String>> {
    let mut command = std::process::Command::new(qemu_img);
    command.args(["create", "-q", "-f", "qcow2"]).args(args);
    let output = virtest_host::process::run_tool(command, "qemu-img", QEMU_IMG_TIMEOUT)
        .await
        .map_err(|source| Error::Spawn {
            binary: qemu_img.to_path_buf(),
            source,
        })?;
    Ok(match output.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
    })
}

/// `qemu-img create -f qcow2 -b BASE -F FORMAT OVERLAY`, after checking
/// that the base is there; qemu-img's own message (say, a file that is
/// not in the format the description names) is passed on with the path.
async fn create_overlay(qemu_img: &Path, overlay: &Overlay) -> Result<()> {
    let base = &overlay.base;
    let bad = |reason: String| Error::Disk {
        path: base.clone(),
        reason,
    };
    match std::fs::metadata(base) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(bad("it is not a file".into())),
        Err(e) => return Err(bad(format!("the image cannot be used ({e})"))),
    }
    let started = Instant::now();
    let format = overlay.base_format.as_str();
    let args = [
        "-F".as_ref(),
        format.as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        overlay.path.as_os_str(),
    ];
    if let Err(said) = qemu_img_create(qemu_img, &args).await? {
        return Err(bad(format!(
            "qemu-img could not make an overlay over it as {format}: {said}"
        )));
    }
    // The guest writes its secrets to it (an SSH host key, say).
    virtest_guest::private::make_private(&overlay.path).map_err(|e| bad(e.to_string()))?;
    tracing::debug!(
        overlay = %overlay.path.display(),
        base = %base.display(),
        elapsed = ?started.elapsed(),
        "overlay created"
    );
    Ok(())
}
