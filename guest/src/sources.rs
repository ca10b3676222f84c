//! Where each piece of the guest comes from, looked for in order: paths
//! the user gives, files on the host, then the distro's packages.
//!
//! Locating is cheap (no download), so bootstrap can tell from the located
//! sources alone whether anything changed since the last build.

use std::path::{Path, PathBuf};

use crate::apt::{Apt, Package};
use crate::elf;
use crate::error::{Error, Result};
pub use crate::manifest::Origin;

/// A located component: files already on disk, or a package still to be
/// fetched.
#[derive(Debug, Clone)]
pub enum Located {
    /// Files on disk (user or host).
    Files {
        /// The main file (kernel image, binary).
        path: PathBuf,
        /// For a kernel, its modules directory.
        modules: Option<PathBuf>,
        /// Where it came from.
        origin: Origin,
    },
    /// A package to fetch and unpack.
    Package(Package),
}

impl Located {
    /// Where the component comes from.
    pub fn origin(&self) -> Origin {
        match self {
            Located::Files { origin, .. } => origin.clone(),
            Located::Package(p) => Origin::Package {
                name: p.name.clone(),
                version: p.version.clone(),
            },
        }
    }
}

/// What the user gave on the command line (all optional).
#[derive(Debug, Clone, Default)]
pub struct UserPaths {
    /// A kernel image (bzImage/vmlinuz).
    pub kernel: Option<PathBuf>,
    /// The kernel's `/lib/modules/<version>` directory.
    pub modules: Option<PathBuf>,
    /// A static busybox.
    pub busybox: Option<PathBuf>,
    /// A dropbear binary.
    pub dropbear: Option<PathBuf>,
    /// A guest agent binary (`qemu-ga`).
    pub qemu_ga: Option<PathBuf>,
}

/// Where host files are looked for; a field per component so tests can
/// point them elsewhere.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// Directory of `vmlinuz-<version>` files.
    pub boot_dir: PathBuf,
    /// Directory of `<version>` module trees.
    pub modules_root: PathBuf,
    /// Candidate busybox binaries.
    pub busybox: Vec<PathBuf>,
    /// Candidate dropbear binaries.
    pub dropbear: Vec<PathBuf>,
    /// Candidate guest agent binaries.
    pub qemu_ga: Vec<PathBuf>,
    /// Library directories.
    pub lib_dirs: Vec<PathBuf>,
}

impl Default for HostPaths {
    fn default() -> Self {
        let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
        HostPaths {
            boot_dir: "/boot".into(),
            modules_root: "/lib/modules".into(),
            busybox: vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
            dropbear: vec!["/usr/sbin/dropbear".into()],
            qemu_ga: vec!["/usr/sbin/qemu-ga".into(), "/usr/bin/qemu-ga".into()],
            lib_dirs: [
                format!("/lib/{triple}"),
                format!("/usr/lib/{triple}"),
                "/lib64".into(),
                "/usr/lib64".into(),
                "/lib".into(),
                "/usr/lib".into(),
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

/// Locates the kernel: user path, newest host kernel with modules, then
/// the `linux-image-<arch>` package.
pub fn kernel(
    user: &UserPaths,
    host: &HostPaths,
    apt: Option<&Apt>,
    deb_arch: &str,
) -> Result<Located> {
    let mut tried = Vec::new();
    if let Some(path) = &user.kernel {
        if path.is_file() {
            return Ok(Located::Files {
                path: path.clone(),
                modules: user.modules.clone(),
                origin: Origin::User { path: path.clone() },
            });
        }
        tried.push(format!("--kernel {}: no such file", path.display()));
    }
    match host_kernels(host) {
        Ok(kernels) => {
            if let Some((path, modules)) = kernels.into_iter().next() {
                return Ok(Located::Files {
                    origin: Origin::Host { path: path.clone() },
                    path,
                    modules: Some(modules),
                });
            }
            tried.push(format!(
                "{}: no readable vmlinuz-<version> with a module tree in {}",
                host.boot_dir.display(),
                host.modules_root.display()
            ));
        }
        Err(e) => tried.push(format!("{}: {e}", host.boot_dir.display())),
    }
    let Some(apt) = apt else {
        tried.push("packages: disabled".into());
        return Err(Error::NoKernel { tried });
    };
    let meta = format!("linux-image-{deb_arch}");
    let package = apt
        .candidate(&meta)
        .and_then(|meta_pkg| {
            // The meta package depends on the versioned image package.
            match meta_pkg
                .depends
                .iter()
                .find(|d| d.starts_with("linux-image-"))
            {
                Some(image) => apt.candidate(image),
                None => Ok(meta_pkg),
            }
        })
        .map_err(|e| {
            tried.push(format!("package {meta}: {e}"));
            Error::NoKernel { tried }
        })?;
    Ok(Located::Package(package))
}

/// Host kernels that have a module tree, newest first.
fn host_kernels(host: &HostPaths) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&host.boot_dir)? {
        let path = entry?.path();
        let Some(version) = path
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix("vmlinuz-"))
        else {
            continue;
        };
        let modules = host.modules_root.join(version);
        // A kernel readable only by root (Ubuntu's mode 0600) does not do.
        if std::fs::File::open(&path).is_ok() && modules.is_dir() {
            found.push((version.to_string(), path, modules));
        }
    }
    found.sort_by(|a, b| version_cmp(&b.0, &a.0));
    Ok(found.into_iter().map(|(_, p, m)| (p, m)).collect())
}

/// Compares versions by their numeric runs (`6.1.0-10` after `6.1.0-9`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    key(a).cmp(&key(b))
}

