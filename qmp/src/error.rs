//! The one error type of this crate.

use std::time::Duration;

/// What can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached.
    #[error("connecting to the QMP socket `{addr}`")]
    Connect {
        /// The socket path or address.
        addr: String,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// The server's first message was not a QMP greeting.
    #[error("bad QMP greeting: {0}")]
    Greeting(String),
    /// `qmp_capabilities` failed.
    #[error("QMP capabilities negotiation failed")]
    Negotiation(#[source] Box<Error>),
    /// QEMU answered a command with an error.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        /// The command's name.
        command: String,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The guest agent answered a command with an error.
    #[error("guest agent command `{command}` failed: {class}: {desc}")]
    AgentCommand {
        /// The command's name.
        command: String,
        /// The agent's error class.
        class: String,
        /// The agent's description.
        desc: String,
    },
    /// The connection is closed; every command pending then gets this.
    #[error("the QMP connection is closed: {reason}")]
    Disconnected {
        /// Why (end of stream, read error, ...).
        reason: String,
    },
    /// Nothing came within the deadline.
    #[error("{what} got no answer within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// The server sent something QMP does not allow here.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// A subscriber fell so far behind that events it had not read were
    /// dropped from the log.
    #[error("an event subscriber fell {missed} events behind and lost them")]
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
