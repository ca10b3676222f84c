//! A real QEMU with a QMP socket, killed and reaped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use virtest_qmp::{Options, Qmp};

/// `qemu-system-x86_64 -machine none` with QMP on a unix socket.
pub struct Qemu {
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Qemu {
    pub fn start() -> Qemu {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let binary = std::env::var_os("QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
        let child = Command::new(binary)
            .args([
                "-machine",
                "none",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("QEMU is installed (see .ci/install)");
        Qemu {
            child,
            socket,
            _dir: dir,
        }
    }

    pub async fn connect(&self) -> Qmp {
        Qmp::connect_unix(&self.socket, Duration::from_secs(10), Options::default())
            .await
            .unwrap()
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "QEMU did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
