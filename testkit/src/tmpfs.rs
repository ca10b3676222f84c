//! A small disk of its own for a test that fills one: a tmpfs mounted on
//! a temporary directory (needs root), unmounted when dropped.

use std::path::Path;

/// A tmpfs of a few MiB, mounted until dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

/// Mounts a tmpfs of `mib` MiB; `None` (with a line saying the test is
/// skipped) where mounting needs a root this process is not.
pub fn small_disk(mib: u32) -> Option<SmallDisk> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    Some(SmallDisk { dir })
}

impl SmallDisk {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
