//! How each located piece of the default guest becomes files on disk:
//! given files as they are; packages fetched and unpacked (a kernel
//! package only with the modules the guest loads); and the libraries a
//! binary needs, from the host or from its dependencies' packages.

use std::fs;
use std::path::{Path, PathBuf};

use crate::apt::{self, Apt};
use crate::description::Arch;
use crate::elf::{self, GuestFile};
use crate::error::{Error, IoContext, Result};
use crate::modules::Selector;
use crate::sources::{HostPaths, Located};

use super::modules;

/// A located component with its files on disk.
pub(super) enum Materialized {
    /// Given files (user or host).
    Files {
        path: PathBuf,
        modules: Option<PathBuf>,
    },
    /// An unpacked package tree.
    Unpacked {
        root: PathBuf,
        package: crate::apt::Package,
    },
}

pub(super) fn materialize(
    located: &Located,
    apt: Option<&Apt>,
    work: &Path,
    name: &str,
    arch: Arch,
) -> Result<Materialized> {
    match located {
        Located::Files { path, modules, .. } => Ok(Materialized::Files {
            path: path.clone(),
            modules: modules.clone(),
        }),
        Located::Package(package) => {
            let apt = apt.expect("a package is located only when apt is enabled");
            let deb = apt.fetch(package)?;
            let root = work.join(name);
            if name == "kernel" {
                unpack_kernel(apt, &deb, &root, &modules(arch))?;
            } else {
                apt.unpack(&deb, &root)?;
            }
            Ok(Materialized::Unpacked {
                root,
                package: package.clone(),
            })
        }
    }
}

/// Unpacks from a kernel package its image, its list of built-in modules,
/// and only the modules the guest loads with their dependencies: a few
/// hundred kilobytes out of 400 MB.
///
/// The first pass over a package records its module dependencies beside
/// the `.deb`; later passes read them and keep everything in one pass.
fn unpack_kernel(apt: &Apt, deb: &Path, root: &Path, modules: &[&str]) -> Result<()> {
    let index_path = deb.with_extension("modules.json");
    let index = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut selector = match index {
        Some(index) => Selector::with_index(modules, index),
        None => Selector::new(modules),
    };
    apt.stream_files(deb, |path, reader| {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.starts_with("lib/modules") && name.ends_with(".ko") {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).io_context("reading", path)?;
            if selector.offer(path, &bytes)? {
                apt::write_under(root, path, &mut &bytes[..])?;
            }
        } else if (path.starts_with("boot") && name.starts_with("vmlinuz-"))
            || (path.starts_with("lib/modules") && name == "modules.builtin")
        {
            apt::write_under(root, path, reader)?;
        }
        Ok(())
    })?;
    let written = tempfile::NamedTempFile::new_in(index_path.parent().unwrap_or(Path::new(".")))
        .and_then(|mut tmp| {
            serde_json::to_writer(&mut tmp, selector.index())?;
            tmp.persist(&index_path).map(drop).map_err(|e| e.error)
        });
    written.io_context("writing", &index_path)?;
    let missed = selector.missed();
    if !missed.is_empty() {
        tracing::debug!(
            ?missed,
            "second pass for modules seen before they were needed"
        );
        apt.stream_files(deb, |path, reader| match Selector::module_name(path) {
            Some(name) if missed.contains(&name) => apt::write_under(root, path, reader),
            _ => Ok(()),
        })?;
    }
    Ok(())
}

/// The main file of a materialized binary component.
pub(super) fn binary_in(m: &Materialized, path_in_package: &str) -> PathBuf {
    match m {
        Materialized::Files { path, .. } => path.clone(),
        Materialized::Unpacked { root, .. } => root.join(path_in_package),
    }
}

/// The kernel image, its modules directory and release.
pub(super) fn kernel_files(m: &Materialized) -> Result<(PathBuf, Option<PathBuf>, Option<String>)> {
    match m {
        Materialized::Files { path, modules } => {
            let release = modules
                .as_ref()
                .and_then(|d| Some(d.file_name()?.to_string_lossy().into_owned()));
            Ok((path.clone(), modules.clone(), release))
        }
        Materialized::Unpacked { root, package } => {
            let boot = root.join("boot");
            let image = fs::read_dir(&boot)
                .io_context("listing", &boot)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .ok_or_else(|| Error::KernelImage {
                    path: boot.clone(),
                    reason: format!("package {} has no boot/vmlinuz-*", package.name),
                })?;
            let release =
                image.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
            let modules = root.join("lib/modules").join(&release);
            Ok((image, modules.is_dir().then_some(modules), Some(release)))
        }
    }
}

/// A binary's interpreter and libraries: from the host, then from the
/// unpacked packages of its dependencies that the host lacks, one level
/// of dependencies at a time.
pub(super) fn libraries_of(
    binary: &Path,
    materialized: &Materialized,
    host: &HostPaths,
    apt: Option<&Apt>,
    work: &Path,
    arch: Arch,
) -> Result<Vec<GuestFile>> {
    let mut search: Vec<PathBuf> = host.lib_dirs.clone();
    let mut frontier = match materialized {
        Materialized::Unpacked { root, package } => {
            search.extend(lib_dirs(root, arch));
            package.depends.clone()
        }
        Materialized::Files { .. } => Vec::new(),
    };
    let mut fetched: Vec<String> = Vec::new();
    loop {
        let missing = match elf::closure(binary, &search) {
            Err(e @ Error::LibraryMissing { .. }) => e,
            other => return other,
        };
        let Some(apt) = apt else { return Err(missing) };
        let wanted: Vec<&str> = frontier
            .iter()
            .filter(|name| !fetched.contains(name) && !apt.is_installed(name))
            .map(String::as_str)
            .collect();
        if wanted.is_empty() {
            return Err(missing);
        }
        let mut next = Vec::new();
        // One apt-cache call for the whole level.
        for package in apt.candidates(&wanted)? {
            let root = work.join(format!("dep-{}", package.name));
            apt.unpack(&apt.fetch(&package)?, &root)?;
            search.extend(lib_dirs(&root, arch));
            next.extend(package.depends.iter().cloned());
            fetched.push(package.name);
        }
        frontier = next;
    }
}

fn lib_dirs(root: &Path, arch: Arch) -> Vec<PathBuf> {
    let triple = arch.triplet();
    [
        format!("lib/{triple}"),
        format!("usr/lib/{triple}"),
        "lib".into(),
        "usr/lib".into(),
    ]
    .iter()
    .map(|d| root.join(d))
    .collect()
}
