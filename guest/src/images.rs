//! Disk images by URL: fetched once into the cache, checked against their
//! SHA-256, reused after. The cache is keyed by the hash
//! (`images/<sha256>/<file name>`), a download runs under a lock (a second
//! process waits for the first instead of fetching again), and a file is
//! renamed into place only once its hash is right: nothing half-written
//! is ever used.

use std::path::{Path, PathBuf};

#[cfg(feature = "provision")]
mod download;

#[cfg(feature = "provision")]
pub use download::fetch;

/// How far a download has come: bytes so far, and the total when the
/// server said.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

/// Where the image `url` with hash `sha256` lives in the cache under
/// `home`, fetched or not.
pub fn cached_path(home: &Path, url: &str, sha256: &str) -> PathBuf {
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .unwrap_or("image");
    home.join("images").join(sha256).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_keyed_by_hash_and_named_after_the_url() {
        let home = Path::new("/c");
        assert_eq!(
            cached_path(home, "http://h/x/disk.qcow2", "ab"),
            Path::new("/c/images/ab/disk.qcow2")
        );
        assert_eq!(
            cached_path(home, "http://h/", "ab"),
            Path::new("/c/images/ab/image")
        );
    }
}
