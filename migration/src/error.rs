//! The one error type of this crate.

use std::process::ExitStatus;
use std::time::Duration;

/// What can go wrong in a migration. After every one of these the source
/// VM is still the VM's QEMU, running, unless the error says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mode is not one this crate knows.
    #[error("unknown migration mode `{0}`; valid modes: tcp, unix, exec, fd, file")]
    UnknownMode(String),
    /// The spec asks for something that cannot work.
    #[error("invalid migration spec: {0}")]
    Spec(String),
    /// A QEMU does not offer a capability the spec asks for.
    #[error(
        "unknown migration capability `{capability}`; the {side} QEMU offers: {}",
        offered.join(", ")
    )]
    UnknownCapability {
        /// `source` or `destination`.
        side: &'static str,
        /// The capability asked for.
        capability: String,
        /// The ones that QEMU offers.
        offered: Vec<String>,
    },
    /// A QEMU cannot do what the spec asks (said by its own schema).
    #[error("the {side} QEMU ({version}) cannot do {what}")]
    Unsupported {
        /// `source` or `destination`.
        side: &'static str,
        /// Its version.
        version: String,
        /// What it cannot do (`a migration to a file (file:)`).
        what: String,
    },
    /// The VM has a device QEMU cannot migrate.
    #[error("the VM cannot be migrated: {reason}")]
    NotMigratable {
        /// Which device, and what to do.
        reason: String,
    },
    /// The source VM cannot be migrated now.
    #[error("the source VM")]
    Source(#[source] virtest_vm::Error),
    /// The destination QEMU did not start.
    #[error("starting the destination QEMU")]
    Destination(#[source] virtest_vm::Error),
    /// A QMP command failed.
    #[error("QMP on the {side}: {step}")]
    Qmp {
        /// `source` or `destination`.
        side: &'static str,
        /// What was being done.
        step: String,
        /// Why.
        #[source]
        source: virtest_qmp::Error,
    },
    /// Setting up the transport failed.
    #[error("setting up the {mode} transport")]
    Transport {
        /// The mode.
        mode: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A disk could not be copied to a destination with storage of its
    /// own.
    #[error(
        "copying disk `{drive}` to the destination failed: {reason}; the source VM keeps running on its own disks"
    )]
    DiskCopy {
        /// The drive (its `-drive` id).
        drive: String,
        /// What went wrong.
        reason: String,
    },
    /// QEMU reported the migration failed.
    #[error("the migration failed ({status}): {reason}; the source VM keeps running")]
    Failed {
        /// The final status (`failed`, `cancelled`).
        status: String,
        /// QEMU's `error-desc`, or what was seen.
        reason: String,
    },
    /// The destination QEMU exited during the migration.
    #[error(
        "the destination QEMU exited ({status}) during the migration: {reason}; the source VM keeps running{}\nit said:\n{stderr_tail}",
        match source_saw {
            Some(saw) => format!(" (it saw: {saw})"),
            None => String::new(),
        }
    )]
    DestinationDied {
        /// How it exited.
        status: ExitStatus,
        /// The first thing it said: why it refused the stream.
        reason: String,
        /// The end of its output.
        stderr_tail: String,
        /// What the source reported, when it failed the migration.
        source_saw: Option<String>,
    },
    /// The destination QEMU failed the incoming migration and stayed up
    /// (`exit-on-error` off, QEMU 9.1 on) to say why; it was then
    /// stopped.
    #[error(
        "the destination QEMU failed the migration: {reason}; the source VM keeps running (it saw: {source_saw})\nits QMP said: {error_desc}\nit said:\n{stderr_tail}"
    )]
    DestinationFailed {
        /// Its first words in its log, else its `error-desc`.
        reason: String,
        /// Its `query-migrate` `error-desc`.
        error_desc: String,
        /// The end of its output.
        stderr_tail: String,
        /// What the source reported.
        source_saw: String,
    },
    /// The migration was cancelled, as the spec asked
    /// ([`crate::MigrationSpec::cancel_after`]).
    #[error(
        "the migration was cancelled after `{after}`, as asked; the destination was stopped and the source VM keeps running"
    )]
    Cancelled {
        /// The status it was cancelled after.
        after: crate::CancelPoint,
    },
    /// The source QEMU exited during the migration: the guest is lost.
    #[error("the source QEMU exited ({status}) during the migration; the guest is lost")]
    SourceDied {
        /// How it exited.
        status: ExitStatus,
    },
    /// The migration did not complete in time and was cancelled.
    #[error(
        "the migration did not complete within {after:?} (last status `{last_status}`); {}",
        if *source_answers {
            "it was cancelled and the source VM keeps running"
        } else {
            "cancelling it was asked, but the source QEMU does not answer (stopped or hung), so whether it runs is unknown"
        }
    )]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The last status seen.
        last_status: String,
        /// Whether the source answered QMP after the cancel (it runs).
        source_answers: bool,
    },
    /// The migration completed (the VM runs on the destination) but its
    /// report could not be written: the test's evidence is lost, so the
    /// call does not pass for a success.
    #[error(
        "the migration completed and the VM runs on the destination, but its report could not be written into `{dir}`"
    )]
    ReportNotSaved {
        /// The VM's log directory.
        dir: std::path::PathBuf,
        /// The report, as it would have been saved.
        report: Box<crate::report::MigrationReport>,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The destination did not run the guest after the migration.
    #[error("the destination is `{state}` after the migration completed, not running")]
    NotRunning {
        /// Its state.
        state: String,
    },
}

