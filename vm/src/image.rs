//! A disk image as qemu-img sees it, checked before a VM uses it: a file
//! (or a block device), in the format its description names, whose
//! backing chain ends and is all there. `virtest guest check` asks the
//! same, so it refuses what a run would.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use virtest_guest::description::DiskFormat;

/// How long `qemu-img info` may take: it reads headers.
const INFO_TIMEOUT: Duration = Duration::from_secs(30);

/// One image of a backing chain, as `qemu-img info --output=json` says.
#[derive(Deserialize)]
struct ImageInfo {
    filename: String,
    format: String,
}

/// Checks that `path` can be a VM's disk in `format` (see the module
/// doc); the error says what is wrong, in words for the user.
///
/// ```no_run
/// # async fn f() {
/// use virtest_guest::description::DiskFormat;
/// let checked = virtest_vm::check_image("qemu-img".as_ref(), "disk.qcow2".as_ref(), DiskFormat::Qcow2);
/// if let Err(why) = checked.await {
///     eprintln!("disk.qcow2: {why}");
/// }
/// # }
/// ```
pub async fn check_image(qemu_img: &Path, path: &Path, format: DiskFormat) -> Result<(), String> {
    let kind = match std::fs::metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("it does not exist".into());
        }
        Err(e) => return Err(format!("it cannot be used: {e}")),
    };
    if kind.is_dir() {
        return Err("it is a directory, not a disk image".into());
    }
    if !kind.is_file() && !kind.is_block_device() {
        return Err("it is not a regular file or a block device (a FIFO, a socket?)".into());
    }
    let mut command = std::process::Command::new(qemu_img);
    command
        .args(["info", "--backing-chain", "--output=json"])
        .arg(path);
    let output = virtest_host::process::run_tool(command, "qemu-img", INFO_TIMEOUT)
        .await
        .map_err(|e| format!("`{} info` failed: {e}", qemu_img.display()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(format!("qemu-img cannot read it: {}", said.trim()));
    }
    let chain: Vec<ImageInfo> = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("qemu-img's account of it cannot be read: {e}"))?;
    let Some(image) = chain.first() else {
        return Err("qemu-img said nothing about it".into());
    };
    if image.format != format.as_str() {
        return Err(format!(
            "it is a {} image, but its description says {}",
            image.format,
            format.as_str()
        ));
    }
    tracing::debug!(
        image = %path.display(),
        chain = ?chain.iter().map(|i| &i.filename).collect::<Vec<_>>(),
        "disk image checked"
    );
    Ok(())
}
