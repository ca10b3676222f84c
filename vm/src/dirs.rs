//! Per-VM ids and private directories.
//!
//! A VM's sockets live in `<base>/<id>`; the base is checked before use
//! (ours, private, not a symlink: another user must not reach our QMP
//! sockets), and directories that SIGKILLed runs left in it are removed
//! by the next run.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The file in a VM's runtime directory naming the process that owns it.
const OWNER: &str = "owner.pid";

/// A short id, random enough to tell apart the VMs of many jobs
/// (`3fa9c1`).
pub(crate) fn short_id() -> String {
    let [a, b, c] = random();
    format!("{a:02x}{b:02x}{c:02x}")
}

/// `N` bytes from the host's RNG (`N` small: the kernel fills up to 256
/// bytes at once).
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    assert_eq!(filled.ok(), Some(N), "the host's RNG fills a small buffer");
    bytes
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
        .unwrap_or_else(|| std::env::temp_dir().join(format!("virtest-{}", uid())));
    base.join(id)
}

/// Creates a VM's runtime directory (`<base>/<id>`, mode 0700) with the
/// file that names its owner, after checking the base (see
/// [`check_base`]). The first call of a process also removes the
/// directories in the base whose owner is gone.
pub(crate) fn create_runtime_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    let base = dir.parent().expect("<base>/<id>");
    check_base(base)?;
    static CLEANED: Once = Once::new();
    CLEANED.call_once(|| remove_orphans(base));
    let io = |e: std::io::Error| RuntimeDirError {
        path: dir.to_path_buf(),
        why: e.to_string(),
    };
    create_private(dir).map_err(io)?;
    std::fs::write(dir.join(OWNER), std::process::id().to_string()).map_err(io)
}

/// A runtime directory virtest refuses or cannot make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the runtime directory `{path}` cannot be used: {why} (remove it, or set XDG_RUNTIME_DIR to a private directory)"
)]
pub struct RuntimeDirError {
    /// The directory.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

/// Makes `base` (mode 0700) when it is missing, and refuses one that is
/// a symlink, not a directory, owned by another user, or open to others.
pub(crate) fn check_base(base: &Path) -> Result<(), RuntimeDirError> {
    let refuse = |why: String| RuntimeDirError {
        path: base.to_path_buf(),
        why,
    };
    let meta = match std::fs::symlink_metadata(base) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return create_private(base).map_err(|e| refuse(e.to_string()));
        }
        Err(e) => return Err(refuse(e.to_string())),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if meta.uid() != uid() {
        return Err(refuse(format!(
            "it belongs to uid {}, not to this user (uid {})",
            meta.uid(),
            uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode is {:04o}: other users can reach its sockets",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Removes the VM directories in `base` whose owning process is gone (a
/// run killed before it could clean up). A directory without an owner
/// file, or whose owner lives, is left alone.
fn remove_orphans(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join(OWNER)).ok();
        let Some(pid) = owner.and_then(|text| text.trim().parse::<i32>().ok()) else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
            rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
        });
        if gone {
            tracing::debug!(dir = %dir.display(), pid, "removing a runtime directory left by a process that is gone");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
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

    fn base() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("virtest-base");
        (tmp, base)
    }

    #[test]
    fn a_missing_base_is_made_private() {
        let (_tmp, base) = base();
        check_base(&base).unwrap();
        let mode = std::fs::metadata(&base).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        check_base(&base).unwrap();
    }

    #[test]
    fn a_base_others_can_reach_is_refused() {
        let (tmp, base) = base();
        create_private(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_base(&base).unwrap_err();
        assert!(error.to_string().contains("its mode is 0777"), "{error}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let error = check_base(&link).unwrap_err();
        assert!(error.why.contains("symbolic link"), "{error}");
        assert_eq!(error.path, link);

        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(
            check_base(&file)
                .unwrap_err()
                .why
                .contains("not a directory")
        );
    }

    #[test]
    fn a_base_of_another_user_is_refused() {
        if uid() != 0 {
            eprintln!("skipped: only root can give a directory away");
            return;
        }
        let (_tmp, base) = base();
        create_private(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(65534), None).unwrap();
        let error = check_base(&base).unwrap_err();
        assert!(error.why.contains("belongs to uid 65534"), "{error}");
    }

    #[test]
    fn directories_of_gone_processes_are_removed() {
        let (_tmp, base) = base();
        create_private(&base).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        for (name, owner) in [
            ("gone", Some(dead)),
            ("mine", Some(std::process::id())),
            ("unowned", None),
        ] {
            let dir = base.join(name);
            create_private(&dir).unwrap();
            if let Some(pid) = owner {
                std::fs::write(dir.join(OWNER), pid.to_string()).unwrap();
            }
        }
        remove_orphans(&base);
        assert!(!base.join("gone").exists());
        assert!(base.join("mine").exists());
        assert!(base.join("unowned").exists());
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
