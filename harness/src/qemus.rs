//! `qemu_bin` and `qemu_dst_bin`: a QEMU named by its path, or by its
//! version (`10.0`), found among the host's QEMU and the cache's builds
//! (`virtest bootstrap --qemu`).

use std::path::{Path, PathBuf};

use virtest_guest::qemu_builds;
use virtest_qemu_cmdline::binary::{self, BinaryKind};

use crate::params::ParamValue;

/// A QEMU system emulator as a parameter names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuChoice {
    /// This binary.
    Path(PathBuf),
    /// The QEMU of this version (`10.0`, `7.2.22`).
    Version(String),
}

impl ParamValue for QemuChoice {
    fn expected() -> String {
        "a path, or a QEMU version (`10.0`)".into()
    }
    fn parse(text: &str) -> Option<QemuChoice> {
        match qemu_builds::is_version(text) {
            true => Some(QemuChoice::Version(text.to_string())),
            false => Some(QemuChoice::Path(text.into())),
        }
    }
}

impl QemuChoice {
    /// The binary: the path given, or the QEMU of the version: the
    /// host's when it is that version, else the newest build of it in
    /// the cache, checked whole ([`qemu_builds::QemuBuild::check`]).
    pub fn resolve(&self) -> Result<PathBuf, QemuNotFound> {
        match self {
            QemuChoice::Path(path) => Ok(path.clone()),
            QemuChoice::Version(version) => of_version(version),
        }
    }
}

/// No usable QEMU of the version asked for is here.
#[derive(Debug, thiserror::Error)]
pub enum QemuNotFound {
    /// Neither the host's QEMU nor a cached build is that version.
    #[error(
        "no QEMU {version} here ({found}): `virtest bootstrap --qemu {version}` fetches it \
         from Debian's backports"
    )]
    Missing {
        /// The version asked for.
        version: String,
        /// The QEMUs that are here, in words.
        found: String,
    },
    /// The cache's build of that version lacks a file.
    #[error(transparent)]
    Damaged(#[from] virtest_guest::Error),
}

/// The QEMUs here: the host's (`$QEMU`, then PATH) and the cache's
/// builds, each with its version.
pub fn all() -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    if let Ok(host) = binary::find(BinaryKind::System, None)
        && let Ok((version, _)) = binary::probe_version(&host)
    {
        found.push((host, version.to_string()));
    }
    if let Ok(home) = virtest_guest::cache::default_home() {
        found.extend(
            qemu_builds::installed(&home)
                .into_iter()
                .map(|b| (b.binary, b.version)),
        );
    }
    found
}

/// The QEMU of `version`: the host's if it is that version, else the
/// newest build of it in the cache.
fn of_version(version: &str) -> Result<PathBuf, QemuNotFound> {
    let here = all();
    if let Some((path, _)) = here
        .iter()
        .find(|(_, v)| qemu_builds::matches_version(v, version))
    {
        if let Ok(home) = virtest_guest::cache::default_home()
            && let Some(build) = qemu_builds::installed(&home)
                .into_iter()
                .find(|b| b.binary == *path)
        {
            build.check()?;
        }
        return Ok(path.clone());
    }
    let found = match here.is_empty() {
        true => "no QEMU is installed or cached".to_string(),
        false => here
            .iter()
            .map(|(path, v)| format!("{v} at {}", shown(path)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    Err(QemuNotFound::Missing {
        version: version.to_string(),
        found,
    })
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_is_a_version_or_a_path() {
        assert_eq!(
            QemuChoice::parse("10.0"),
            Some(QemuChoice::Version("10.0".into()))
        );
        assert_eq!(
            QemuChoice::parse("/opt/qemu/bin/qemu-system-x86_64"),
            Some(QemuChoice::Path("/opt/qemu/bin/qemu-system-x86_64".into()))
        );
        assert_eq!(
            QemuChoice::parse("qemu-10.0").unwrap().resolve().unwrap(),
            PathBuf::from("qemu-10.0")
        );
    }

    #[test]
    fn a_version_nobody_has_names_what_is_here_and_how_to_fetch_it() {
        let error = QemuChoice::parse("1.0").unwrap().resolve().unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("no QEMU 1.0 here ("), "{text}");
        assert!(text.contains("virtest bootstrap --qemu 1.0"), "{text}");
    }
}
