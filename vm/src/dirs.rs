//! Per-VM ids and private directories.

use std::hash::BuildHasher;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A short id, random enough to tell apart the VMs of many jobs
/// (`3fa9c1`).
pub(crate) fn short_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let hash = std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
    ));
    format!("{:06x}", hash & 0xff_ffff)
}

/// Creates `dir` and any missing parents with mode 0700.
pub(crate) fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Where a VM's sockets go: `$XDG_RUNTIME_DIR/virtest/<id>`, else
/// `<tmp>/virtest-<uid>/<id>`. Short, so socket paths stay under the
/// 108 bytes a unix socket address holds.
pub(crate) fn runtime_dir(id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty() && Path::new(d).is_dir())
        .map(|d| PathBuf::from(d).join("virtest"))
        .unwrap_or_else(|| {
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir().join(format!("virtest-{uid}"))
        });
    base.join(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ids_differ_and_are_short() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| short_id()).collect();
        assert!(ids.len() > 990);
        assert!(ids.iter().all(|id| id.len() == 6));
    }

    #[test]
    fn private_dirs_are_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
