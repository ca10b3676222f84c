//! What a dynamically linked binary needs at run time: its interpreter
//! and the closure of its `DT_NEEDED` libraries, read from the ELF files
//! themselves rather than from a fixed list.

use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, ElfFile64, ProgramHeader};
use object::{Endianness, elf};

use crate::description::Arch;
use crate::error::{Error, IoContext, Result};

/// The run-time needs of one ELF file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The program interpreter (`PT_INTERP`), for executables.
    pub interpreter: Option<String>,
    /// The sonames of `DT_NEEDED` entries.
    pub libraries: Vec<String>,
}

impl Needs {
    /// Whether the file needs nothing at run time (a static binary).
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.libraries.is_empty()
    }
}

/// Reads the interpreter and needed libraries of an ELF file.
pub fn needs(path: &Path) -> Result<Needs> {
    let data = std::fs::read(path).io_context("reading", path)?;
    needs_of(&data).map_err(|reason| Error::Elf {
        path: path.to_path_buf(),
        reason,
    })
}

fn needs_of(data: &[u8]) -> Result<Needs, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = file.endian();
    let mut needs = Needs::default();
    for segment in file.elf_program_headers() {
        if segment.p_type(endian) == elf::PT_INTERP {
            let raw = segment
                .data(endian, data)
                .map_err(|()| "bad PT_INTERP segment")?;
            let path = raw.split(|&b| b == 0).next().unwrap_or_default();
            needs.interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let sections = file.elf_section_table();
    if let Some((entries, strings_index)) =
        sections.dynamic(endian, data).map_err(|e| e.to_string())?
    {
        let strings = sections
            .strings(endian, data, strings_index)
            .map_err(|e| e.to_string())?;
        for entry in entries {
            if entry.tag32(endian) == Some(elf::DT_NEEDED) {
                let name = entry.string(endian, strings).map_err(|e| e.to_string())?;
                needs
                    .libraries
                    .push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(needs)
}

/// Checks that the ELF file at `path` runs on `arch`; the error says
/// what it is built for (`built for x86_64, not aarch64`).
pub fn check_arch(path: &Path, arch: Arch) -> Result<(), String> {
    use object::Object;
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let file = object::File::parse(&*data).map_err(|e| format!("not an ELF file ({e})"))?;
    let built_for = match file.architecture() {
        object::Architecture::X86_64 => Some(Arch::X86_64),
        object::Architecture::Aarch64 => Some(Arch::Aarch64),
        _ => None,
    };
    match built_for {
        Some(found) if found == arch => Ok(()),
        Some(found) => Err(format!("built for {found}, not {arch}")),
        None => Err(format!("built for {:?}, not {arch}", file.architecture())),
    }
}

/// One file to copy into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Where it goes in the guest (absolute).
    pub guest_path: String,
    /// Where it is on the host.
    pub host_path: PathBuf,
}

/// Finds the interpreter and every library `binary` needs, transitively,
/// in `search` (directories looked at in order). Libraries go to `/lib` in
/// the guest, which every glibc searches; the interpreter keeps its path.
pub fn closure(binary: &Path, search: &[PathBuf]) -> Result<Vec<GuestFile>> {
    let mut files: Vec<GuestFile> = Vec::new();
    let mut queue = vec![(binary.to_path_buf(), needs(binary)?)];
    while let Some((from, needs)) = queue.pop() {
        if let Some(interp) = needs.interpreter
            && !files.iter().any(|f| f.guest_path == interp)
        {
            let name = Path::new(&interp)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default();
            let host_path =
                find(&name, Path::new(&interp), search).ok_or_else(|| Error::LibraryMissing {
                    soname: interp.clone(),
                    binary: from.clone(),
                    searched: describe(search),
                })?;
            files.push(GuestFile {
                guest_path: interp,
                host_path,
            });
        }
        for soname in needs.libraries {
            let guest_path = format!("/lib/{soname}");
            if files.iter().any(|f| f.guest_path == guest_path) {
                continue;
            }
            let host_path = find(Path::new(&soname), Path::new(""), search).ok_or_else(|| {
                Error::LibraryMissing {
                    soname: soname.clone(),
                    binary: from.clone(),
                    searched: describe(search),
                }
            })?;
            queue.push((host_path.clone(), self::needs(&host_path)?));
            files.push(GuestFile {
                guest_path,
                host_path,
            });
        }
    }
    Ok(files)
}

/// Looks for `name` in each directory, then at `exact` (an absolute path
/// such as the interpreter's) under each directory's root.
fn find(name: &Path, exact: &Path, search: &[PathBuf]) -> Option<PathBuf> {
    search
        .iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .or_else(|| {
            exact
                .is_absolute()
                .then(|| exact.to_path_buf())
                .filter(|p| p.is_file())
        })
}

fn describe(search: &[PathBuf]) -> Vec<String> {
    search.iter().map(|d| d.display().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_has_an_interpreter_and_libc() {
        let exe = std::env::current_exe().unwrap();
        let needs = needs(&exe).unwrap();
        assert!(
            needs.interpreter.as_deref().unwrap().contains("ld-linux"),
            "{needs:?}"
        );
        assert!(
            needs.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{needs:?}"
        );
        assert!(!needs.is_static());
    }

    #[test]
    fn closure_resolves_libc_from_the_host() {
        let exe = std::env::current_exe().unwrap();
        let dirs = [
            PathBuf::from("/lib/x86_64-linux-gnu"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu"),
        ];
        let files = closure(&exe, &dirs).unwrap();
        assert!(
            files
                .iter()
                .any(|f| f.guest_path.starts_with("/lib/libc.so")),
            "{files:?}"
        );
        assert!(
            files.iter().any(|f| f.guest_path.contains("ld-linux")),
            "{files:?}"
        );
    }

    #[test]
    fn a_missing_library_names_it_and_the_places_searched() {
        let exe = std::env::current_exe().unwrap();
        let err = closure(&exe, &[PathBuf::from("/nonexistent")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent") && err.contains("not found"),
            "{err}"
        );
    }

    #[test]
    fn text_is_not_elf() {
        assert!(needs_of(b"#!/bin/sh\n").is_err());
    }
}
