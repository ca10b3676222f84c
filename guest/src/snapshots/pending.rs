//! A snapshot being made, until it is committed to the store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    META, STATE, SavedState, Snapshot, SnapshotFile, SnapshotKey, SnapshotMeta, SnapshotStore,
    sha256_file,
};
use crate::error::{IoContext, Result};

/// A snapshot being made: a private directory that becomes the snapshot
/// on [`PendingSnapshot::commit`], and is removed if dropped before.
#[derive(Debug)]
pub struct PendingSnapshot {
    pub(super) dir: PathBuf,
    pub(super) target: PathBuf,
    pub(super) key: SnapshotKey,
    pub(super) committed: bool,
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl PendingSnapshot {
    /// Where QEMU writes the migration stream.
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The directory being filled: the state, and a disk guest's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records each file's size and hash, and the state's format, and
    /// makes each file read-only, puts the snapshot in place, and removes
    /// the same guest's snapshots that went stale.
    pub fn commit(
        mut self,
        store: &SnapshotStore,
        make_time: Duration,
        saved: SavedState,
    ) -> Result<Snapshot> {
        let mut files = Vec::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(&self.dir)
            .io_context("listing", &self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let size = fs::metadata(&path).io_context("reading", &path)?.len();
            let sha256 = sha256_file(&path).io_context("reading", &path)?;
            // Read-only, and private: guest memory holds secrets.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
                .io_context("making read-only", &path)?;
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            files.push(SnapshotFile { name, size, sha256 });
        }
        let meta = SnapshotMeta {
            key: self.key.id(),
            guest: self.key.guest.clone(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            make_ms: make_time.as_millis() as u64,
            files,
            material: self.key.material.clone(),
            inputs: self.key.inputs.clone(),
            state_format: saved.format,
            save_ms: saved.took.as_millis() as u64,
        };
        let meta_path = self.dir.join(META);
        let json = serde_json::to_vec_pretty(&meta).expect("a record serializes");
        fs::write(&meta_path, json).io_context("writing", &meta_path)?;
        let _ = fs::remove_dir_all(&self.target);
        fs::rename(&self.dir, &self.target).io_context("installing", &self.target)?;
        self.committed = true;
        for old in store.list()? {
            if old.meta.guest == meta.guest
                && old.meta.key != meta.key
                && let Some(why) = old.staleness()
            {
                tracing::info!(snapshot = %old.dir.display(), why, "removing a stale snapshot");
                let _ = fs::remove_dir_all(&old.dir);
            }
        }
        Ok(Snapshot {
            dir: self.target.clone(),
            meta,
        })
    }
}
