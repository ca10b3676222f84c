//! Debian packages as a source of guest files: the candidate version from
//! `apt-cache`, the `.deb` from `apt-get download` (kept in the cache so it
//! is fetched once), unpacked with `dpkg-deb -x`. Nothing else is
//! downloaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{Error, IoContext, Result};

/// A package as apt would install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// The candidate version.
    pub version: String,
    /// The names in its `Depends` (first alternative of each).
    pub depends: Vec<String>,
}

/// The apt and dpkg programs, and the directory downloaded `.deb`s are
/// kept in.
#[derive(Debug, Clone)]
pub struct Apt {
    /// `apt-get`.
    pub apt_get: PathBuf,
    /// `apt-cache`.
    pub apt_cache: PathBuf,
    /// `dpkg-deb`.
    pub dpkg_deb: PathBuf,
    /// `dpkg-query`.
    pub dpkg_query: PathBuf,
    /// Where `.deb` files are kept.
    pub download_dir: PathBuf,
}

impl Apt {
    /// The system's apt and dpkg, keeping packages in `download_dir`.
    pub fn system(download_dir: PathBuf) -> Apt {
        Apt {
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
            dpkg_deb: "dpkg-deb".into(),
            dpkg_query: "dpkg-query".into(),
            download_dir,
        }
    }

    /// The candidate version of `name` and its dependencies.
    pub fn candidate(&self, name: &str) -> Result<Package> {
        let out = run(
            Command::new(&self.apt_cache).args(["show", "--no-all-versions", name]),
            "apt",
            true,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
        };
        let version = field("Version").ok_or_else(|| Error::UnknownPackage {
            package: name.to_string(),
        })?;
        Ok(Package {
            name: name.to_string(),
            version: version.to_string(),
            depends: field("Depends").map(parse_depends).unwrap_or_default(),
        })
    }

    /// Whether `name` is installed on the host.
    pub fn is_installed(&self, name: &str) -> bool {
        Command::new(&self.dpkg_query)
            .args(["-W", "-f", "${db:Status-Status}", name])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
    }

    /// The `.deb` of `package`, downloaded unless already kept.
    pub fn fetch(&self, package: &Package) -> Result<PathBuf> {
        let kept = self
            .download_dir
            .join(format!("{}_{}.deb", package.name, package.version.replace(':', "%3a")));
        if kept.is_file() {
            return Ok(kept);
        }
        // Download into a private directory, then move into place, so a
        // cut download never looks like a kept package.
        let staging = self.download_dir.join(format!(".download-{}-{}", package.name, std::process::id()));
        std::fs::create_dir_all(&staging).io_context("creating", &staging)?;
        let spec = format!("{}={}", package.name, package.version);
        let result = run(
            Command::new(&self.apt_get).args(["download", "-q", &spec]).current_dir(&staging),
            "apt",
            false,
        )
        .and_then(|_| {
            let deb = std::fs::read_dir(&staging)
                .io_context("listing", &staging)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or_else(|| Error::UnknownPackage {
                    package: spec.clone(),
                })?;
            std::fs::rename(&deb, &kept).io_context("moving", &deb)
        });
        let _ = std::fs::remove_dir_all(&staging);
        result.map(|()| kept)
    }

    /// Unpacks a `.deb`'s files under `dest`.
    pub fn unpack(&self, deb: &Path, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest).io_context("creating", dest)?;
        run(Command::new(&self.dpkg_deb).arg("-x").arg(deb).arg(dest), "dpkg", false).map(drop)
    }
}

/// Names from a `Depends` field: the first alternative of each entry,
/// without version or architecture qualifiers.
fn parse_depends(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?;
            let name = name.split(':').next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Runs a command, mapping "not installed" and failure to clear errors.
fn run(cmd: &mut Command, package: &'static str, quiet_failure_is_unknown: bool) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let line = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "running");
    let out = cmd.env("LC_ALL", "C").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing { program, package }
        } else {
            Error::Io {
                action: "running",
                path: line.clone().into(),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if quiet_failure_is_unknown && (stderr.contains("No packages found") || stderr.contains("Unable to locate")) {
            let package = cmd.get_args().last().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(Error::UnknownPackage { package });
        }
        return Err(Error::CommandFailed {
            command: line,
            status: out.status,
            stderr: tail(&stderr, 800),
        });
    }
    Ok(out)
}

/// The last `max` bytes of `text`, on a character boundary.
pub(crate) fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_keep_first_alternatives_without_qualifiers() {
        let field = "libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), initramfs-tools (>= 0.120) | linux-initramfs-tool, python3:any";
        assert_eq!(parse_depends(field), ["libc6", "libcrypt1", "initramfs-tools", "python3"]);
    }

    #[test]
    fn a_missing_apt_names_its_package() {
        let mut apt = Apt::system(std::env::temp_dir());
        apt.apt_cache = "/nonexistent/apt-cache".into();
        let err = apt.candidate("busybox-static").unwrap_err();
        assert!(matches!(err, Error::ToolMissing { package: "apt", .. }), "{err}");
        assert!(err.to_string().contains("install Debian package `apt`"), "{err}");
    }

    #[test]
    fn tail_cuts_on_a_char_boundary() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("ab", 10), "ab");
    }
}
