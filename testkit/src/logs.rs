//! A test's log directory: removed when the test passes; kept when it
//! panics, with the tail of every `console.log` under it printed, so a
//! failure in CI shows what the guest last said.

use std::path::{Path, PathBuf};

/// A test's log directory (see the module's doc).
pub struct TestLogs(Option<tempfile::TempDir>);

/// A fresh [`TestLogs`] directory.
pub fn test_logs() -> TestLogs {
    TestLogs(Some(
        tempfile::tempdir().expect("making a temporary directory"),
    ))
}

impl TestLogs {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("kept only on drop").path()
    }
}

impl Drop for TestLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(dir) = self.0.take() else { return };
        let dir = dir.keep();
        eprintln!("the test's logs are kept in {}", dir.display());
        let mut consoles: Vec<PathBuf> = files_under(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|path| path.file_name().is_some_and(|name| name == "console.log"))
            .collect();
        consoles.sort();
        for console in consoles {
            let text = std::fs::read(&console).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {} ---", console.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Every file under `dir`, recursively, not following symlinks (a
/// results directory's `latest` points into itself).
pub fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
