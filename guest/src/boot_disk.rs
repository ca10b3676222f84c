//! A bootable disk from a root directory, with no loop devices, mounts
//! or grub-install: a GPT layout from `sfdisk`, `mkfs.ext4 -d` straight
//! into the root partition of a sparse raw file, and GRUB's core images
//! placed by hand (the i386-pc one into the BIOS boot partition, the EFI
//! one onto an ESP this crate formats), so it boots under SeaBIOS and
//! under UEFI like a cloud image.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::command;
use crate::error::{Error, IoContext, Result};

/// One partition as `sfdisk -J` reports it, in 512-byte sectors.
#[derive(Debug, Deserialize)]
struct Partition {
    start: u64,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct PartitionTable {
    partitions: Vec<Partition>,
}

#[derive(Debug, Deserialize)]
struct SfdiskDump {
    partitiontable: PartitionTable,
}

/// What the ESP holds for a root with the signed boot chain, which
/// Secure Boot takes: shim (signed by Microsoft's UEFI CA) as the
/// removable-media loader, the distro-signed GRUB it loads from beside
/// it, shim's MokManager, and a `grub.cfg` where that GRUB looks (its
/// prefix `/EFI/debian`, and beside it) that finds the root file system
/// by its label. A root without the chain gets GRUB built here. Part of
/// what a built image is made from.
pub(crate) const ESP_LAYOUT: &str = "BOOTX64.EFI=shim, grubx64.efi=signed GRUB, mmx64.efi, grub.cfg in EFI/BOOT and EFI/debian: search --label root";

/// The signed boot chain in a root: shim, GRUB and MokManager.
const SHIM: &str = "usr/lib/shim/shimx64.efi.signed";
const SIGNED_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
const MOK_MANAGER: &str = "usr/lib/shim/mmx64.efi.signed";

/// The `grub.cfg` on the ESP: the root file system's own, found by label.
const ESP_GRUB_CFG: &str = "search --no-floppy --label root --set=root\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n";

/// Makes the GPT disk `raw` of `disk_bytes`: a BIOS boot partition
/// holding GRUB's i386-pc core, an ESP of `esp_bytes` holding the EFI
/// boot chain ([`ESP_LAYOUT`]), and the root file system made from
/// `root` (labelled `root`; its `/boot/grub/grub.cfg` is what GRUB runs).
/// `work` holds the GRUB images while they are made.
pub(crate) fn make(
    root: &Path,
    raw: &Path,
    work: &Path,
    disk_bytes: u64,
    esp_bytes: u64,
) -> Result<()> {
    let file = fs::File::create(raw).io_context("creating", raw)?;
    file.set_len(disk_bytes).io_context("sizing", raw)?;
    drop(file);
    let layout = format!(
        "label: gpt\n\
         start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\n\
         size={}KiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n\
         type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n",
        esp_bytes >> 10
    );
    let layout_file = work.join("layout.sfdisk");
    fs::write(&layout_file, layout).io_context("writing", &layout_file)?;
    let layout_input = fs::File::open(&layout_file).io_context("reading", &layout_file)?;
    command::run(
        Command::new("sfdisk")
            .arg("--quiet")
            .arg(raw)
            .stdin(layout_input),
        "fdisk",
    )?;
    let dump = command::run(Command::new("sfdisk").arg("--json").arg(raw), "fdisk")?;
    let table: SfdiskDump =
        serde_json::from_slice(&dump.stdout).map_err(|e| Error::CommandFailed {
            command: format!("sfdisk --json {}", raw.display()),
            status: std::process::ExitStatus::default(),
            stderr: format!("unexpected output ({e})"),
        })?;
    let [bios, esp, rootfs] = &table.partitiontable.partitions[..] else {
        return Err(Error::CommandFailed {
            command: format!("sfdisk {}", raw.display()),
            status: std::process::ExitStatus::default(),
            stderr: "it did not make three partitions".into(),
        });
    };
    command::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(root)
            .arg("-E")
            .arg(format!("offset={}", rootfs.start * 512))
            .arg(raw)
            .arg(format!("{}k", rootfs.size / 2)),
        "e2fsprogs",
    )?;

