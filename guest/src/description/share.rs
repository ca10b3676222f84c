//! Host folders shared into a guest (virtio-9p).

use std::path::{Path, PathBuf};

/// A host directory the guest mounts by its tag:
/// `mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt`.
///
/// ```
/// use virtest_guest::description::Share;
/// let share = Share::new("/srv/data", "data").unwrap();
/// assert_eq!(share.mount_command("/mnt"), "mount -t 9p -o trans=virtio,version=9p2000.L data /mnt");
/// assert!(Share::new("/srv/data", "no spaces").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The directory, on the host QEMU runs on.
    pub path: PathBuf,
    /// The name the guest mounts it by (its 9p mount tag).
    pub tag: String,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// The longest mount tag every QEMU takes (7.2 and older refuse more).
const MAX_TAG_LEN: usize = 31;

impl Share {
    /// A writable share of `path` as `tag`; an error says what is wrong
    /// with the tag (1 to 31 letters, digits, `-`, `_` or `.`).
    pub fn new(path: impl Into<PathBuf>, tag: &str) -> Result<Share, String> {
        check_tag(tag)?;
        Ok(Share {
            path: path.into(),
            tag: tag.to_string(),
            readonly: false,
        })
    }

    /// The guest command that mounts the share at `mount_point`.
    pub fn mount_command(&self, mount_point: &str) -> String {
        format!(
            "mount -t 9p -o trans=virtio,version=9p2000.L{} {} {mount_point}",
            if self.readonly { ",ro" } else { "" },
            self.tag
        )
    }

    /// Checks that the directory exists here; the error says which path
    /// is missing or is not a directory.
    pub fn check_directory(&self) -> Result<(), String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "the shared folder `{}` (tag `{}`) is not a directory",
                self.path.display(),
                self.tag
            )),
            Err(e) => Err(format!(
                "the shared folder `{}` (tag `{}`) cannot be used: {}; create it, or fix the path",
                self.path.display(),
                self.tag,
                match e.kind() {
                    std::io::ErrorKind::NotFound => "there is no such directory".to_string(),
                    _ => e.to_string(),
                }
            )),
        }
    }
}

/// Checks a mount tag: QEMU puts it in a device property and the guest
/// in a mount command, so only plain characters, and not too many.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || !tag.chars().all(plain) {
        return Err(format!(
            "the share tag `{tag}` must be 1 to {MAX_TAG_LEN} letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Checks that no two shares have the same tag.
pub(crate) fn check_unique(shares: &[Share]) -> Result<(), String> {
    for (i, share) in shares.iter().enumerate() {
        if shares[..i].iter().any(|s| s.tag == share.tag) {
            return Err(format!("two shares have the tag `{}`", share.tag));
        }
    }
    Ok(())
}

/// Resolves a share's path against the description's directory.
pub(crate) fn resolve(dir: &Path, path: &str, tag: &str, readonly: bool) -> Result<Share, String> {
    let mut share = Share::new(dir.join(path), tag)?;
    share.readonly = readonly;
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_plain_and_short() {
        for good in ["data", "a", "results-1.x_y", &"t".repeat(31)] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a,b", "é", &"t".repeat(32)] {
            let error = check_tag(bad).unwrap_err();
            assert!(error.contains("1 to 31"), "{error}");
        }
    }

    #[test]
    fn a_read_only_share_mounts_read_only() {
        let mut share = Share::new("/x", "x").unwrap();
        share.readonly = true;
        assert!(share.mount_command("/m").contains("9p2000.L,ro x /m"));
    }

    #[test]
    fn a_missing_directory_is_named() {
        let share = Share::new("/nonexistent/virtest-share", "x").unwrap();
        let error = share.check_directory().unwrap_err();
        assert!(error.contains("/nonexistent/virtest-share"), "{error}");
        assert!(error.contains("no such directory"), "{error}");
        let file = Share::new("/etc/hostname", "x").unwrap();
        assert!(
            file.check_directory()
                .unwrap_err()
                .contains("not a directory")
        );
    }

    #[test]
    fn tags_are_unique() {
        let shares = [
            Share::new("/a", "x").unwrap(),
            Share::new("/b", "x").unwrap(),
        ];
        assert!(check_unique(&shares).unwrap_err().contains("`x`"));
    }
}
