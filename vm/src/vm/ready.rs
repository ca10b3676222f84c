//! Waiting on the guest: a pattern on its console, and its readiness
//! (its ready line, cloud-init's, or its agent answering).

use std::time::{Duration, Instant};

use virtest_guest::description::Ready;

use super::Vm;
use crate::console::ConsoleCursor;
use crate::error::{Error, Result};

impl Vm {
    /// Waits until `pattern` appears on the console in the current boot.
    pub(crate) async fn wait_for_console(
        &mut self,
        pattern: &str,
        deadline: Duration,
    ) -> Result<ConsoleCursor> {
        let since = self.boot_cursor;
        self.wait_for_console_from(since, pattern, deadline).await
    }

    /// Waits until `pattern` appears on the console after `since`
    /// (see [`crate::Console::cursor`]); returns where it ends. Fails at once
    /// when QEMU exits.
    pub(crate) async fn wait_for_console_from(
        &mut self,
        since: ConsoleCursor,
        pattern: &str,
        deadline: Duration,
    ) -> Result<ConsoleCursor> {
        let console = self.console()?.clone();
        let mut changes = console.changes();
        let start = Instant::now();
        loop {
            if let Some(end) = console.find(since, pattern) {
                return Ok(end);
            }
            let instance = self.instance.as_mut().ok_or(Error::Off {
                action: "wait for the console",
            })?;
            let left = deadline.saturating_sub(start.elapsed());
            tokio::select! {
                _ = changes.changed() => {}
                status = instance.exited() => {
                    instance.drain_console(Duration::from_secs(1)).await;
                    if let Some(end) = console.find(since, pattern) {
                        return Ok(end);
                    }
                    let during = format!("while waiting for `{pattern}` on the console\nlast console lines:\n{}", console.tail(30));
                    return Err(instance.exit_error(status, &during));
                }
                _ = tokio::time::sleep(left) => {
                    return Err(Error::ConsoleTimeout {
                        pattern: pattern.to_string(),
                        after: deadline,
                        console_tail: console.tail(30),
                    });
                }
            }
        }
    }

    /// Waits until the guest is ready in the current boot: its ready line
    /// (its own, or cloud-init's), or its agent answering; at once when
    /// that was seen already, or when the guest's readiness is its sshd
    /// answering, which `login_remote` tries.
    pub(crate) async fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        if self.ready_seen {
            return Ok(());
        }
        let ready = &self.config.guest.ready;
        if let Some(line) = ready.console_line() {
            let line = line.to_string();
            self.wait_for_console(&line, deadline).await?;
        } else if *ready == Ready::Agent {
            self.agent_within(deadline).await?;
        } else {
            // Ready::Ssh: `login_remote` tries its logins.
            return Ok(());
        }
        self.ready_seen = true;
        Ok(())
    }
}