    let prefix = "(hd0,gpt3)/boot/grub";
    let core = work.join("core.img");
    command::run(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", prefix, "-o"])
            .arg(&core)
            .args([
                "biosdisk",
                "part_gpt",
                "ext2",
                "normal",
                "linux",
                "search",
                "configfile",
                "echo",
                "test",
                "gzio",
            ]),
        "grub-common",
    )?;
    let efi = work.join("BOOTX64.EFI");
    command::run(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", prefix, "-o"])
            .arg(&efi)
            .args([
                "part_gpt",
                "ext2",
                "fat",
                "normal",
                "linux",
                "search",
                "configfile",
                "echo",
                "test",
                "gzio",
                "efi_gop",
            ]),
        "grub-common",
    )?;
    let boot_img = Path::new("/usr/lib/grub/i386-pc/boot.img");
    let boot = fs::read(boot_img).io_context("reading", boot_img)?;
    let core = fs::read(&core).io_context("reading", &core)?;
    let (mbr_code, core) = bios_boot(&boot, core, bios.start, bios.size)?;
    let efi = fs::read(&efi).io_context("reading", &efi)?;
    let read = |name: &str| {
        let path = root.join(name);
        fs::read(&path).io_context("reading", &path)
    };
    let signed = match root.join(SHIM).is_file() && root.join(SIGNED_GRUB).is_file() {
        true => Some((read(SHIM)?, read(SIGNED_GRUB)?, read(MOK_MANAGER)?)),
        false => None,
    };
    let esp_files: Vec<(&str, &[u8])> = match &signed {
        Some((shim, grub, mok_manager)) => vec![
            ("EFI/BOOT/BOOTX64.EFI", shim),
            ("EFI/BOOT/grubx64.efi", grub),
            ("EFI/BOOT/mmx64.efi", mok_manager),
            ("EFI/BOOT/grub.cfg", ESP_GRUB_CFG.as_bytes()),
            ("EFI/debian/grub.cfg", ESP_GRUB_CFG.as_bytes()),
        ],
        None => vec![("EFI/BOOT/BOOTX64.EFI", &efi[..])],
    };
    let esp_image = crate::fat::volume(esp_bytes as usize, "ESP", &esp_files)
        .io_context("formatting the ESP of", raw)?;
    if esp_image.len() as u64 > esp.size * 512 {
        return Err(Error::Io {
            action: "fitting the ESP into",
            path: raw.to_path_buf(),
            source: std::io::Error::other("the ESP image is larger than its partition"),
        });
    }
    let mut disk = fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .io_context("opening", raw)?;
    let mut write_at = |offset: u64, bytes: &[u8]| {
        disk.seek(SeekFrom::Start(offset))
            .and_then(|_| disk.write_all(bytes))
            .io_context("writing", raw)
    };
    // The MBR's boot code only: the protective partition table stays.
    write_at(0, &mbr_code)?;
    write_at(bios.start * 512, &core)?;
    write_at(esp.start * 512, &esp_image)?;
    Ok(())
}

/// GRUB's BIOS boot without grub-install: the MBR code (boot.img's first
/// 440 bytes) pointed at the core's first sector, and the core
/// (diskboot.img first) pointed at the rest of itself, both placed in
/// the BIOS boot partition at `start` (sectors).
fn bios_boot(
    boot: &[u8],
    mut core: Vec<u8>,
    start: u64,
    sectors: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    // Offsets from GRUB's boot.S and diskboot.S (i386-pc).
    const KERNEL_SECTOR: usize = 0x5c;
    const BLOCKLIST: usize = 0x200 - 12;
    let bad = |reason: &str| Error::Io {
        action: "placing GRUB's core image",
        path: PathBuf::from("/usr/lib/grub/i386-pc"),
        source: std::io::Error::other(reason.to_string()),
    };
    if boot.len() != 512 || core.len() < 512 {
        return Err(bad("boot.img is not one sector, or core.img is too small"));
    }
    core.resize(core.len().div_ceil(512) * 512, 0);
    let core_sectors = (core.len() / 512) as u64;
    if core_sectors > sectors {
        return Err(bad("core.img does not fit the BIOS boot partition"));
    }
    let mut mbr = boot[..440].to_vec();
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&start.to_le_bytes());
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(start + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&((core_sectors - 1) as u16).to_le_bytes());
    Ok((mbr, core))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_is_pointed_at_its_partition() {
        let boot = vec![0u8; 512];
        let core = vec![0u8; 512 * 3 + 10];
        let (mbr, core) = bios_boot(&boot, core, 2048, 2048).unwrap();
        assert_eq!(mbr.len(), 440);
        assert_eq!(
            u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(core.len(), 512 * 4);
        assert_eq!(u64::from_le_bytes(core[500..508].try_into().unwrap()), 2049);
        assert_eq!(u16::from_le_bytes(core[508..510].try_into().unwrap()), 3);
        let big = vec![0u8; 512 * 3000];
        assert!(bios_boot(&boot, big, 2048, 2048).is_err());
    }
}
