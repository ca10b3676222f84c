//! QEMU builds beside the host's: fetched from Debian's backports into
//! the cache by `virtest bootstrap --qemu VERSION`, and found again by
//! version (`qemu_bin=10.0`).
//!
//! Layout under `<cache>/qemu/`:
//! - `apt/`: a private apt state for the backports suite only (its
//!   sources list, package lists and `.deb`s). The host's apt sources and
//!   state are read, never changed.
//! - `<version>/` (`10.0.2/`): the packages unpacked (`usr/bin/...`, its
//!   data files and modules), and `bin/qemu-system-x86_64`, which runs that
//!   QEMU with them: `-L` for its data files and firmware, and
//!   `QEMU_MODULE_DIR` for its modules (the host's are another version's).
//!
//! ```no_run
//! # fn f() -> virtest_guest::Result<()> {
//! use virtest_guest::qemu_builds;
//! let home = virtest_guest::cache::default_home()?;
//! for build in qemu_builds::installed(&home) {
//!     println!("QEMU {} at {}", build.version, build.binary.display());
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[cfg(feature = "provision")]
mod fetch;

#[cfg(feature = "provision")]
pub use fetch::{Backports, fetch, host_source};

/// The system emulator a build is run through, in its `bin/`.
pub const SYSTEM_EMULATOR: &str = "qemu-system-x86_64";

/// A QEMU build in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBuild {
    /// Its upstream version (`10.0.2`).
    pub version: String,
    /// Where it is unpacked.
    pub dir: PathBuf,
    /// The program to run as its system emulator.
    pub binary: PathBuf,
}

/// The file in a build's directory that lists its files with their sizes,
/// written when it was fetched.
pub const FILES: &str = "files";

impl QemuBuild {
    /// Checks that every file the build was fetched with is there, at its
    /// size. A QEMU missing a data file would quietly take the host's copy,
    /// another version's, or fail in ways far from the cause.
    ///
    /// ```no_run
    /// # fn f(home: &std::path::Path) -> virtest_guest::Result<()> {
    /// if let Some(build) = virtest_guest::qemu_builds::find(home, "10.0") {
    ///     build.check()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn check(&self) -> Result<()> {
        let damaged = |what: String| Error::QemuBuild {
            reason: format!(
                "QEMU {} in `{}` is damaged: {what}; fetch it again: `rm -r {} && virtest \
                 bootstrap --qemu {}`",
                self.version,
                self.dir.display(),
                self.dir.display(),
                self.version
            ),
        };
        let list = self.dir.join(FILES);
        let text = std::fs::read_to_string(&list)
            .map_err(|e| damaged(format!("its list of files `{}`: {e}", list.display())))?;
        for line in text.lines() {
            let Some((size, path)) = line.split_once(' ') else {
                return Err(damaged(format!("its list of files has the line `{line}`")));
            };
            let found = std::fs::symlink_metadata(self.dir.join(path)).map(|m| m.len());
            match found {
                Ok(found) if size.parse() == Ok(found) => {}
                Ok(found) => {
                    return Err(damaged(format!("`{path}` has {found} bytes, not {size}")));
                }
                Err(_) => return Err(damaged(format!("`{path}` is missing"))),
            }
        }
        Ok(())
    }
}

/// Where the cache keeps QEMU builds.
pub fn root(home: &Path) -> PathBuf {
    home.join("qemu")
}

/// The builds in the cache, oldest version first.
pub fn installed(home: &Path) -> Vec<QemuBuild> {
    let Ok(entries) = std::fs::read_dir(root(home)) else {
        return Vec::new();
    };
    let mut builds: Vec<QemuBuild> = entries
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.to_string();
            numbers(&version)?;
            let binary = entry.path().join("bin").join(SYSTEM_EMULATOR);
            binary.is_file().then(|| QemuBuild {
                version,
                dir: entry.path(),
                binary,
            })
        })
        .collect();
    builds.sort_by_key(|b| numbers(&b.version));
    builds
}

/// The newest cached build of `version` (`10.0` finds `10.0.2`).
pub fn find(home: &Path, version: &str) -> Option<QemuBuild> {
    installed(home)
        .into_iter()
        .rev()
        .find(|build| matches_version(&build.version, version))
}

/// Whether `text` names a version rather than a path: two or three
/// numbers joined by dots (`10.0`, `7.2.22`).
pub fn is_version(text: &str) -> bool {
    numbers(text).is_some_and(|n| (2..=3).contains(&n.len()))
}

/// Whether `version` (`10.0.2`) is one that `wanted` (`10.0`, or
/// `10.0.2`) names: each number of `wanted` equals `version`'s.
pub fn matches_version(version: &str, wanted: &str) -> bool {
    match (numbers(version), numbers(wanted)) {
        (Some(version), Some(wanted)) => {
            wanted.len() <= version.len() && version[..wanted.len()] == wanted[..]
        }
        _ => false,
    }
}

/// The numbers of a dotted version, if it is one.
fn numbers(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_told_from_paths_and_matched_by_their_numbers() {
        assert!(is_version("10.0"));
        assert!(is_version("7.2.22"));
        for not in ["10", "/usr/bin/qemu", "qemu-10.0", "10.0.", "1.2.3.4", ""] {
            assert!(!is_version(not), "{not:?}");
        }
        assert!(matches_version("10.0.2", "10.0"));
        assert!(matches_version("10.0.2", "10.0.2"));
        assert!(!matches_version("10.0.2", "10.1"));
        assert!(!matches_version("10.0", "10.0.2"));
        assert!(!matches_version("1.0.2", "10.0"));
    }

    #[test]
    fn a_build_missing_a_file_or_with_another_size_is_named_damaged() {
        let home = tempfile::tempdir().unwrap();
        let dir = root(home.path()).join("10.0.2");
        for (path, text) in [
            ("bin/qemu-system-x86_64", "#!/bin/sh\n"),
            ("usr/share/qemu/bios.bin", "rom"),
        ] {
            std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.join(path), text).unwrap();
        }
        fetch::write_files_list(&dir).unwrap();
        let build = find(home.path(), "10.0").unwrap();
        build.check().unwrap();
        std::fs::write(dir.join("usr/share/qemu/bios.bin"), "longer rom").unwrap();
        let error = build.check().unwrap_err().to_string();
        assert!(
            error.contains("`usr/share/qemu/bios.bin` has 10 bytes, not 3"),
            "{error}"
        );
        std::fs::remove_file(dir.join("usr/share/qemu/bios.bin")).unwrap();
        let error = build.check().unwrap_err().to_string();
        assert!(
            error.contains("`usr/share/qemu/bios.bin` is missing"),
            "{error}"
        );
        assert!(error.contains("virtest bootstrap --qemu 10.0.2"), "{error}");
        std::fs::remove_file(dir.join(FILES)).unwrap();
        assert!(
            build
                .check()
                .unwrap_err()
                .to_string()
                .contains("its list of files")
        );
    }

    #[test]
    fn installed_builds_are_the_versioned_directories_with_a_binary() {
        let home = tempfile::tempdir().unwrap();
        for version in ["10.0.2", "9.2.1", "apt", ".10.1.0.part-7"] {
            let bin = root(home.path()).join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join(SYSTEM_EMULATOR), "").unwrap();
        }
        std::fs::create_dir_all(root(home.path()).join("10.1.0")).unwrap();
        let versions: Vec<String> = installed(home.path())
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(versions, ["9.2.1", "10.0.2"]);
        assert_eq!(find(home.path(), "10.0").unwrap().version, "10.0.2");
        assert_eq!(find(home.path(), "10.1"), None);
    }
}