impl Error {
    /// The destination's exit, its first words after it started as the
    /// reason: QEMU prints the cause of a refused stream first and its
    /// consequences after (the source's own complaints come later still,
    /// in the same log).
    pub(crate) fn destination_died(
        status: ExitStatus,
        stderr_tail: String,
        source_saw: Option<String>,
    ) -> Error {
        let reason = first_words(&stderr_tail)
            .unwrap_or("it said nothing")
            .to_string();
        Error::DestinationDied {
            status,
            reason,
            stderr_tail,
            source_saw,
        }
    }

    /// A destination that failed and stayed up: its first words in its
    /// log as the reason (QEMU's `error-desc` is often only "load of
    /// migration failed: Invalid argument", the log says which device
    /// refused and why), else its `error-desc`.
    pub(crate) fn destination_failed(
        error_desc: String,
        stderr_tail: String,
        source_saw: String,
    ) -> Error {
        let reason = first_words(&stderr_tail).unwrap_or(&error_desc).to_string();
        Error::DestinationFailed {
            reason,
            error_desc,
            stderr_tail,
            source_saw,
        }
    }
}

/// The first line QEMU wrote, without its program's name.
fn first_words(stderr_tail: &str) -> Option<&str> {
    stderr_tail
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("virtest:") && *line != "(nothing)")
        .map(without_program_name)
}

/// `qemu-system-x86_64: Size mismatch` without the program's name.
fn without_program_name(line: &str) -> &str {
    match line.split_once(": ") {
        Some((program, said)) if program.starts_with("qemu") && !program.contains(' ') => said,
        _ => line,
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// What QEMU 7.2 wrote when a destination with other RAM refused the
    /// stream (the last two lines are the source's).
    #[test]
    fn a_refusing_destination_is_quoted_first() {
        let tail = "qemu-system-x86_64: Size mismatch: pc.ram: 0x10002000 != 0x12c00000: Invalid argument\n\
                    qemu-system-x86_64: error while loading state for instance 0x0 of device 'ram'\n\
                    qemu-system-x86_64: load of migration failed: Invalid argument\n\
                    qemu-system-x86_64: failed to save SaveStateEntry with id(name): 2(ram): -5\n\
                    qemu-system-x86_64: Unable to write to socket: Broken pipe";
        let error = Error::destination_died(
            ExitStatus::from_raw(1 << 8),
            tail.into(),
            Some("Unable to write to socket: Broken pipe".into()),
        );
        let text = error.to_string();
        assert_eq!(
            text.lines().next().unwrap(),
            "the destination QEMU exited (exit status: 1) during the migration: \
             Size mismatch: pc.ram: 0x10002000 != 0x12c00000: Invalid argument; \
             the source VM keeps running (it saw: Unable to write to socket: Broken pipe)"
        );
        assert!(text.ends_with(tail), "{text}");
    }
}
