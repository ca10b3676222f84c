//! [`Vm::within`]: the VM's waits with a deadline of the caller's, where
//! the plain calls use the configured timeouts.

use std::time::Duration;

use virtest_qmp::Qga;
use virtest_remote::SshSession;

use super::{PowerOff, Vm};
use crate::console::ConsoleCursor;
use crate::error::Result;

/// A VM's waits bounded by one deadline, from [`Vm::within`].
///
/// ```no_run
/// # async fn f(vm: &mut virtest_vm::Vm) -> virtest_vm::Result<()> {
/// use std::time::Duration;
/// vm.power_on().await?;
/// vm.within(Duration::from_secs(300)).wait_for_console("login:").await?;
/// vm.within(Duration::from_secs(120)).login_remote().await?;
/// // No grace: QEMU quits at once.
/// vm.within(Duration::ZERO).power_off().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Within<'vm> {
    vm: &'vm mut Vm,
    deadline: Duration,
}

impl<'vm> Within<'vm> {
    /// [`Vm::login_remote`] within the deadline. On timeout the error
    /// holds the console's last 30 lines.
    pub async fn login_remote(self) -> Result<&'vm SshSession> {
        self.vm.login_remote_within(self.deadline).await
    }

    /// [`Vm::agent`] within the deadline. A guest that runs no agent is
    /// an [`Error::Agent`](crate::Error::Agent) once it passes.
    pub async fn agent(self) -> Result<&'vm Qga> {
        self.vm.agent_within(self.deadline).await
    }

    /// Waits until the guest is ready in the current boot: its ready line
    /// (its own, or cloud-init's), or its agent answering; at once when
    /// that was seen already, or when the guest's readiness is its sshd
    /// answering, which `login_remote` tries.
    pub async fn wait_ready(self) -> Result<()> {
        self.vm.wait_ready(self.deadline).await
    }

    /// Waits until `pattern` appears on the console in the current boot;
    /// returns where it ends. Fails at once when QEMU exits.
    pub async fn wait_for_console(self, pattern: &str) -> Result<ConsoleCursor> {
        self.vm.wait_for_console(pattern, self.deadline).await
    }

    /// Waits until `pattern` appears on the console after `since` (see
    /// [`Console::cursor`](crate::Console::cursor)); returns where it
    /// ends. Fails at once when QEMU exits.
    pub async fn wait_for_console_from(
        self,
        since: ConsoleCursor,
        pattern: &str,
    ) -> Result<ConsoleCursor> {
        self.vm
            .wait_for_console_from(since, pattern, self.deadline)
            .await
    }

    /// Types `command` and Enter into the serial console and waits until
    /// `pattern` appears after it; returns what the console printed up to
    /// the pattern's end. For a prompt that is already there (a shell, a
    /// boot loader), as QEMU's functional tests do; see [`Vm::serial`]
    /// for commands with their output and exit status.
    pub async fn exec_command_and_wait_for_pattern(
        self,
        command: &str,
        pattern: &str,
    ) -> Result<String> {
        self.vm
            .exec_command_and_wait_for_pattern(command, pattern, self.deadline)
            .await
    }

    /// [`Vm::power_off`], waiting for the guest at most the deadline; with
    /// zero, the guest is not asked and QEMU quits at once.
    pub async fn power_off(self) -> Result<PowerOff> {
        self.vm.power_off_within(self.deadline).await
    }
}

impl Vm {
    /// The VM's waits bounded by `deadline` instead of the configured
    /// timeouts: see [`Within`].
    pub fn within(&mut self, deadline: Duration) -> Within<'_> {
        Within { vm: self, deadline }
    }
}
