//! [`Vm::agent`]: the guest agent (`qemu-ga` in the guest) over the VM's
//! agent channel, connected once per QEMU process: after a migration the
//! next call connects to the destination's channel.

use std::time::Duration;

use virtest_qmp::Qga;

use super::Vm;
use crate::error::{Error, Result};

/// The agent's connection, with the socket of the QEMU process it is
/// connected to: this module's own part of a [`Vm`].
#[derive(Debug, Default)]
pub(super) struct AgentLink(Option<(std::path::PathBuf, Qga)>);

impl Vm {
    /// The guest agent, connected and answering, waiting for it as long
    /// as a login would ([`crate::VmConfig::login_timeout`]): the agent
    /// may start after the guest's SSH server.
    ///
    /// ```no_run
    /// # async fn f(vm: &mut virtest_vm::Vm) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let done = vm.agent().await?.exec(&["uname", "-r"], Duration::from_secs(10)).await?;
    /// println!("{}", String::from_utf8_lossy(&done.stdout));
    /// vm.agent().await?.write_file("/tmp/hello", b"hello").await?;
    /// # Ok(()) }
    /// ```
    pub async fn agent(&mut self) -> Result<&Qga> {
        let deadline = self.config().login_timeout;
        self.agent_within(deadline).await
    }

    /// [`Vm::agent`] with its own deadline. A guest that runs no agent
    /// is an [`Error::Agent`] once it passes.
    pub(crate) async fn agent_within(&mut self, deadline: Duration) -> Result<&Qga> {
        if !self.config().agent {
            return Err(Error::Agent {
                reason: "the VM has no guest agent channel (its VmConfig::agent is off)".into(),
                source: None,
            });
        }
        let socket = self.instance()?.agent_socket_here().to_path_buf();
        let connected = self
            .agent
            .0
            .as_ref()
            .is_some_and(|(path, _)| *path == socket);
        if !connected {
            self.agent.0 = None;
            let qga = Qga::connect_unix(&socket, deadline)
                .await
                .map_err(|source| Error::Agent {
                    reason: format!(
                        "no guest agent answered on the VM's agent channel within {deadline:?}: \
                         the guest must run qemu-ga on the virtio-serial port \
                         org.qemu.guest_agent.0 (Debian: the qemu-guest-agent package)"
                    ),
                    source: Some(source),
                })?;
            tracing::info!(parent: self.span(), "connected to the guest agent");
            self.agent.0 = Some((socket, qga));
        }
        Ok(&self.agent.0.as_ref().expect("connected above").1)
    }
}
