//! The one error type of this crate.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What can go wrong in a VM's life.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The QEMU binary could not be found or probed.
    #[error("finding QEMU")]
    Qemu(#[source] virtest_qemu_cmdline::Error),
    /// The guest cannot be loaded: its description or its files.
    #[error("the guest `{guest}` cannot be used")]
    Guest {
        /// The guest's description (or its name).
        guest: PathBuf,
        /// Why.
        #[source]
        source: virtest_guest::Error,
    },
    /// A disk of the guest cannot be used.
    #[error("disk image `{path}`: {reason}")]
    Disk {
        /// The base image.
        path: PathBuf,
        /// What is wrong, with what qemu-img said.
        reason: String,
    },
    /// The guest needs what this build leaves out.
    #[error(
        "{what} needs virtest-vm's `provision` feature, which this build leaves out: enable it (the `virtest` crate has it on)"
    )]
    NotProvisioned {
        /// What the guest needs.
        what: String,
    },
    /// The UEFI firmware is not installed.
    #[error(
        "UEFI firmware `{missing}` not found: install it with `apt-get install {package}` (or set {dir_var} to a directory holding it)"
    )]
    Firmware {
        /// The file looked for.
        missing: PathBuf,
        /// The package that installs it.
        package: &'static str,
        /// The environment variable that names another directory.
        dir_var: &'static str,
    },
    /// The host QEMU runs on failed: its SSH connection, a forward, a
    /// command there.
    #[error(transparent)]
    Host(virtest_host::Error),
    /// The directory for the VM's sockets is refused or cannot be made.
    #[error(transparent)]
    RuntimeDir(#[from] crate::dirs::RuntimeDirError),
    /// A file or directory of the VM could not be made or written.
    #[error("{what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started at all.
    #[error("starting `{binary}`")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited while starting, or before what was waited for.
    #[error(
        "QEMU exited ({status}) {during}: {}\nQEMU said: {stderr_tail}\ncommand line: {cmdline}",
        last_line(.stderr_tail)
    )]
    Exited {
        /// What was going on.
        during: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its stderr (`qemu.log`).
        stderr_tail: String,
        /// The command line it ran with.
        cmdline: String,
    },
    /// A QMP command or connection failed.
    #[error("QMP: {step}")]
    Qmp {
        /// What was being done.
        step: String,
        /// Why.
        #[source]
        source: virtest_qmp::Error,
    },
    /// The action needs a running VM.
    #[error("cannot {action}: the VM is off (call power_on first)")]
    Off {
        /// What was asked.
        action: &'static str,
    },
    /// The action needs a running VM, and its QEMU ended by itself.
    #[error("cannot {action}: {exit}")]
    QemuEnded {
        /// What was asked.
        action: String,
        /// How QEMU ended.
        exit: crate::QemuExit,
    },
    /// `power_on` on a VM that is on.
    #[error("the VM is already on (QEMU pid {pid})")]
    AlreadyOn {
        /// QEMU's pid.
        pid: u32,
    },
    /// The action needs a remote session.
    #[error("no remote session: call login_remote first")]
    NoRemote,
    /// Logging in did not succeed: the guest never got ready, refused
    /// the credentials, presented another host key, or never answered.
    #[error("{reason}\nlast console lines:\n{console_tail}")]
    Login {
        /// The first line: what went wrong, and the guest's ready signal
        /// or seed where they matter.
        reason: String,
        /// The deadline.
        after: Duration,
        /// The console's last lines.
        console_tail: String,
        /// The last attempt's error (none when the guest never printed
        /// its ready line).
        #[source]
        source: Option<Box<virtest_remote::Error>>,
    },
    /// A remote command failed.
    #[error("in the guest")]
    Remote(#[from] virtest_remote::Error),
    /// The console did not show what was waited for.
    #[error(
        "`{pattern}` did not appear on the console within {after:?}\nlast console lines:\n{console_tail}"
    )]
    ConsoleTimeout {
        /// The text waited for.
        pattern: String,
        /// The deadline.
        after: Duration,
        /// The console's last lines.
        console_tail: String,
    },
    /// The guest agent does not answer.
    #[error("{reason}")]
    Agent {
        /// What happened, and what to do.
        reason: String,
        /// The protocol's error.
        #[source]
        source: Option<virtest_qmp::Error>,
    },
    /// A device cannot be hot-plugged or unplugged.
    #[error("hot-plug of `{id}`: {reason}")]
    Hotplug {
        /// The device's id.
        id: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A network cannot be made or joined, or a VM's address on it set.
    #[error("network `{network}`: {reason}")]
    Network {
        /// The network's name.
        network: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// The VM's TPM cannot be given to it.
    #[error("TPM: {reason}")]
    Tpm {
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A host folder cannot be shared into the guest.
    #[error("shared folder: {reason}")]
    Share {
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A QMP command did not bring the VM to the expected state.
    #[error("{what}")]
    State {
        /// What did not happen.
        what: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The last line of `text` that says something: what a program said last
/// before it exited.
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("it said nothing")
}
