//! The kernel image: reading an x86 bzImage and extracting its compressed
//! payload to the uncompressed ELF `vmlinux` that QEMU boots directly
//! through PVH, skipping the in-guest decompression that costs seconds
//! under TCG.

use std::io::{self, Read};
use std::path::Path;

use object::read::elf::{ElfFile64, ProgramHeader};

use crate::error::{Error, Result};

/// How a bzImage's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`CONFIG_KERNEL_GZIP`).
    Gzip,
    /// xz (`CONFIG_KERNEL_XZ`, Debian's choice).
    Xz,
    /// zstd (`CONFIG_KERNEL_ZSTD`).
    Zstd,
}

/// The payload of a bzImage: where it is and how it is compressed.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The compressed bytes, without the trailing size.
    pub data: &'a [u8],
    /// The compression format.
    pub compression: Compression,
    /// The uncompressed size the kernel build appended.
    pub uncompressed_len: u32,
}

/// Finds the compressed payload inside a bzImage (boot protocol 2.08 or
/// later, which records the payload's offset and length).
pub fn payload(image: &[u8]) -> Result<Payload<'_>, String> {
    let u8_at = |off: usize| image.get(off).copied();
    let u16_at = |off: usize| {
        image
            .get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        image
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not an x86 bzImage (no `HdrS` boot header)".into());
    }
    let version = u16_at(0x206).ok_or("boot header cut short")?;
    if version < 0x208 {
        return Err(format!(
            "boot protocol {}.{:02} is older than 2.08 and does not record its payload",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = match u8_at(0x1f1).ok_or("boot header cut short")? {
        0 => 4,
        n => n as usize,
    };
    let offset = u32_at(0x248).ok_or("boot header cut short")? as usize;
    let len = u32_at(0x24c).ok_or("boot header cut short")? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    let all = image
        .get(start..start + len)
        .filter(|p| p.len() > 4)
        .ok_or_else(|| {
            format!(
                "payload at {start}+{len} lies outside the {}-byte image",
                image.len()
            )
        })?;
    let (data, size) = all.split_at(all.len() - 4);
    let compression = if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        return Err(format!(
            "payload compression not supported (magic {:02x?}); gzip, xz and zstd are",
            &data[..data.len().min(6)]
        ));
    };
    Ok(Payload {
        data,
        compression,
        uncompressed_len: u32::from_le_bytes([size[0], size[1], size[2], size[3]]),
    })
}

/// Decompresses a payload, checking its length against the one the build
/// recorded.
pub fn decompress(payload: &Payload<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(payload.uncompressed_len as usize);
    let result = match payload.compression {
        Compression::Gzip => flate2::read::GzDecoder::new(payload.data)
            .read_to_end(&mut out)
            .map(drop),
        Compression::Xz => liblzma::read::XzDecoder::new(payload.data)
            .read_to_end(&mut out)
            .map(drop),
        Compression::Zstd => ruzstd::decoding::StreamingDecoder::new(payload.data)
            .map_err(io::Error::other)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map(drop),
    };
    result.map_err(|e| format!("{:?} payload does not decompress: {e}", payload.compression))?;
    if out.len() != payload.uncompressed_len as usize {
        return Err(format!(
            "payload decompressed to {} bytes, the image says {}",
            out.len(),
            payload.uncompressed_len
        ));
    }
    Ok(out)
}

/// Whether an ELF kernel carries the PVH entry note
/// (`XEN_ELFNOTE_PHYS32_ENTRY`), which QEMU needs to boot it directly.
pub(crate) fn has_pvh_entry(vmlinux: &[u8]) -> Result<bool, String> {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let file = ElfFile64::<object::Endianness>::parse(vmlinux)
        .map_err(|e| format!("extracted payload is not an ELF kernel: {e}"))?;
    let endian = file.endian();
    for segment in file.elf_program_headers() {
        let notes = segment
            .notes(endian, vmlinux)
            .map_err(|e| format!("bad ELF note segment: {e}"))?;
        let Some(mut notes) = notes else { continue };
        while let Some(note) = notes.next().map_err(|e| format!("bad ELF note: {e}"))? {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Reads a bzImage and returns its uncompressed ELF kernel, or `None` when
/// the kernel lacks a PVH entry and must be booted as the bzImage itself.
pub fn extract_vmlinux(bzimage: &Path) -> Result<Option<Vec<u8>>> {
    let bad = |reason: String| Error::KernelImage {
        path: bzimage.to_path_buf(),
        reason,
    };
    let image = std::fs::read(bzimage).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let payload = payload(&image).map_err(bad)?;
    let vmlinux = decompress(&payload).map_err(bad)?;
    Ok(has_pvh_entry(&vmlinux).map_err(bad)?.then_some(vmlinux))
}

/// Checks that `image` is an arm64 kernel `Image`, which QEMU boots as
/// it is: its header has the magic `ARM\x64` at offset 0x38 (the Linux
/// arm64 boot protocol).
pub fn check_arm64_image(image: &Path) -> Result<()> {
    use std::io::Read;
    let mut header = [0u8; 0x40];
    let read = std::fs::File::open(image).and_then(|mut f| f.read_exact(&mut header));
    let reason = match read {
        Err(e) => format!("cannot be read as a kernel image: {e}"),
        Ok(()) if header[0x38..0x3c] == *b"ARM\x64" => return Ok(()),
        Ok(()) => "is not an arm64 kernel Image (no `ARM\\x64` magic at 0x38): an aarch64 \
                   guest boots one, as Debian's linux-image-arm64 installs it"
            .into(),
    };
    Err(Error::KernelImage {
        path: image.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage-shaped buffer: boot header, then `payload` + its size.
    fn fake_bzimage(compressed: &[u8], uncompressed_len: u32) -> Vec<u8> {
        let setup_sects = 2usize;
        let mut image = vec![0u8; (setup_sects + 1) * 512];
        image[0x1f1] = setup_sects as u8;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        let offset = 100u32;
        image.extend(vec![0xaa; offset as usize]);
        image[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(compressed.len() as u32 + 4).to_le_bytes());
        image.extend_from_slice(compressed);
        image.extend_from_slice(&uncompressed_len.to_le_bytes());
        image.extend_from_slice(b"trailing setup data");
        image
    }

    #[test]
    fn gzip_payload_is_found_and_decompressed() {
        let original = b"\x7fELF pretend kernel".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&original).unwrap();
        let image = fake_bzimage(&gz.finish().unwrap(), original.len() as u32);
        let p = payload(&image).unwrap();
        assert_eq!(p.compression, Compression::Gzip);
        assert_eq!(decompress(&p).unwrap(), original);
    }

    #[test]
    fn xz_payload_is_found_and_decompressed() {
        let original = b"kernel text ".repeat(1000);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&original[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        let image = fake_bzimage(&xz, original.len() as u32);
        let p = payload(&image).unwrap();
        assert_eq!(p.compression, Compression::Xz);
        assert_eq!(decompress(&p).unwrap(), original);
    }

    #[test]
    fn zstd_payload_is_found_and_decompressed() {
        let original = b"zstd kernel ".repeat(1000);
        let zst = ruzstd::encoding::compress_to_vec(
            &original[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let image = fake_bzimage(&zst, original.len() as u32);
        let p = payload(&image).unwrap();
        assert_eq!(p.compression, Compression::Zstd);
        assert_eq!(decompress(&p).unwrap(), original);
    }

    #[test]
    fn wrong_recorded_length_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"abc").unwrap();
        let image = fake_bzimage(&gz.finish().unwrap(), 4);
        let err = decompress(&payload(&image).unwrap()).unwrap_err();
        assert!(err.contains("image says 4"), "{err}");
    }

    #[test]
    fn non_kernels_are_refused_with_a_reason() {
        assert!(payload(b"just text").unwrap_err().contains("HdrS"));
        let image = fake_bzimage(b"LZ4?-not-supported", 10);
        assert!(payload(&image).unwrap_err().contains("not supported"));
        let mut cut = fake_bzimage(b"\x1f\x8bxxxxxxxx", 10);
        cut.truncate(600);
        assert!(payload(&cut).unwrap_err().contains("outside"));
    }
}
