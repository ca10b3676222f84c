//! Ready snapshots in the cache: the saved state of a guest once it was
//! ready, keyed by everything that shapes it and checked before each use.
//! The VM layer makes and restores them; this module only stores them.
//!
//! Layout under `<cache>/snapshots/` (private: a guest's memory and seed
//! may hold secrets):
//! - `<key>/state`: QEMU's migration stream of the ready guest, or a
//!   mapped-ram file ([`StateFormat`]).
//! - `<key>/disk0.qcow2`...: for a disk guest, the overlays as they were
//!   when it was saved, frozen read-only; the seed and UEFI variables.
//! - `<key>/meta.json`: [`SnapshotMeta`], each file's size and SHA-256
//!   and what the key was made of.
//! - `<key>.lock`: held while the snapshot is made, so it is made once.
//! - `<key>.use`: held shared while VMs use the snapshot, so that prune
//!   leaves it.
//!
//! ```no_run
//! # fn f(key: virtest_guest::snapshots::SnapshotKey) -> virtest_guest::Result<()> {
//! use virtest_guest::snapshots::{Lookup, SnapshotStore};
//! let store = SnapshotStore::in_cache(&virtest_guest::cache::default_home()?);
//! match store.lookup(&key) {
//!     Lookup::Found(snapshot) => println!("restore from {}", snapshot.state().display()),
//!     Lookup::Missing => println!("boot, then save one"),
//!     Lookup::Rejected { reason } => println!("unusable, removed: {reason}"),
//! }
//! # Ok(()) }
//! ```

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::manifest::hex;

mod locks;
mod pending;
mod state_format;

pub use locks::{InUse, Pruned, SnapshotLock};
pub use pending::PendingSnapshot;
pub use state_format::{SavedState, StateFormat};

/// The file holding the migration stream, in a snapshot's directory.
pub const STATE: &str = "state";
/// The file holding [`SnapshotMeta`].
const META: &str = "meta.json";

/// A file whose change makes a snapshot stale: its path, size and
/// modification time (the way build tools notice a rebuilt input without
/// reading it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub mtime_ns: u128,
}

impl FileStamp {
    /// The stamp of `path` as it is now.
    pub fn of(path: &Path) -> Result<FileStamp> {
        let meta = fs::metadata(path).io_context("reading the metadata of", path)?;
        let mtime = meta.modified().io_context("reading the mtime of", path)?;
        Ok(FileStamp {
            path: path.to_path_buf(),
            size: meta.len(),
            mtime_ns: mtime
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        })
    }

    /// Whether the file is still as stamped.
    pub fn is_current(&self) -> bool {
        FileStamp::of(&self.path).is_ok_and(|now| &now == self)
    }
}

/// What a snapshot is keyed by: lines of text that describe everything
/// guest-visible (the command line without its host endpoints, the QEMU
/// binary and version) and the files the guest is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    /// The guest's name (for listings and pruning).
    pub guest: String,
    /// The key's text, one fact per line.
    pub material: Vec<String>,
    /// The files whose change makes the snapshot stale.
    pub inputs: Vec<FileStamp>,
}

impl SnapshotKey {
    /// The key's id: the first 16 hex digits of the SHA-256 of its
    /// material and inputs; names the snapshot's directory.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        for line in &self.material {
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
        for input in &self.inputs {
            let line = format!(
                "{} {} {}\n",
                input.path.display(),
                input.size,
                input.mtime_ns
            );
            hash.update(line.as_bytes());
        }
        hex(&hash.finalize()[..8])
    }
}

/// What `meta.json` records of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The key's id (the directory's name).
    pub key: String,
    /// The guest's name.
    pub guest: String,
    /// When it was made, in seconds since the epoch.
    pub created_unix: u64,
    /// How long making it took (boot to ready, then the save), in ms.
    pub make_ms: u64,
    /// Its files: the state, and a disk guest's frozen disks.
    pub files: Vec<SnapshotFile>,
    /// The key's material.
    pub material: Vec<String>,
    /// The key's input files, as they were.
    pub inputs: Vec<FileStamp>,
    /// How the state file lays the guest out (a record without one is
    /// from before mapped-ram: a stream).
    #[serde(default)]
    pub state_format: StateFormat,
    /// How long QEMU took to write the state, in ms (0 in a record from
    /// before it was kept).
    #[serde(default)]
    pub save_ms: u64,
}

