//! What a migration did, in QEMU's figures and ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qapi::qmp::MigrationInfo;
use serde::{Deserialize, Serialize};

use crate::mode::MigrationMode;

/// A status QEMU reported, and when (ms since `migrate` was called).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// QEMU's status (`setup`, `active`, `postcopy-active`, `completed`).
    pub status: String,
    /// Milliseconds since the call began.
    pub at_ms: f64,
}

/// RAM figures from `query-migrate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RamFigures {
    /// Bytes sent.
    pub transferred: u64,
    /// Bytes left to send.
    pub remaining: u64,
    /// The guest's RAM size in bytes.
    pub total: u64,
    /// Pages sent whole.
    pub normal_pages: u64,
    /// Zero pages (sent as a marker).
    pub duplicate_pages: u64,
    /// How many times the dirty bitmap was synced (passes over RAM).
    pub dirty_sync_count: u64,
    /// Pages the destination requested in postcopy.
    pub postcopy_requests: u64,
    /// QEMU's throughput figure, in Mbit/s.
    pub mbps: f64,
}

/// One migration's record; serialized as `migration-<n>.json` in the VM's
/// log directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The transport.
    pub mode: MigrationMode,
    /// The capabilities set.
    pub capabilities: Vec<String>,
    /// The parameters set beyond QEMU's defaults (`multifd-channels=4`).
    #[serde(default)]
    pub parameters: Vec<String>,
    /// Every status, in order.
    pub timeline: Vec<StatusChange>,
    /// QEMU's total time, ms.
    pub total_time_ms: u64,
    /// QEMU's downtime (guest stopped), ms. Over `file`, the guest stays
    /// stopped while the destination reads the file: that time
    /// (`measurements["file_load_ms"]`) is added.
    pub downtime_ms: u64,
    /// QEMU's setup time, ms.
    pub setup_time_ms: u64,
    /// RAM figures.
    pub ram: RamFigures,
    /// The highest CPU throttle auto-converge applied, in percent (0: none).
    pub max_cpu_throttle_percentage: u64,
    /// Bytes transferred per second of total time, in MiB/s.
    pub throughput_mib_s: f64,
    /// The wall time of the whole call (destination start to source
    /// reaped), ms.
    pub wall_ms: f64,
    /// Wall time beyond QEMU's total time: the orchestration's cost, ms.
    pub overhead_ms: f64,
    /// The source QEMU's pid.
    pub source_pid: u32,
    /// The destination QEMU's pid (the VM's QEMU after the call).
    pub destination_pid: u32,
    /// The source QEMU's version (`7.2.22`).
    #[serde(default)]
    pub source_qemu: String,
    /// The destination QEMU's version (`10.0.2`).
    #[serde(default)]
    pub destination_qemu: String,
    /// The versioned machine type the guest runs on (`pc-q35-7.2`).
    #[serde(default)]
    pub machine_type: String,
    /// What the test measured of this migration itself (the longest
    /// stall of a stream through it, say), by name: see
    /// [`MigrationReport::record`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measurements: BTreeMap<String, f64>,
    /// The file the report was saved to, once saved.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl MigrationReport {
    /// Fills QEMU's figures from a `query-migrate` reply.
    pub(crate) fn take_figures(&mut self, info: &MigrationInfo) {
        // QEMU's schema has signed counts; none is negative in practice.
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        self.total_time_ms = info.total_time.map_or(0, n);
        self.downtime_ms = info.downtime.map_or(0, n);
        self.setup_time_ms = info.setup_time.map_or(0, n);
        if let Some(ram) = &info.ram {
            self.ram = RamFigures {
                transferred: n(ram.transferred),
                remaining: n(ram.remaining),
                total: n(ram.total),
                normal_pages: n(ram.normal),
                duplicate_pages: n(ram.duplicate),
                dirty_sync_count: n(ram.dirty_sync_count),
                postcopy_requests: n(ram.postcopy_requests),
                mbps: ram.mbps,
            };
        }
        self.throughput_mib_s = if self.total_time_ms == 0 {
            0.0
        } else {
            self.ram.transferred as f64 / (1 << 20) as f64 / (self.total_time_ms as f64 / 1000.0)
        };
    }

    /// Writes the report as `migration-<n>.json` in `dir` (the first free
    /// n), atomically, and remembers the file in [`MigrationReport::file`];
    /// returns the path. On an error (a full disk, say) nothing is left
    /// behind.
    pub fn save(&mut self, dir: &Path) -> std::io::Result<PathBuf> {
        let n = (1..)
            .find(|n| !dir.join(format!("migration-{n}.json")).exists())
            .expect("a free number");
        let path = dir.join(format!("migration-{n}.json"));
        self.write_to(&path)?;
        self.file = Some(path.clone());
        Ok(path)
    }

    /// Adds what the test measured of this migration (`name`, `value`)
    /// to the report and its saved file, so the job's results show it
    /// beside QEMU's figures.
    ///
    /// ```no_run
    /// # async fn f(vm: &mut virtest_vm::Vm) -> Result<(), Box<dyn std::error::Error>> {
    /// use virtest_migration::{Migrate, MigrationMode};
    /// let mut report = vm.migrate(MigrationMode::Tcp).await?;
    /// let stall_ms = 230.0; // measured in the guest
    /// report.record("stream_stall_ms", stall_ms)?;
    /// # Ok(()) }
    /// ```
    pub fn record(&mut self, name: &str, value: f64) -> std::io::Result<()> {
        self.measurements.insert(name.to_string(), value);
        let file = self.file.clone().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the migration report was never saved",
            )
        })?;
        self.write_to(&file)
    }

    /// Writes the report to `path` through a temporary file beside it,
    /// removed on an error.
    fn write_to(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let json = serde_json::to_vec_pretty(self)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        // Through the file itself: its errors keep their OS code (a full
        // disk is ENOSPC), which NamedTempFile's own writes wrap.
        tmp.as_file_mut().write_all(&json)?;
        tmp.persist(path).map(drop).map_err(|e| e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with nothing measured yet.
    fn blank_report() -> MigrationReport {
        MigrationReport {
            mode: MigrationMode::Tcp,
            capabilities: vec![],
            parameters: vec![],
            timeline: vec![],
            total_time_ms: 0,
            downtime_ms: 0,
            setup_time_ms: 0,
            ram: RamFigures::default(),
            max_cpu_throttle_percentage: 0,
            throughput_mib_s: 0.0,
            wall_ms: 0.0,
            overhead_ms: 0.0,
            source_pid: 1,
            destination_pid: 2,
            source_qemu: "7.2.22".into(),
            destination_qemu: "10.0.2".into(),
            machine_type: "pc-q35-7.2".into(),
            measurements: BTreeMap::new(),
            file: None,
        }
    }

    #[test]
    fn figures_come_from_query_migrate() {
        let mut report = blank_report();
        // QEMU 7.2's reply, with rounder figures.
        let info = serde_json::json!({
            "status": "completed", "setup-time": 3, "downtime": 20, "total-time": 500,
            "ram": {"total": 268435456, "postcopy-requests": 0, "dirty-sync-count": 3,
                    "multifd-bytes": 0, "pages-per-second": 431242, "downtime-bytes": 3029757,
                    "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 840.5,
                    "transferred": 52428800, "dirty-sync-missed-zero-copy": 0,
                    "precopy-bytes": 49399043, "duplicate": 50000, "dirty-pages-rate": 0,
                    "skipped": 0, "normal-bytes": 49152000, "normal": 12000}
        });
        report.take_figures(&serde_json::from_value(info).unwrap());
        assert_eq!((report.total_time_ms, report.downtime_ms), (500, 20));
        assert_eq!(report.ram.dirty_sync_count, 3);
        assert!((report.throughput_mib_s - 100.0).abs() < 1e-9);
        // A figure seen in CI that the default float parser read back one
        // unit in the last place off: saved reports must read back exactly.
        report.ram.mbps = 945.0672653061225;
        let dir = tempfile::tempdir().unwrap();
        let first = report.save(dir.path()).unwrap();
        let second = report.save(dir.path()).unwrap();
        assert!(first.ends_with("migration-1.json") && second.ends_with("migration-2.json"));
        let read = |path: &Path| -> MigrationReport {
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        assert_eq!(report.file.as_deref(), Some(second.as_path()));
        let saved = MigrationReport {
            file: None,
            ..report.clone()
        };
        assert_eq!(read(&first), saved);
        // A measurement goes into the file last saved, and only there.
        report.record("stream_stall_ms", 412.5).unwrap();
        assert_eq!(read(&second).measurements["stream_stall_ms"], 412.5);
        assert!(read(&first).measurements.is_empty());
        assert!(blank_report().record("x", 1.0).is_err(), "never saved");
    }

    /// A 16 KiB tmpfs, unmounted when dropped; `None` where mounting is
    /// not allowed (not root).
    struct TinyFs(tempfile::TempDir);

    impl TinyFs {
        fn mount() -> Option<TinyFs> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(TinyFs(dir))
        }
    }

    impl Drop for TinyFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_report_on_a_full_disk_is_an_error_and_leaves_nothing() {
        let Some(fs) = TinyFs::mount() else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let dir = fs.0.path();
        // Three of the four pages taken; the report needs more than one.
        std::fs::write(dir.join("filler"), vec![0u8; 12 * 1024]).unwrap();
        let mut report = blank_report();
        report.timeline = (0..200)
            .map(|n| StatusChange {
                status: "active".into(),
                at_ms: n as f64,
            })
            .collect();
        let error = report.save(dir).unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::NOSPC.raw_os_error()),
            "{error}"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["filler"], "a partial file was left");
    }
}
