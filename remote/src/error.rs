//! The one error type of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use crate::result::CmdResult;

/// What can go wrong in a session with a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing accepted the TCP connection.
    #[error("connecting to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something accepted the connection but the SSH handshake failed (not
    /// an SSH server, or one that went away).
    #[error("SSH handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address.
        addr: SocketAddr,
        /// What libssh2 said.
        reason: String,
    },
    /// The server refused the credentials; retrying will not help.
    #[error("SSH login as `{user}` to {addr} by {method} was refused: {reason}")]
    Auth {
        /// The user.
        user: String,
        /// The address.
        addr: SocketAddr,
        /// `password`, `key file` or `key`.
        method: &'static str,
        /// What the server said.
        reason: String,
    },
    /// The server's host key is not one of those the caller trusts.
    #[error("the SSH host key of {addr} is {got}, not one of the known keys")]
    HostKey {
        /// The address.
        addr: SocketAddr,
        /// The fingerprint offered.
        got: String,
    },
    /// Logging in did not succeed before the deadline.
    #[error("no SSH login to {addr} within {after:?}")]
    NotUp {
        /// The address.
        addr: SocketAddr,
        /// The deadline.
        after: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<Error>,
    },
    /// A command exited with a non-zero status.
    #[error(
        "command `{}` exited with status {}\nstderr (tail): {}\nstdout (tail): {}",
        .0.command, .0.exit_status, tail(&.0.stderr), tail(&.0.stdout)
    )]
    Exit(Box<CmdResult>),
    /// A command did not finish before its deadline.
    #[error("command `{command}` did not finish within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The deadline.
        after: Duration,
    },
    /// A wait's condition did not hold before its deadline
    /// (`wait_until_succeeds`, `wait_for_open_port`, `wait_for_unit`).
    #[error(
        "{what} did not happen within {after:?} ({tries} tries); the last try, `{}`, exited with status {}\nstderr (tail): {}\nstdout (tail): {}",
        .last.command, .last.exit_status, tail(&.last.stderr), tail(&.last.stdout)
    )]
    NotYet {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
        /// How many times it was tried.
        tries: u32,
        /// The last try.
        last: Box<CmdResult>,
    },
    /// A command expected to fail (`fail`) succeeded.
    #[error("command `{}` was expected to fail, but it succeeded\nstdout (tail): {}", .0.command, tail(&.0.stdout))]
    Succeeded(Box<CmdResult>),
    /// A systemd unit waited for failed.
    #[error("systemd unit `{unit}` failed:\n{status}")]
    UnitFailed {
        /// The unit.
        unit: String,
        /// `systemctl status` of it.
        status: String,
    },
    /// The serial console did not do what was expected.
    #[error("serial console: {what}: {reason}")]
    Serial {
        /// What was being done or waited for.
        what: String,
        /// Why it failed, with the console's last output.
        reason: String,
    },
    /// The serial console asks for a login, and no password was given.
    #[error("serial console: it asks `{user}` to log in, and no password was given")]
    SerialNeedsPassword {
        /// The user it would log in as.
        user: String,
    },
    /// A local file of a transfer could not be read or written.
    #[error("local file `{path}`")]
    Local {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The session failed while running a command.
    #[error("running `{command}` over SSH failed: {reason}")]
    Channel {
        /// The command.
        command: String,
        /// What went wrong.
        reason: String,
    },
    /// A command wrote more than [`crate::RunOptions::max_output`] on one
    /// stream; what it wrote is dropped.
    #[error(
        "command `{command}` wrote more than {limit} bytes on {stream:?}, the most a run keeps (RunOptions::max_output); write big output to a file in the guest and fetch it"
    )]
    OutputTooLarge {
        /// The command.
        command: String,
        /// The stream that overflowed.
        stream: crate::OutputStream,
        /// The limit.
        limit: usize,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The last 800 bytes of some output, on a character boundary.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(800);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim_end()
}