/// One file of a snapshot, as it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Its name in the snapshot's directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

/// A snapshot in the store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
    /// Its record.
    pub meta: SnapshotMeta,
}

impl Snapshot {
    /// The migration stream to restore from.
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The snapshot's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its files' total size.
    pub fn size(&self) -> u64 {
        self.meta.files.iter().map(|f| f.size).sum()
    }

    /// Why the snapshot is stale (an input file changed or is gone), if
    /// it is.
    pub fn staleness(&self) -> Option<String> {
        self.meta
            .inputs
            .iter()
            .find(|input| !input.is_current())
            .map(|input| format!("`{}` changed since it was made", input.path.display()))
    }

    /// Checks that each file has the size and SHA-256 the record says;
    /// the error says what differs.
    pub fn verify(&self) -> std::result::Result<(), Damage> {
        self.check_size()?;
        for file in &self.meta.files {
            let path = self.dir.join(&file.name);
            let sha256 = sha256_file(&path).map_err(|e| Damage::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if sha256 != file.sha256 {
                return Err(Damage::Hash {
                    path,
                    found: sha256,
                    recorded: file.sha256.clone(),
                });
            }
        }
        Ok(())
    }

    /// Removes the snapshot from the store.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Makes its files private again where they are not (guest memory
    /// holds secrets).
    fn keep_private(&self) -> Result<()> {
        for file in &self.meta.files {
            crate::private::ensure_private(&self.dir.join(&file.name))?;
        }
        Ok(())
    }

    fn check_size(&self) -> std::result::Result<(), Damage> {
        if !self.meta.files.iter().any(|f| f.name == STATE) {
            return Err(Damage::NoState);
        }
        for file in &self.meta.files {
            let path = self.dir.join(&file.name);
            let size = fs::metadata(&path)
                .map_err(|e| Damage::Unreadable {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .len();
            if size != file.size {
                return Err(Damage::Size {
                    path,
                    found: size,
                    recorded: file.size,
                });
            }
        }
        Ok(())
    }
}

/// How a snapshot's files differ from its record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The record lists no state file.
    #[error("its record lists no state")]
    NoState,
    /// A file cannot be read.
    #[error("its file `{path}` cannot be read: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        reason: String,
    },
    /// A file has another size.
    #[error("its file `{path}` is {found} bytes, its record says {recorded}")]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The recorded size.
        recorded: u64,
    },
    /// A file has another SHA-256.
    #[error("its file `{path}` has SHA-256 {found}, its record says {recorded}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// Its hash.
        found: String,
        /// The recorded hash.
        recorded: String,
    },
}

/// What [`SnapshotStore::lookup`] or [`SnapshotStore::find`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A snapshot whose files have the sizes its record says (and, from
    /// `lookup`, the hashes).
    Found(Snapshot),
    /// None for this key.
    Missing,
    /// One was there but cannot be used (partial, corrupt, unreadable);
    /// it has been removed.
    Rejected {
        /// What was wrong with it.
        reason: String,
    },
}

