//! A session on a VM's serial console, for guests or moments without a
//! network: `vm.serial()` logs in at the console's prompt (or uses the
//! shell there) and runs commands, while `console.log` keeps recording;
//! `vm.within(d).exec_command_and_wait_for_pattern` types a line and waits for
//! what it prints, as QEMU's functional tests do. Both go through the
//! VM's [`Console`](crate::Console), which moves with the VM on a
//! migration, so a session outlives it; a power cycle or reboot ends it.

use std::time::{Duration, Instant};

use virtest_remote::SerialSession;

use super::Vm;
use crate::config::Login;
use crate::console_share::SharedConsole;
use crate::error::{Error, Result};

/// A logged-in console session and the socket it speaks through.
#[derive(Debug)]
struct SerialLogin {
    // Dropped after the session that speaks through it.
    session: SerialSession,
    _shared: SharedConsole,
}

/// The serial console session of a VM, until a power cycle or reboot:
/// this module's own part of a [`Vm`].
#[derive(Debug, Default)]
pub(super) struct SerialLink(Option<SerialLogin>);

impl SerialLink {
    /// Ends the session (the guest rebooted, or QEMU ended).
    pub(super) fn forget(&mut self) {
        self.0 = None;
    }
}

impl Vm {
    /// A session on the serial console, logged in as the login user with
    /// the guest's password (or the configured one) the first time, and
    /// kept until a power cycle or reboot; it survives migrations.
    ///
    /// ```no_run
    /// # async fn f(mut vm: virtest_vm::Vm) -> virtest_vm::Result<()> {
    /// vm.power_on().await?;
    /// let uname = vm.serial().await?.run("uname -r").await?.stdout;
    /// # Ok(()) }
    /// ```
    pub async fn serial(&mut self) -> Result<&SerialSession> {
        if !self.is_on() {
            return Err(self.off_error("use the serial console"));
        }
        if self.serial.0.is_none() {
            // None for a console that logs in by itself (both built-in
            // guests' do); one that asks gets the error below.
            let password = match &self.config().login {
                Login::Password(password) => Some(password.clone()),
                Login::Guest | Login::Key(_) => self.config().guest.login.password.clone(),
            };
            let user = self.login_user();
            let deadline = self.config().login_timeout;
            let start = Instant::now();
            self.wait_ready(deadline).await?;
            let socket = self.runtime_dir.join("serial.sock");
            let shared =
                SharedConsole::new(self.console()?, &socket, 0).map_err(|source| Error::Io {
                    what: "sharing the console on",
                    path: socket.clone(),
                    source,
                })?;
            let left = deadline.saturating_sub(start.elapsed());
            let session = SerialSession::connect(&socket, &user, password.as_deref(), left)
                .await
                .map_err(|e| match e {
                    e @ virtest_remote::Error::SerialNeedsPassword { .. } => Error::State {
                        what: format!(
                            "{e}; guest `{}` has none in its description (set one: the \
                             guest_password parameter, or Login::Password)",
                            self.config().guest.name
                        ),
                    },
                    e => Error::Remote(e),
                })?;
            tracing::info!(user, "logged in on the serial console");
            self.serial.0 = Some(SerialLogin {
                session,
                _shared: shared,
            });
        }
        Ok(&self.serial.0.as_ref().expect("set above").session)
    }

    /// Types `command` and Enter into the serial console and waits until
    /// `pattern` appears after it; returns what the console printed up to
    /// the pattern's end. For a prompt that is already there (a shell, a
    /// boot loader); see [`Vm::serial`] for commands with their output
    /// and exit status.
    pub(crate) async fn exec_command_and_wait_for_pattern(
        &mut self,
        command: &str,
        pattern: &str,
        deadline: Duration,
    ) -> Result<String> {
        let console = self.console()?.clone();
        let since = console.cursor();
        console
            .write(format!("{command}\r").as_bytes())
            .await
            .map_err(|source| Error::Io {
                what: "typing into the console of",
                path: self.log_dir.join("console.log"),
                source,
            })?;
        let end = self.wait_for_console_from(since, pattern, deadline).await?;
        let text = console.text_since(since);
        let length = (end.0 - since.0) as usize;
        Ok(text.get(..length).unwrap_or(&text).to_string())
    }
}