/// Locates a binary: user path, host candidates that `accept` takes, then
/// `package`.
pub fn binary(
    user: Option<&Path>,
    host_candidates: &[PathBuf],
    accept: impl Fn(&Path) -> Result<(), String>,
    apt: Option<&Apt>,
    package: &str,
) -> std::result::Result<Located, Vec<String>> {
    let mut tried = Vec::new();
    if let Some(path) = user {
        match accept(path) {
            Ok(()) => {
                return Ok(Located::Files {
                    path: path.to_path_buf(),
                    modules: None,
                    origin: Origin::User {
                        path: path.to_path_buf(),
                    },
                });
            }
            Err(why) => tried.push(format!("{}: {why}", path.display())),
        }
    }
    for path in host_candidates {
        match accept(path) {
            Ok(()) => {
                return Ok(Located::Files {
                    path: path.clone(),
                    modules: None,
                    origin: Origin::Host { path: path.clone() },
                });
            }
            Err(why) => tried.push(format!("{}: {why}", path.display())),
        }
    }
    match apt.map(|apt| apt.candidate(package)) {
        Some(Ok(p)) => Ok(Located::Package(p)),
        Some(Err(e)) => {
            tried.push(format!("package {package}: {e}"));
            Err(tried)
        }
        None => {
            tried.push("packages: disabled".into());
            Err(tried)
        }
    }
}

/// Accepts a static ELF executable (busybox must run before any library
/// is there).
pub(crate) fn accept_static(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err("no such file".into());
    }
    let needs = elf::needs(path).map_err(|e| e.to_string())?;
    if needs.is_static() {
        Ok(())
    } else {
        Err("dynamically linked; a static busybox is needed".into())
    }
}

/// Accepts any ELF executable.
pub(crate) fn accept_elf(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err("no such file".into());
    }
    elf::needs(path).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("5.10.0", "6.1.0"), Less);
    }

    #[test]
    fn host_kernels_need_a_module_tree() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let mods = dir.path().join("modules");
        std::fs::create_dir_all(mods.join("6.1.0-9")).unwrap();
        std::fs::create_dir_all(&boot).unwrap();
        for v in ["6.1.0-9", "6.1.0-10"] {
            std::fs::write(boot.join(format!("vmlinuz-{v}")), b"x").unwrap();
        }
        let host = HostPaths {
            boot_dir: boot.clone(),
            modules_root: mods.clone(),
            ..HostPaths::default()
        };
        let found = host_kernels(&host).unwrap();
        assert_eq!(
            found,
            [(boot.join("vmlinuz-6.1.0-9"), mods.join("6.1.0-9"))]
        );
    }

    #[test]
    fn identity_changes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, b"one").unwrap();
        let origin = Origin::User { path: path.clone() };
        let before = origin.identity();
        std::fs::write(&path, b"three").unwrap();
        assert_ne!(before, origin.identity());
    }
}
