//! What every session into a guest can do, so test code can take either.

use std::future::Future;

use crate::error::Result;
use crate::result::CmdResult;
use crate::serial::SerialSession;
use crate::ssh::SshSession;

/// A logged-in session that runs commands: SSH or the serial console.
///
/// ```no_run
/// use virtest_remote::Session;
/// async fn kernel_release(session: &impl Session) -> virtest_remote::Result<String> {
///     Ok(session.run("uname -r").await?.stdout.trim().to_string())
/// }
/// ```
pub trait Session {
    /// Runs a command; a non-zero exit is an error carrying the result.
    fn run(&self, command: &str) -> impl Future<Output = Result<CmdResult>> + Send;
}

impl Session for SshSession {
    fn run(&self, command: &str) -> impl Future<Output = Result<CmdResult>> + Send {
        SshSession::run(self, command)
    }
}

impl Session for SerialSession {
    fn run(&self, command: &str) -> impl Future<Output = Result<CmdResult>> + Send {
        SerialSession::run(self, command)
    }
}