/// The snapshots directory of a cache.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    /// The store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { root: root.into() }
    }

    /// The store of the cache at `home` (`<home>/snapshots`).
    pub fn in_cache(home: &Path) -> SnapshotStore {
        SnapshotStore::new(home.join("snapshots"))
    }

    /// Where the snapshots are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot for `key`, checked: its state file must have the size
    /// and SHA-256 its record says. One that fails the check is removed.
    pub fn lookup(&self, key: &SnapshotKey) -> Lookup {
        match self.find(key) {
            Lookup::Found(snapshot) => match snapshot.verify() {
                Ok(()) => Lookup::Found(snapshot),
                Err(damage) => {
                    snapshot.remove();
                    Lookup::Rejected {
                        reason: damage.to_string(),
                    }
                }
            },
            other => other,
        }
    }

    /// The snapshot for `key` with the size its record says, its hash not
    /// checked yet: call [`Snapshot::verify`] before the snapshot's guest
    /// is used (while QEMU reads the state, say). One whose record cannot
    /// be read or whose size is wrong is removed.
    pub fn find(&self, key: &SnapshotKey) -> Lookup {
        let dir = self.root.join(key.id());
        if !dir.exists() {
            return Lookup::Missing;
        }
        match Self::read(&dir).and_then(|snapshot| {
            snapshot.check_size().map_err(|e| e.to_string())?;
            snapshot.keep_private().map_err(|e| e.to_string())?;
            Ok(snapshot)
        }) {
            Ok(snapshot) => Lookup::Found(snapshot),
            Err(reason) => {
                let _ = fs::remove_dir_all(&dir);
                Lookup::Rejected { reason }
            }
        }
    }

    /// A directory to make `key`'s snapshot in; [`PendingSnapshot::commit`]
    /// puts it in place. Hold the key's lock meanwhile.
    pub fn prepare(&self, key: &SnapshotKey) -> Result<PendingSnapshot> {
        crate::cache::ensure_writable(&self.root)?;
        let id = key.id();
        // Under the lock, any other make of this key is a dead one's.
        for (dir, _) in self.makes() {
            if dir
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&format!(".{id}.part-")))
            {
                let _ = fs::remove_dir_all(&dir);
            }
        }
        let dir = self.root.join(format!(".{id}.part-{}", std::process::id()));
        fs::create_dir(&dir).io_context("creating", &dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .io_context("making private", &dir)?;
        Ok(PendingSnapshot {
            dir,
            target: self.root.join(&id),
            key: key.clone(),
            committed: false,
        })
    }

    /// Every snapshot in the store, by age (oldest first), unchecked.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).io_context("listing", &self.root),
        };
        let mut snapshots: Vec<Snapshot> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|entry| Self::read(&entry.path()).ok())
            .collect();
        snapshots.sort_by_key(|s| s.meta.created_unix);
        Ok(snapshots)
    }

    fn read(dir: &Path) -> std::result::Result<Snapshot, String> {
        let path = dir.join(META);
        let bytes = fs::read(&path)
            .map_err(|e| format!("its record `{}` cannot be read: {e}", path.display()))?;
        let meta = serde_json::from_slice(&bytes)
            .map_err(|e| format!("its record `{}` is not valid: {e}", path.display()))?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            meta,
        })
    }
}

