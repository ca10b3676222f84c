//! The cache directory: where guests, their secrets and fetched packages
//! live. `$VIRTEST_HOME`, else `$XDG_CACHE_HOME/virtest`, else
//! `~/.cache/virtest`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cache directory chosen from the environment.
pub fn default_home() -> Result<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("VIRTEST_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("virtest")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("virtest")))
        .ok_or(Error::NoCacheDir)
}

/// The directory of the guest named `name` under `home`.
pub fn guest_dir(home: &Path, name: &str) -> PathBuf {
    home.join("guests").join(name)
}

/// Creates `dir` if needed and proves it writable by writing a file.
pub fn ensure_writable(dir: &Path) -> Result<()> {
    let not_writable = |source| Error::CacheNotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    // Unique per call: threads of one process probe the same directory
    // at once (two VMs wanting one snapshot), and one must not remove
    // the other's probe.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_probing_one_directory_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            let probes: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| (0..200).try_for_each(|_| ensure_writable(dir.path()))))
                .collect();
            for probe in probes {
                probe.join().unwrap().unwrap();
            }
        });
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_dir_under_a_file_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = ensure_writable(&file.join("cache")).unwrap_err();
        assert!(matches!(err, Error::CacheNotWritable { .. }));
        assert!(err.to_string().contains("set VIRTEST_HOME"), "{err}");
    }
}
