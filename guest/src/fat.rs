//! Small FAT volumes written in memory: the NoCloud seed of a cloud-init
//! guest and the EFI system partition of a disk image.

use std::io::{Cursor, Write};

/// A FAT volume of `size` bytes labelled `label` (at most 11 ASCII
/// characters), holding `files` (paths like `EFI/BOOT/BOOTX64.EFI`; their
/// directories are made).
///
/// ```
/// let image = virtest_guest::fat::volume(1 << 20, "CIDATA", &[("meta-data", b"instance-id: a\n")]).unwrap();
/// assert_eq!(image.len(), 1 << 20);
/// ```
pub fn volume(size: usize, label: &str, files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut padded = [b' '; 11];
    for (slot, byte) in padded.iter_mut().zip(label.bytes()) {
        *slot = byte.to_ascii_uppercase();
    }
    let mut disk = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new().volume_label(padded),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        for (path, bytes) in files {
            let mut dir = fs.root_dir();
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().unwrap_or_default();
            for part in parts {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part)?,
                };
            }
            dir.create_file(name)?.write_all(bytes)?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_read_back_and_the_label_is_set() {
        let image = volume(
            2 << 20,
            "cidata",
            &[
                ("meta-data", b"instance-id: x\n"),
                ("EFI/BOOT/A.EFI", b"MZ"),
            ],
        )
        .unwrap();
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        let mut text = String::new();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "instance-id: x\n");
        let mut efi = Vec::new();
        fs.root_dir()
            .open_file("EFI/BOOT/A.EFI")
            .unwrap()
            .read_to_end(&mut efi)
            .unwrap();
        assert_eq!(efi, b"MZ");
    }
}
