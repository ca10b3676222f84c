//! Guests by name or by path: what `-p guest=` takes. A name is one of the
//! built-in guests in the cache (`default`, `debian`); anything else is a
//! `guest.toml` or a directory holding one.

use std::path::{Path, PathBuf};

use crate::description::{DESCRIPTION_FILE, GuestDescription};
use crate::error::{Error, Result};

/// The tiny guest `virtest bootstrap` builds, used when no guest is named.
pub const DEFAULT: &str = "default";

/// The guests virtest builds itself, by name.
pub const BUILT_IN: &[&str] = &[DEFAULT, DEFAULT_ARM64, "debian"];

/// The tiny guest for arm64 (`aarch64`, on `qemu-system-aarch64`).
pub const DEFAULT_ARM64: &str = "default-arm64";

/// The files of the built-in guest `name` that hold its secrets: the
/// default guest's initramfs has its SSH host key and root's password
/// hash, its description and manifest the password, and the client key
/// logs in. The Debian guest gets its secrets per VM, from its seed.
fn secret_files(name: &str) -> &'static [&'static str] {
    match name {
        DEFAULT | DEFAULT_ARM64 => &[
            "initramfs.cpio.gz",
            "id_ed25519",
            DESCRIPTION_FILE,
            "manifest.json",
        ],
        _ => &[],
    }
}

/// Where the guest `spec` names has its description: a built-in guest's
/// in the cache under `home`, else the path given (a directory means its
/// `guest.toml`).
pub fn locate(spec: &str, home: &Path) -> PathBuf {
    if BUILT_IN.contains(&spec) && !Path::new(spec).exists() {
        return crate::cache::guest_dir(home, spec).join(DESCRIPTION_FILE);
    }
    let path = PathBuf::from(spec);
    if path.is_dir() {
        path.join(DESCRIPTION_FILE)
    } else {
        path
    }
}

/// Whether `spec` names a built-in guest that is not built yet.
pub fn is_unbuilt(spec: &str, home: &Path) -> bool {
    BUILT_IN.contains(&spec) && !Path::new(spec).exists() && !locate(spec, home).exists()
}

/// Loads the guest `spec` names (see [`locate`]), with the description's
/// warnings. A built-in guest that is not built says how to build it;
/// one whose secrets other users can read is made private first.
pub fn load(spec: &str) -> Result<(GuestDescription, Vec<String>)> {
    if !BUILT_IN.contains(&spec) || Path::new(spec).exists() {
        return GuestDescription::load(&locate(spec, Path::new("")));
    }
    let home = crate::cache::default_home()?;
    if is_unbuilt(spec, &home) {
        return Err(Error::NotBuilt {
            name: spec.to_string(),
            path: locate(spec, &home),
        });
    }
    let dir = crate::cache::guest_dir(&home, spec);
    for file in secret_files(spec) {
        crate::private::ensure_private(&dir.join(file))?;
    }
    GuestDescription::load(&locate(spec, &home))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let home = Path::new("/cache");
        assert_eq!(
            locate("debian", home),
            Path::new("/cache/guests/debian/guest.toml")
        );
        assert_eq!(locate("/img/x.toml", home), Path::new("/img/x.toml"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            locate(&dir.path().to_string_lossy(), home),
            dir.path().join("guest.toml")
        );
        assert!(is_unbuilt("debian", Path::new("/nonexistent")));
        assert!(!is_unbuilt("/img/x.toml", Path::new("/nonexistent")));
    }
}
