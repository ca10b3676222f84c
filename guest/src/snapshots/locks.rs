//! Who may make, use and remove a snapshot: the make lock (`<key>.lock`),
//! the in-use mark (`<key>.use`, held shared), and the upkeep that
//! respects both ([`SnapshotStore::tidy`], [`SnapshotStore::prune`]).

use std::fs;
use std::path::{Path, PathBuf};

use super::{Snapshot, SnapshotKey, SnapshotStore};
use crate::error::{IoContext, Result};

impl Snapshot {
    /// Marks the snapshot in use until the returned guard is dropped:
    /// [`SnapshotStore::prune`] leaves it. Blocks only while it is being
    /// pruned.
    pub fn hold(&self) -> Result<InUse> {
        let path = use_path(&self.dir);
        let file = fs::File::create(&path).io_context("creating", &path)?;
        file.lock_shared().io_context("locking", &path)?;
        Ok(InUse { _file: file })
    }
}

impl SnapshotStore {
    /// Takes the lock for making `key`'s snapshot, waiting for another
    /// process (or VM) that holds it. Blocks: call it off the async
    /// threads.
    pub fn lock(&self, key: &SnapshotKey) -> Result<SnapshotLock> {
        crate::cache::ensure_writable(&self.root)?;
        let path = self.root.join(format!("{}.lock", key.id()));
        let file = fs::File::create(&path).io_context("creating", &path)?;
        file.lock().io_context("locking", &path)?;
        Ok(SnapshotLock { _file: file })
    }

    /// Marks `key`'s snapshot in use until the returned guard is dropped
    /// (also before it exists, by its maker): [`SnapshotStore::prune`]
    /// leaves it. Blocks only while it is being pruned.
    pub fn hold(&self, key: &SnapshotKey) -> Result<InUse> {
        crate::cache::ensure_writable(&self.root)?;
        let path = use_path(&self.root.join(key.id()));
        let file = fs::File::create(&path).io_context("creating", &path)?;
        file.lock_shared().io_context("locking", &path)?;
        Ok(InUse { _file: file })
    }

    /// What a job does first: makes every snapshot's files private where
    /// they are not (left so by an older virtest; they hold guest memory,
    /// and its secrets), and removes what makes that died (SIGKILL, a
    /// crash) left. Returns what was removed, with why.
    pub fn tidy(&self) -> Result<Vec<(PathBuf, String)>> {
        for snapshot in self.list()? {
            snapshot.keep_private()?;
        }
        self.remove_dead_makes()
    }

    /// The directories of makes in progress or dead (`.KEY.part-PID`),
    /// with their key.
    pub(super) fn makes(&self) -> Vec<(PathBuf, String)> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let (key, _pid) = name.strip_prefix('.')?.rsplit_once(".part-")?;
                Some((entry.path(), key.to_string()))
            })
            .collect()
    }

    /// Removes the directories of makes that died: those whose key's lock
    /// nobody holds (a live make holds it until its snapshot is in place;
    /// the kernel releases a dead one's).
    fn remove_dead_makes(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut removed = Vec::new();
        for (dir, key) in self.makes() {
            let lock = self.root.join(format!("{key}.lock"));
            let Ok(file) = fs::File::create(&lock) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            fs::remove_dir_all(&dir).io_context("removing", &dir)?;
            tracing::info!(dir = %dir.display(), "removed a snapshot left by an interrupted make");
            removed.push((dir, "left by an interrupted make".to_string()));
        }
        Ok(removed)
    }

    /// Removes stale snapshots (an input changed), unreadable ones and
    /// leftovers of interrupted makes whose process is gone; with `all`,
    /// every snapshot. A snapshot a VM uses ([`Snapshot::hold`]) is left.
    pub fn prune(&self, all: bool) -> Result<Pruned> {
        let mut pruned = Pruned {
            removed: self.remove_dead_makes()?,
            in_use: Vec::new(),
        };
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(e).io_context("listing", &self.root),
        };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let why = if name.contains(".part-") {
                continue;
            } else if all {
                "asked to remove all".to_string()
            } else {
                match Self::read(&path) {
                    Ok(snapshot) => match snapshot.staleness() {
                        Some(why) => why,
                        None => continue,
                    },
                    Err(why) => why,
                }
            };
            // Held while removing, so no VM starts using it meanwhile.
            // The lock file stays: removing it would let a waiter lock
            // the old file while a newcomer locks a new one.
            let in_use = use_path(&path);
            let file = fs::File::create(&in_use).io_context("creating", &in_use)?;
            if file.try_lock().is_err() {
                pruned.in_use.push(path);
                continue;
            }
            fs::remove_dir_all(&path).io_context("removing", &path)?;
            pruned.removed.push((path, why));
        }
        Ok(pruned)
    }
}

/// The file whose lock marks the snapshot in `dir` in use: `<key>.use`
/// beside it (shared by users; the pruner tries it alone).
fn use_path(dir: &Path) -> PathBuf {
    let key = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{key}.use"))
}

/// What [`SnapshotStore::prune`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// The snapshots (and leftovers) removed, with why.
    pub removed: Vec<(PathBuf, String)>,
    /// The snapshots it would have removed, left because a VM uses them.
    pub in_use: Vec<PathBuf>,
}

/// The lock on making one snapshot; released when dropped.
#[derive(Debug)]
pub struct SnapshotLock {
    _file: fs::File,
}

/// A snapshot marked in use ([`Snapshot::hold`]); unmarked when dropped.
#[derive(Debug)]
pub struct InUse {
    _file: fs::File,
}
