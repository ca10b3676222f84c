//! An outgoing migration: QEMU sends the guest's state to a URI or a
//! file descriptor, and its `MIGRATION` events tell how it goes. The one
//! place virtest starts and follows a migration: a live migration to
//! another QEMU (`virtest-migration`) and a ready snapshot saved to a
//! file (`virtest-vm`) both use it.
//!
//! ```no_run
//! # async fn f(qmp: virtest_qmp::Qmp, file: std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//! use virtest_qmp::outgoing::{Outgoing, Target};
//! // The guest stopped first, so the file holds one consistent state.
//! qmp.execute(qapi::qmp::stop {}).await?;
//! let migration = Outgoing::start(&qmp, Target::Fd(file.as_fd())).await?;
//! migration.finish(Duration::from_secs(60)).await?;
//! # Ok(()) }
//! ```

use std::os::fd::BorrowedFd;
use std::time::Duration;

use qapi::Enum;
use qapi::qmp::{
    MigrationCapability, MigrationCapabilityStatus, MigrationStatus, migrate,
    migrate_set_capabilities, query_migrate,
};

use crate::{Error, Qmp, Subscription};

/// A `max-bandwidth` that caps nothing (1 TiB/s), for a migration that
/// stays on one host. QEMU's own default (128 MiB/s in 7.2) is meant for
/// a network shared with other traffic; on one host it only makes a
/// migration of the tiny guest take 0.6 s instead of 0.2 s.
pub const UNCAPPED_BANDWIDTH: u64 = 1 << 40;

/// Where the guest's state goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A migration URI (`tcp:HOST:PORT`, `unix:PATH`, `exec:CMD`, or
    /// `fd:NAME` for a descriptor passed with `getfd` before).
    Uri(&'a str),
    /// A file or pipe, passed to QEMU over the QMP socket first.
    Fd(BorrowedFd<'a>),
}

/// The name a [`Target::Fd`] is passed to QEMU under.
const FD_NAME: &str = "virtest-outgoing";

/// Why an outgoing migration did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OutgoingError {
    /// A QMP command failed, or the connection ended.
    #[error("{step}")]
    Qmp {
        /// The command, or what was being waited for.
        step: String,
        /// What QMP said.
        #[source]
        source: Error,
    },
    /// QEMU ended the migration as failed or cancelled.
    #[error("the migration {status}: {reason}")]
    Failed {
        /// `failed` or `cancelled`.
        status: String,
        /// QEMU's reason (`query-migrate`'s `error-desc`).
        reason: String,
    },
    /// The migration did not end within its deadline.
    #[error("the migration did not complete within {after:?} (last status: {last_status})")]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The last status QEMU reported.
        last_status: String,
    },
}

/// A migration QEMU is running: [`Outgoing::next_status`] follows it
/// event by event, [`Outgoing::finish`] waits for its end.
#[derive(Debug)]
pub struct Outgoing<'q> {
    qmp: &'q Qmp,
    events: Subscription,
    last: MigrationStatus,
}

impl<'q> Outgoing<'q> {
    /// Starts sending the guest's state to `target`, with the `events`
    /// capability on (set other capabilities and parameters before).
    pub async fn start(qmp: &'q Qmp, target: Target<'_>) -> Result<Outgoing<'q>, OutgoingError> {
        let failed = |step: &str| {
            let step = step.to_string();
            move |source| OutgoingError::Qmp { step, source }
        };
        qmp.execute(migrate_set_capabilities {
            capabilities: vec![MigrationCapabilityStatus {
                capability: MigrationCapability::events,
                state: true,
            }],
        })
        .await
        .map_err(failed("`migrate-set-capabilities`"))?;
        let uri = match target {
            Target::Uri(uri) => uri.to_string(),
            Target::Fd(fd) => {
                let args = serde_json::json!({ "fdname": FD_NAME });
                qmp.execute_with_fd("getfd", args, fd)
                    .await
                    .map_err(failed("`getfd`"))?;
                format!("fd:{FD_NAME}")
            }
        };
        // Subscribed before `migrate`, so no status is missed.
        let events = qmp.subscribe();
        let command = migrate {
            uri: Some(uri.clone()),
            channels: None,
            detach: None,
            resume: None,
        };
        qmp.execute(command)
            .await
            .map_err(failed(&format!("`migrate` to `{uri}`")))?;
        Ok(Outgoing {
            qmp,
            events,
            last: MigrationStatus::setup,
        })
    }

    /// The next status QEMU reports. Cancel-safe: a status is returned
    /// by the call that read it.
    pub async fn next_status(&mut self) -> Result<MigrationStatus, Error> {
        loop {
            let event = self.events.next().await?;
            if let Some(qapi::qmp::Event::MIGRATION { data, .. }) = event.typed() {
                self.last = data.status;
                return Ok(data.status);
            }
        }
    }

    /// Resumes a paused postcopy migration over `uri` (`migrate` with
    /// `resume`), once the destination listens there (`migrate-recover`);
    /// its statuses follow in [`Outgoing::next_status`].
    pub async fn resume(&self, uri: &str) -> Result<(), OutgoingError> {
        let command = migrate {
            uri: Some(uri.to_string()),
            channels: None,
            detach: None,
            resume: Some(true),
        };
        self.qmp
            .execute(command)
            .await
            .map(drop)
            .map_err(|source| OutgoingError::Qmp {
                step: format!("`migrate` to `{uri}` with `resume`"),
                source,
            })
    }

    /// The last status QEMU reported (`setup` before the first).
    pub fn last_status(&self) -> MigrationStatus {
        self.last
    }

    /// QEMU's reason for a failed or cancelled migration.
    pub async fn failure_reason(&self) -> String {
        let info = self
            .qmp
            .execute_within(query_migrate {}, Duration::from_secs(2))
            .await;
        info.ok()
            .and_then(|info| info.error_desc)
            .unwrap_or_else(|| "QEMU gave no reason".into())
    }

    /// Waits until the migration completes (the target then holds the
    /// whole state), fails, or `deadline` passes.
    pub async fn finish(mut self, deadline: Duration) -> Result<(), OutgoingError> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let status = tokio::time::timeout_at(end, self.next_status()).await;
            let status = match status {
                Err(_) => {
                    return Err(OutgoingError::Timeout {
                        after: deadline,
                        last_status: self.last.name().to_string(),
                    });
                }
                Ok(status) => status.map_err(|source| OutgoingError::Qmp {
                    step: "following the migration".into(),
                    source,
                })?,
            };
            match status {
                MigrationStatus::completed => return Ok(()),
                MigrationStatus::failed | MigrationStatus::cancelled => {
                    return Err(OutgoingError::Failed {
                        status: status.name().to_string(),
                        reason: self.failure_reason().await,
                    });
                }
                _ => {}
            }
        }
    }
}
