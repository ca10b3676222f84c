//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong in reaching a host and running things on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started on this machine.
    #[error("cannot run `{program}`: {source}{hint}")]
    Spawn {
        /// The program.
        program: String,
        /// What to install, when known (starts with "; ").
        hint: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be made, read or written.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host does not answer on its SSH address.
    #[error(
        "host `{host}` is unreachable at {address}: {said} (check the address and that sshd runs there)"
    )]
    Unreachable {
        /// The host's name.
        host: String,
        /// The address tried (`user@address:port`).
        address: String,
        /// What OpenSSH said.
        said: String,
    },
    /// The host refused the key.
    #[error(
        "host `{host}` refused the key `{key}` for user `{user}`: {said} (add its public half to the user's authorized_keys there)"
    )]
    Auth {
        /// The host's name.
        host: String,
        /// The user.
        user: String,
        /// The private key offered.
        key: PathBuf,
        /// What OpenSSH said.
        said: String,
    },
    /// The host's key is not the one expected.
    #[error(
        "host `{host}`'s SSH host key is unknown or changed: {said} (add it to the known_hosts file the host's entry names)"
    )]
    HostKey {
        /// The host's name.
        host: String,
        /// What OpenSSH said.
        said: String,
    },
    /// The connection to the host was lost.
    #[error("the SSH connection to host `{host}` is gone: {said}")]
    Disconnected {
        /// The host's name.
        host: String,
        /// What OpenSSH said last.
        said: String,
    },
    /// A command on a host failed.
    #[error("`{command}` failed on host `{host}` ({status}): {stderr}")]
    Command {
        /// The host's name.
        host: String,
        /// The command.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it wrote to stderr (its last lines).
        stderr: String,
    },
    /// A `hosts.toml` cannot be used.
    #[error("the hosts file `{path}` cannot be used: {why}")]
    HostsFile {
        /// The file.
        path: PathBuf,
        /// Why (the host and field, for a missing field).
        why: String,
    },
    /// A host has no QEMU where its entry says.
    #[error(
        "host `{host}` has no QEMU at `{qemu}`: install it there (`apt-get install qemu-system-x86`), or give its path as `qemu` in the host's entry"
    )]
    NoQemu {
        /// The host's name.
        host: String,
        /// Where QEMU was looked for.
        qemu: PathBuf,
    },
    /// Something did not happen in time.
    #[error("{what} on host `{host}` did not finish within {after:?}")]
    Timeout {
        /// The host's name.
        host: String,
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// Simulated hosts need what this process lacks.
    #[error(
        "simulated hosts need root (network namespaces, veth links and an sshd each): {why}; run as root, or give real hosts in a hosts.toml"
    )]
    NeedsRoot {
        /// What is missing.
        why: String,
    },
    /// A simulated host's network could not be set up.
    #[error("setting up simulated host `{host}`: `{step}` failed: {said}")]
    Lab {
        /// The host (or `lab` for the shared switch).
        host: String,
        /// The command that failed.
        step: String,
        /// What it said.
        said: String,
    },
    /// A link fault this kernel cannot make.
    #[error("{what} is not possible on this host: {why}")]
    Unsupported {
        /// The fault.
        what: String,
        /// Why, and what would make it possible.
        why: String,
    },
}

/// The stdout of a command `argv` that ran on `host`, or the error of
/// its failure, with the last lines of its stderr.
pub(crate) fn stdout_of<S: AsRef<str>>(
    host: &str,
    argv: &[S],
    output: crate::process::ToolOutput,
) -> Result<String> {
    let output = succeeded(host, argv, output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The output of a command `argv` that ran on `host` and succeeded, or
/// the error of its failure, with the last lines of its stderr.
pub(crate) fn succeeded<S: AsRef<str>>(
    host: &str,
    argv: &[S],
    output: crate::process::ToolOutput,
) -> Result<crate::process::ToolOutput> {
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(Error::Command {
            host: host.to_string(),
            command: shell_words::join(argv.iter().map(AsRef::as_ref)),
            status: output.status,
            stderr: lines[lines.len().saturating_sub(10)..].join("; "),
        });
    }
    Ok(output)
}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
