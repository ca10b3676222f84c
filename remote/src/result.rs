//! What a command left behind.

use std::time::Duration;

/// The result of one command in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdResult {
    /// The command as run.
    pub command: String,
    /// Everything it wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything it wrote to stderr, kept apart from stdout.
    pub stderr: String,
    /// Its exit status.
    pub exit_status: i32,
    /// How long it took, from channel open to exit.
    pub duration: Duration,
}

impl CmdResult {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == 0
    }
}
