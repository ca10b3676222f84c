//! Logging into the guest by SSH: waiting until it can be, the login's
//! user and key, and the access details a person needs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::Instrument;
use virtest_remote::{Auth, SshConfig, SshSession};

use crate::config::Login;
use crate::error::{Error, Result};
use crate::snapshot;

use super::Vm;

/// How to log into a running guest by SSH, for a person: see
/// [`Vm::ssh_access`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The user.
    pub user: String,
    /// The private key, or `None` for a password login (the password is
    /// not given out).
    pub key: Option<PathBuf>,
    /// The guest's host key (`ssh-ed25519 AAAA...`), once a login saw it.
    pub host_key: Option<String>,
}

impl Vm {
    /// The user `login_remote` logs in as.
    pub(crate) fn login_user(&self) -> String {
        self.config
            .user
            .clone()
            .unwrap_or_else(|| self.config.guest.login.user.clone())
    }

    /// The private key logins use: the config's, the guest's, or for a
    /// cloud-init guest that names none, virtest's own.
    pub(super) fn login_key(&self) -> Option<PathBuf> {
        let guest = &self.config.guest;
        match &self.config.login {
            Login::Key(key) => Some(key.clone()),
            Login::Guest | Login::Password(_) => guest.login.key.clone().or_else(|| {
                let home = virtest_guest::cache::default_home().ok()?;
                guest
                    .cloud_init
                    .enabled
                    .then(|| virtest_guest::keys::virtest_key(&home).ok())
                    .flatten()
            }),
        }
    }

    /// Logs into the guest over SSH, waiting up to the configured login
    /// timeout (60 s by default); the session is then [`Vm::remote`].
    pub async fn login_remote(&mut self) -> Result<&SshSession> {
        let deadline = self.config.login_timeout;
        self.login_remote_within(deadline).await
    }

    /// [`Vm::login_remote`] with its own deadline. On timeout the error
    /// holds the console's last 30 lines.
    pub(crate) async fn login_remote_within(&mut self, deadline: Duration) -> Result<&SshSession> {
        let span = tracing::info_span!(parent: &self.span, "login_remote", phase = "logging in");
        let start = Instant::now();
        let port = self
            .ssh_port()
            .filter(|_| self.is_on())
            .ok_or(Error::Off { action: "log in" })?;
        self.remote = None;
        async {
            self.wait_ready_to_log_in(deadline).await?;
            let config = self.ssh_config(port)?;
            let left = deadline.saturating_sub(start.elapsed());
            // The session's span must hang off the VM's, not off this
            // call's: it lives as long as the session.
            let login = SshSession::wait_for_login(&config, left).instrument(self.span.clone());
            match login.await {
                Ok(session) => {
                    tracing::info!(elapsed = ?start.elapsed(), port, "logged in");
                    if std::mem::take(&mut self.refresh_pending) {
                        match snapshot::refresh(&session).await {
                            Ok(()) => tracing::debug!("refreshed the restored guest's entropy and clock"),
                            Err(e) => tracing::warn!(error = %e, "the restored guest shares its clock with the snapshot"),
                        }
                    }
                    if self.nics().next().is_some() {
                        self.set_network_addresses(&session).await?;
                    }
                    if self.host_key.is_none() {
                        tracing::info!(
                            fingerprint = session.host_key_fingerprint(),
                            "trusting the guest's host key on first use; later logins must present it"
                        );
                        self.host_key = Some(session.host_key().to_string());
                    }
                    Ok(session)
                }
                Err(source) => Err(Error::Login {
                    reason: match &source {
                        virtest_remote::Error::Auth { .. } => format!(
                            "the guest refused the login ({source}): check the password or key"
                        ),
                        virtest_remote::Error::HostKey { .. } => format!(
                            "the guest presented another SSH host key than this VM's ({source}): \
                             the guest is not the one first logged into, or its keys were remade"
                        ),
                        _ => format!("no SSH login into the guest within {deadline:?}"),
                    },
                    after: deadline,
                    console_tail: self.console()?.tail(30),
                    source: Some(Box::new(source)),
                }),
            }
        }
        .instrument(span)
        .await
        .map(|session| &*self.remote.insert(session))
    }

    /// Waits for the guest's ready signal, as `login_remote` does first;
    /// a guest that never gives it is an [`Error::Login`] that says so.
    pub(crate) async fn wait_ready_to_log_in(&mut self, deadline: Duration) -> Result<()> {
        match self.wait_ready(deadline).await {
            Err(Error::ConsoleTimeout {
                pattern,
                console_tail,
                ..
            }) => {
                let mut reason = format!(
                    "the guest did not get ready within {deadline:?}: it never printed `{pattern}` on its console"
                );
                if let Some(seed) = self.disks.as_ref().and_then(|d| d.seed()) {
                    reason.push_str(&format!(
                        " (its cloud-init seed, which prints it, is `{}`)",
                        seed.display()
                    ));
                }
                Err(Error::Login {
                    reason,
                    after: deadline,
                    console_tail,
                    source: None,
                })
            }
            other => other,
        }
    }

    /// How a person logs into the running guest with OpenSSH: what
    /// [`Vm::login_remote`] uses (`None` while off or when the guest has
    /// no way in).
    pub fn ssh_access(&self) -> Option<SshAccess> {
        let port = self.ssh_port().filter(|_| self.is_on())?;
        let config = self.ssh_config(port).ok()?;
        Some(SshAccess {
            port,
            user: config.user,
            key: match config.auth {
                Auth::KeyFile(key) => Some(key),
                Auth::Password(_) | Auth::Key(_) => None,
            },
            host_key: self.host_key.clone(),
        })
    }

    fn ssh_config(&self, port: u16) -> Result<SshConfig> {
        let login = &self.config.guest.login;
        Ok(SshConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            user: self.login_user(),
            auth: match (&self.config.login, self.login_key(), &login.password) {
                (Login::Password(password), _, _) => Auth::Password(password.clone()),
                (Login::Guest | Login::Key(_), Some(key), _) => Auth::KeyFile(key),
                (Login::Guest | Login::Key(_), None, Some(password)) => {
                    Auth::Password(password.clone())
                }
                (Login::Guest | Login::Key(_), None, None) => {
                    return Err(Error::State {
                        what: format!(
                            "no way to log into guest `{}`: its description gives no key or password, \
                             and virtest's own key (for a cloud-init guest) could not be made in the cache",
                            self.config.guest.name
                        ),
                    });
                }
            },
            known_host_keys: self.host_key.iter().cloned().collect(),
        })
    }

    /// The session `login_remote` opened.
    pub fn remote(&self) -> Result<&SshSession> {
        self.remote.as_ref().ok_or(Error::NoRemote)
    }
}
