//! What every session into a guest can do, so test code can take either:
//! run a command, and the waits people rely on in NixOS tests, each with
//! a deadline and an error naming the command and its last output.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
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
pub trait Session: Sync {
    /// Runs a command; a non-zero exit is an error carrying the result.
    fn run(&self, command: &str) -> impl Future<Output = Result<CmdResult>> + Send;

    /// Runs `command` until it exits 0 (polling with backoff), within
    /// `deadline`; returns that run. A broken session fails at once.
    ///
    /// ```no_run
    /// # async fn f(s: &impl virtest_remote::Session) -> virtest_remote::Result<()> {
    /// use std::time::Duration;
    /// s.wait_until_succeeds("test -e /run/ready", Duration::from_secs(30)).await?;
    /// # Ok(()) }
    /// ```
    fn wait_until_succeeds(
        &self,
        command: &str,
        deadline: Duration,
    ) -> impl Future<Output = Result<CmdResult>> + Send {
        let what = format!("`{command}` succeeding");
        poll(self, command, what, deadline, |result| {
            match result.success() {
                true => Try::Done,
                false => Try::Again,
            }
        })
    }

    /// Runs `command` until it exits non-zero, within `deadline`.
    fn wait_until_fails(
        &self,
        command: &str,
        deadline: Duration,
    ) -> impl Future<Output = Result<CmdResult>> + Send {
        let what = format!("`{command}` failing");
        poll(self, command, what, deadline, |result| {
            match result.success() {
                true => Try::Again,
                false => Try::Done,
            }
        })
    }

    /// Runs `command` once, expecting it to fail; its success is an
    /// [`Error::Succeeded`].
    fn fail(&self, command: &str) -> impl Future<Output = Result<CmdResult>> + Send {
        async move {
            match self.run(command).await {
                Ok(result) => Err(Error::Succeeded(Box::new(result))),
                Err(Error::Exit(result)) => Ok(*result),
                Err(other) => Err(other),
            }
        }
    }

    /// Waits until something in the guest listens on TCP `port` (read
    /// from `/proc/net/tcp` and `tcp6`, so no tool is needed).
    fn wait_for_open_port(
        &self,
        port: u16,
        deadline: Duration,
    ) -> impl Future<Output = Result<CmdResult>> + Send {
        let command = format!(
            "grep -qE ':{port:04X} [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null"
        );
        let what = format!("TCP port {port} opening in the guest");
        async move {
            poll(self, &command, what, deadline, |result| {
                match result.success() {
                    true => Try::Done,
                    false => Try::Again,
                }
            })
            .await
        }
    }

    /// Waits until systemd unit `unit` is active; fails at once when it
    /// failed (with its `systemctl status`) or the guest has no systemd.
    fn wait_for_unit(
        &self,
        unit: &str,
        deadline: Duration,
    ) -> impl Future<Output = Result<CmdResult>> + Send {
        let command = format!("systemctl is-active {unit}");
        let what = format!("systemd unit `{unit}` becoming active");
        let unit = unit.to_string();
        async move {
            let waited = poll(self, &command, what, deadline, |result| {
                match (result.exit_status, result.stdout.trim()) {
                    (0, _) => Try::Done,
                    (127, _) => Try::Stop("the guest has no systemctl"),
                    (_, "failed") => Try::Stop("failed"),
                    _ => Try::Again,
                }
            })
            .await;
            match waited {
                // A unit that failed stopped the wait at once.
                Err(Error::NotYet { last, .. }) if last.stdout.trim() == "failed" => {
                    let shown = format!("systemctl status --no-pager --lines 20 {unit}");
                    let status = match self.run(&shown).await {
                        Ok(result) => result.stdout,
                        Err(Error::Exit(result)) => result.stdout,
                        Err(e) => e.to_string(),
                    };
                    Err(Error::UnitFailed { unit, status })
                }
                other => other,
            }
        }
    }
}

/// What one try of a wait says.
enum Try {
    /// The condition holds.
    Done,
    /// Not yet: try again.
    Again,
    /// It never will (why).
    Stop(&'static str),
}

/// Runs `command` until `judge` says [`Try::Done`] or [`Try::Stop`],
/// backing off from 100 ms to 2 s between tries, within `deadline`.
async fn poll<S: Session + ?Sized>(
    session: &S,
    command: &str,
    what: String,
    deadline: Duration,
    judge: impl Fn(&CmdResult) -> Try + Send,
) -> Result<CmdResult> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match session.run(command).await {
            Ok(result) => result,
            Err(Error::Exit(result)) => *result,
            Err(other) => return Err(other),
        };
        let left = deadline.saturating_sub(start.elapsed());
        let why = match judge(&result) {
            Try::Done => return Ok(result),
            Try::Stop(why) => format!("{what} ({why})"),
            Try::Again if left.is_zero() => what.clone(),
            Try::Again => {
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 3 / 2).min(Duration::from_secs(2));
                continue;
            }
        };
        return Err(Error::NotYet {
            what: why,
            after: start.elapsed(),
            tries,
            last: Box::new(result),
        });
    }
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
