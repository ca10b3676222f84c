//! A VM's TPM 2.0: an `swtpm` for each QEMU process, serving the control
//! socket QEMU's `tpm-emulator` backend connects to, its state in a
//! directory of the VM's on the host QEMU runs on.
//!
//! QEMU carries the TPM's state in the migration stream (the source reads
//! it out of its swtpm, the destination writes it into a fresh one), so
//! a destination's swtpm starts empty, and so does one restored from a
//! ready snapshot. A VM powered on again continues its last state, as a
//! machine's TPM keeps what it holds across power cycles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtest_host::Host;
use virtest_host::process::Process;

use crate::error::{Error, Result};
use crate::instance::{log_tail, open_output_log};

/// What to install when swtpm is missing.
const INSTALL: &str =
    "install it (`apt-get install swtpm`), or name it with $SWTPM or `VmConfig::swtpm`";

/// How long swtpm may take to listen on its socket.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a QEMU process's TPM keeps its state, and which swtpm runs it.
#[derive(Debug, Clone)]
pub(crate) struct TpmFiles {
    /// The swtpm binary on the host.
    pub binary: PathBuf,
    /// Its state directory on the host.
    pub state_dir: PathBuf,
    /// Its output, here.
    pub log: PathBuf,
}

/// The swtpm binary: `explicit`, else `$SWTPM`, else `swtpm` on PATH,
/// which must be there. On another host: `explicit`, else `swtpm` on the
/// PATH there (this machine's `$SWTPM` names a file here).
pub(crate) fn find_swtpm(explicit: Option<&Path>, host: &Host) -> Result<PathBuf> {
    if !host.is_local() {
        return Ok(explicit.map_or_else(|| "swtpm".into(), Path::to_path_buf));
    }
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SWTPM").map(PathBuf::from));
    let found = match &named {
        Some(path) => path.is_file().then(|| path.clone()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("swtpm"))
                .find(|path| path.is_file())
        }),
    };
    found.ok_or_else(|| Error::Tpm {
        reason: format!(
            "the VM has a TPM (`tpm = true`), which needs swtpm, and {}: {INSTALL}",
            match named {
                Some(path) => format!("`{}` is not there", path.display()),
                None => "there is none on PATH".into(),
            }
        ),
    })
}

/// A running swtpm; dropping it kills it (it also ends by itself when
/// QEMU's connection closes: `--terminate`).
#[derive(Debug)]
pub(crate) struct Swtpm {
    process: Process,
    state_dir: PathBuf,
}

impl Swtpm {
    /// Starts swtpm on `host` for a TPM 2.0 with its state in
    /// `files.state_dir`, serving `socket`, and returns once it listens.
    pub(crate) async fn start(host: &Host, files: &TpmFiles, socket: &Path) -> Result<Swtpm> {
        let dir = files.state_dir.to_string_lossy();
        host.check(&["mkdir", "-p", "-m", "700", &dir])
            .await
            .map_err(Error::Host)?;
        let (stdout, log, offset) = open_output_log(
            &files.log,
            &format!("virtest: starting swtpm for {}", socket.display()),
        )?;
        let argv = [
            files.binary.to_string_lossy().into_owned(),
            "socket".into(),
            "--tpm2".into(),
            "--tpmstate".into(),
            format!("dir={dir},mode=0600"),
            "--ctrl".into(),
            format!("type=unixio,path={},mode=0600", socket.display()),
            "--terminate".into(),
        ];
        let pid_file = socket.with_extension("pid");
        let process = host
            .spawn(&argv, &pid_file, stdout.into(), log.into())
            .map_err(|error| Error::Tpm {
                reason: format!("starting `{}`: {error}; {INSTALL}", files.binary.display()),
            })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(status) = process.status() {
                return Err(Error::Tpm {
                    reason: format!(
                        "swtpm exited at once ({status}); it said: {}\n(if it is missing: {INSTALL})",
                        log_tail(&files.log, offset)
                    ),
                });
            }
            if host
                .present(&[socket])
                .await
                .map_err(Error::Host)?
                .contains(socket)
            {
                break;
            }
            if started.elapsed() > LISTEN_TIMEOUT {
                return Err(Error::Tpm {
                    reason: format!(
                        "swtpm (pid {}) did not listen on `{}` within {LISTEN_TIMEOUT:?}; it said: {}",
                        process.pid(),
                        socket.display(),
                        log_tail(&files.log, offset)
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        tracing::debug!(pid = process.pid(), state = %dir, "swtpm started");
        Ok(Swtpm {
            process,
            state_dir: files.state_dir.clone(),
        })
    }

    /// Its pid (on its host).
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its state directory, on its host.
    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}