/// The SHA-256 of a file's content, in hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex(&hash.finalize()));
        }
        hash.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(dir: &Path, guest: &str) -> SnapshotKey {
        let input = dir.join(format!("{guest}-kernel"));
        if !input.exists() {
            fs::write(&input, b"kernel").unwrap();
        }
        SnapshotKey {
            guest: guest.into(),
            material: vec!["qemu 7.2".into(), "-m 256".into()],
            inputs: vec![FileStamp::of(&input).unwrap()],
        }
    }

    fn make(store: &SnapshotStore, key: &SnapshotKey, state: &[u8]) -> Snapshot {
        let pending = store.prepare(key).unwrap();
        fs::write(pending.state(), state).unwrap();
        pending
            .commit(
                store,
                Duration::from_millis(5),
                SavedState {
                    format: StateFormat::Stream,
                    took: Duration::from_millis(1),
                },
            )
            .unwrap()
    }

    /// A make in progress holds its key's lock and is left alone; one
    /// whose lock is free died (its process would hold the lock), and
    /// its directory goes.
    #[test]
    fn tidy_removes_dead_makes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let key = key(dir.path(), "tiny");
        let lock = store.lock(&key).unwrap();
        let live = store.prepare(&key).unwrap();
        assert!(store.tidy().unwrap().is_empty());
        assert!(live.dir().is_dir());
        let dead = live.dir().with_file_name(format!(".{}.part-1", key.id()));
        fs::rename(live.dir(), &dead).unwrap();
        drop(lock);
        let removed = store.tidy().unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].0, dead);
        assert!(!dead.exists());
    }

    #[test]
    fn a_made_snapshot_is_found_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let key = key(dir.path(), "tiny");
        assert!(matches!(store.lookup(&key), Lookup::Missing));
        let made = make(&store, &key, b"stream");
        let Lookup::Found(found) = store.lookup(&key) else {
            panic!("not found")
        };
        assert_eq!(found.meta, made.meta);
        assert_eq!(fs::read(found.state()).unwrap(), b"stream");
        assert_eq!(store.list().unwrap().len(), 1);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(found.dir()), 0o700, "a snapshot may hold secrets");
        assert_eq!(
            mode(&found.state()),
            0o400,
            "a snapshot is never written, and only its owner reads it"
        );
        assert_eq!(found.size(), 6);
        // One an older virtest left readable by others is made private.
        fs::set_permissions(found.state(), fs::Permissions::from_mode(0o444)).unwrap();
        assert!(matches!(store.lookup(&key), Lookup::Found(_)));
        assert_eq!(mode(&found.state()), 0o400);
    }

    #[test]
    fn a_truncated_or_altered_state_is_rejected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let key = key(dir.path(), "tiny");
        for (damage, expected) in [
            (b"strea".as_slice(), "is 5 bytes, its record says 6"),
            (b"stReam".as_slice(), "has SHA-256"),
        ] {
            let made = make(&store, &key, b"stream");
            fs::set_permissions(made.state(), fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(made.state(), damage).unwrap();
            let Lookup::Rejected { reason } = store.lookup(&key) else {
                panic!("a damaged state was used")
            };
            assert!(reason.contains(expected), "{reason}");
            assert!(!made.dir().exists());
            assert!(matches!(store.lookup(&key), Lookup::Missing));
        }
    }

    #[test]
    fn a_changed_input_changes_the_key_and_prune_removes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let old_key = key(dir.path(), "tiny");
        let old = make(&store, &old_key, b"old");
        let other = make(&store, &key(dir.path(), "other"), b"other");
        std::thread::sleep(Duration::from_millis(10));
        fs::write(dir.path().join("tiny-kernel"), b"rebuilt").unwrap();
        assert!(old.staleness().unwrap().contains("tiny-kernel"));
        let new_key = key(dir.path(), "tiny");
        assert_ne!(new_key.id(), old_key.id());
        assert!(matches!(store.lookup(&new_key), Lookup::Missing));
        let removed = store.prune(false).unwrap().removed;
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].0, old.dir());
        assert!(other.dir().exists());
        let held = other.hold().unwrap();
        let pruned = store.prune(true).unwrap();
        assert!(pruned.removed.is_empty(), "{pruned:?}");
        assert_eq!(pruned.in_use, vec![other.dir().to_path_buf()]);
        drop(held);
        assert_eq!(store.prune(true).unwrap().removed.len(), 1);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_new_snapshot_replaces_the_stale_ones_of_its_guest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let old = make(&store, &key(dir.path(), "tiny"), b"old");
        std::thread::sleep(Duration::from_millis(10));
        fs::write(dir.path().join("tiny-kernel"), b"rebuilt").unwrap();
        let new = make(&store, &key(dir.path(), "tiny"), b"new");
        assert!(!old.dir().exists());
        assert!(new.dir().exists());
    }

    #[test]
    fn an_abandoned_make_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().join("snapshots"));
        let key = key(dir.path(), "tiny");
        let pending = store.prepare(&key).unwrap();
        fs::write(pending.state(), b"half").unwrap();
        drop(pending);
        assert_eq!(fs::read_dir(store.root()).unwrap().count(), 0);
        assert!(matches!(store.lookup(&key), Lookup::Missing));
    }
}
