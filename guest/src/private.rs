//! Files that hold secrets (a private key, a password or its hash, guest
//! memory) are for their owner's eyes only. They are written so, and
//! checked when used: one that other users can read (left by an older
//! virtest, or changed by hand) is made private again, with a warning,
//! or refused when its mode cannot be changed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The permission bits of group and others.
const OTHERS: u32 = 0o077;

/// Makes `path` readable by its owner only (its group and others lose
/// every permission), as written.
pub fn make_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .io_context("reading the mode of", path)?
        .permissions()
        .mode();
    if mode & OTHERS != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))
            .io_context("making private", path)?;
    }
    Ok(())
}

/// Checks that `path`, which holds a secret, is private; makes it so,
/// with a warning, when it is not. A missing file is fine (the caller
/// reports what it needs). A file whose mode cannot be changed (another
/// user's) is an error: its secret is open to others.
pub fn ensure_private(path: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if mode & OTHERS == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700)).io_context(
        "holding secrets, readable by other users, and cannot be made private",
        path,
    )?;
    tracing::warn!(
        path = %path.display(),
        "`{}` holds secrets and was readable by other users (mode {:o}): made it private",
        path.display(),
        mode & 0o777
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_files_are_closed_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "key").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private(&secret).unwrap();
        assert_eq!(mode(&secret), 0o600);
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o444)).unwrap();
        make_private(&secret).unwrap();
        assert_eq!(mode(&secret), 0o400, "read-only stays read-only");
        ensure_private(&dir.path().join("missing")).unwrap();
    }
}
