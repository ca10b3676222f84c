//! Fetching a QEMU build when the mirror cannot serve it: a clear error
//! with apt's words, and no half-made build left in the cache.

use virtest_guest::qemu_builds::{self, Backports};

#[test]
fn an_unreachable_mirror_is_apts_error_and_leaves_no_build() {
    let home = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port of the loopback.
    let backports = Backports {
        mirror: "http://127.0.0.1:9/debian".into(),
        suite: "bookworm-backports".into(),
        keyring: "/usr/share/keyrings/debian-archive-keyring.gpg".into(),
    };
    let error = qemu_builds::fetch(home.path(), "10.0", &backports)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "the index of bookworm-backports could not be fetched from http://127.0.0.1:9/debian"
        ),
        "{error}"
    );
    assert!(error.contains("127.0.0.1:9"), "apt's own words: {error}");
    assert!(qemu_builds::installed(home.path()).is_empty());
    let left: Vec<String> = std::fs::read_dir(qemu_builds::root(home.path()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "apt" && name != "fetch.lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
