//! Ready snapshots: a VM that starts from the saved state of a guest that
//! was ready, instead of booting. The first VM of a guest boots, is saved
//! once ready (QEMU's migration stream into a file of the cache) and is
//! restored from it; later VMs only restore. The store is
//! [`virtest_guest::snapshots`]. This module has the key, and saves and
//! loads QEMU's state; a VM's start from a snapshot is `vm::from_snapshot`.
//!
//! A restored clone shares the saved kernel's state. What it must not
//! share is refreshed: the `vmgenid` device of every VM that may start
//! from a snapshot gives each QEMU a new generation id, on which Linux
//! reseeds its RNG at once; the first login also writes host entropy into
//! `/dev/urandom` and sets the clock.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qapi::Enum;
use qapi::qmp::{
    MigrateSetParameters, RunState, cont, migrate_incoming, migrate_set_parameters, query_status,
    stop,
};
use serde_json::{Value, json};
use virtest_guest::GuestDescription;
use virtest_guest::cloud_init::Seed;
use virtest_guest::snapshots::{FileStamp, SavedState, SnapshotKey, StateFormat};
use virtest_qemu_cmdline::QemuCmdline;
use virtest_qemu_cmdline::binary::Probe;
use virtest_qmp::Qmp;
use virtest_qmp::outgoing::{Outgoing, OutgoingError, Target, UNCAPPED_BANDWIDTH};
use virtest_remote::SshSession;

use crate::config::VmConfig;
use crate::disks::VmDisks;
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::instance::Instance;

/// How a VM's QEMU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootMode {
    /// Boot the guest.
    #[default]
    Fresh,
    /// Restore a ready snapshot of the guest, made by this start when
    /// there is none; boot where a snapshot cannot serve.
    Snapshot,
}

impl BootMode {
    /// The names `boot` takes.
    pub const NAMES: [&str; 2] = ["snapshot", "fresh"];

    /// The mode named `name`.
    pub fn parse(name: &str) -> Option<BootMode> {
        match name {
            "fresh" => Some(BootMode::Fresh),
            "snapshot" => Some(BootMode::Snapshot),
            _ => None,
        }
    }
}

/// How a VM's last `power_on` started it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// Not powered on yet.
    #[default]
    NotStarted,
    /// Booted; with why, when a snapshot was asked for but none can
    /// serve this VM.
    Fresh {
        /// Why no snapshot serves.
        why_not_snapshot: Option<String>,
    },
    /// Booted because its snapshot failed: the store cannot be written,
    /// saving failed, or QEMU refused the snapshot (then removed).
    SnapshotFailed {
        /// What failed.
        why: String,
    },
    /// Booted, saved as a ready snapshot, and restored from it.
    MadeSnapshot {
        /// The snapshot's key.
        key: String,
    },
    /// Restored from a snapshot made before.
    FromSnapshot {
        /// The snapshot's key.
        key: String,
    },
}

impl Start {
    /// Whether the VM runs from a ready snapshot's state (one it made,
    /// or one made before), rather than from a boot.
    ///
    /// ```
    /// use virtest_vm::Start;
    /// assert!(Start::FromSnapshot { key: "k".into() }.is_restored());
    /// assert!(!Start::Fresh { why_not_snapshot: None }.is_restored());
    /// ```
    pub fn is_restored(&self) -> bool {
        matches!(
            self,
            Start::MadeSnapshot { .. } | Start::FromSnapshot { .. }
        )
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::NotStarted => f.write_str("not started"),
            Start::Fresh {
                why_not_snapshot: None,
            } => f.write_str("fresh"),
            Start::Fresh {
                why_not_snapshot: Some(why),
            } => write!(f, "fresh ({why})"),
            Start::SnapshotFailed { why } => write!(f, "fresh, its snapshot failed: {why}"),
            Start::MadeSnapshot { key } => write!(f, "made snapshot {key}"),
            Start::FromSnapshot { key } => write!(f, "from snapshot {key}"),
        }
    }
}

/// Why a snapshot cannot serve a VM of `guest`, if it cannot: a
/// cloud-init guest whose seed carries a password (the password would
/// shape the snapshot's key, which reports show).
pub(crate) fn unsupported(guest: &GuestDescription, seed_password: bool) -> Option<&'static str> {
    (guest.cloud_init.enabled && seed_password).then_some(
        "a cloud-init guest logging in with a password has no ready snapshot (the password would shape its key)",
    )
}

/// The key of the snapshot a VM of `config` would start from: the
/// guest-visible command line (its host endpoints, network segments and
/// shared folders' paths blanked), the QEMU binary and its version, the
/// guest's files, and the state's format.
pub(crate) fn key(
    config: &VmConfig,
    qemu: &Probe,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    disks: Option<&VmDisks>,
    seed: Option<&Seed>,
) -> Result<SnapshotKey> {
    let (guest, format) = (&config.guest, config.snapshot_format);
    let mut template = launch(&Endpoints {
        qmp_socket: PathBuf::from("<qmp>"),
        console_socket: PathBuf::from("<console>"),
        agent_socket: PathBuf::from("<agent>"),
        tpm_socket: PathBuf::from("<tpm>"),
        generation: 0,
        forwards: Vec::new(),
    })
    .display();
    if let Some(disks) = disks {
        template = template.replace(&*disks.dir().to_string_lossy(), "<disks>");
    }
    for share in &config.shares {
        template = template.replace(
            &format!("path={}", share.path.display()),
            &format!("path=<share {}>", share.tag),
        );
    }
    for nic in &config.networks {
        template = template.replace(
            &format!("mcast={}", nic.segment),
            &format!("mcast=<{}>", nic.network),
        );
    }
    let mut files: Vec<&Path> = vec![&qemu.path];
    if let Some(kernel) = &guest.boot.kernel {
        files.push(&kernel.kernel);
        files.extend(kernel.initrd.as_deref());
    }
    files.extend(disks.iter().flat_map(|d| d.sources()).map(PathBuf::as_path));
    let mut material = vec![
        format!("qemu: {}", qemu.version_line),
        format!("command line: {template}"),
    ];
    // A stream's key is as it was before there was a choice.
    if format != StateFormat::Stream {
        material.push(format!("state: {}", format.as_str()));
    }
    if let Some(seed) = seed {
        material.push(format!(
            "cloud-init: user {}, keys {}",
            seed.user,
            seed.authorized_keys.join(" | ")
        ));
        files.extend(seed.user_data.iter().map(PathBuf::as_path));
    }
    let inputs = files
        .into_iter()
        .map(FileStamp::of)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Guest {
            guest: guest.path.clone(),
            source,
        })?;
    Ok(SnapshotKey {
        guest: guest.name.clone(),
        material,
        inputs,
    })
}

/// The name QEMU knows the snapshot's state descriptor by.
const STATE_FD: &str = "snapshot-state";

/// How long saving a ready guest may take: its RAM, written to a local
/// file, takes about a second under TCG.
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Saves the guest's state into `state`: stopped, then migrated into
/// the file through a descriptor QEMU gets over QMP, so the file is
/// whole when QEMU says the migration completed; laid out as `format`
/// says (mapped-ram only where the QEMU offers it).
pub(crate) async fn save(
    qmp: &Qmp,
    state: &Path,
    format: StateFormat,
) -> std::result::Result<SavedState, String> {
    let began = Instant::now();
    let qmp_error = |step: &str, e: virtest_qmp::Error| format!("saving the guest ({step}): {e}");
    if format == StateFormat::MappedRam {
        match offers_mapped_ram(qmp).await {
            Ok(true) => {}
            Ok(false) => {
                let (major, minor, micro) = qmp.greeting().version;
                return Err(format!(
                    "QEMU {major}.{minor}.{micro} offers no `mapped-ram` capability (9.0 on), \
                     which a mapped-ram snapshot needs"
                ));
            }
            Err(e) => return Err(qmp_error("query-migrate-capabilities", e)),
        }
    }
    let file =
        std::fs::File::create(state).map_err(|e| format!("creating `{}`: {e}", state.display()))?;
    set_state_format(qmp, format)
        .await
        .map_err(|e| qmp_error("migrate-set-capabilities", e))?;
    let uncapped = MigrateSetParameters {
        max_bandwidth: Some(UNCAPPED_BANDWIDTH),
        ..MigrateSetParameters::default()
    };
    qmp.execute(migrate_set_parameters(uncapped))
        .await
        .map_err(|e| qmp_error("migrate-set-parameters", e))?;
    qmp.execute(stop {})
        .await
        .map_err(|e| qmp_error("stop", e))?;
    let saving = match format {
        StateFormat::Stream => Outgoing::start(qmp, Target::Fd(file.as_fd())).await,
        StateFormat::MappedRam => {
            let uri = pass_as_fdset(qmp, &file)
                .await
                .map_err(|e| qmp_error("add-fd", e))?;
            Outgoing::start(qmp, Target::Uri(&uri)).await
        }
    };
    drop(file);
    let failed = |e: OutgoingError| {
        let full = disk_full(state).unwrap_or_default();
        format!(
            "saving the guest into `{}` failed: {full}{}",
            state.display(),
            error_chain(&e)
        )
    };
    saving
        .map_err(failed)?
        .finish(SAVE_TIMEOUT)
        .await
        .map_err(failed)?;
    Ok(SavedState {
        format,
        took: began.elapsed(),
    })
}

/// The fd set a mapped-ram state file is passed in.
const STATE_FDSET: u64 = 7;

/// Passes `file` to QEMU in an fd set (`add-fd`), and returns the `file:`
/// URI that names it: mapped-ram writes and reads at each page's offset,
/// which QEMU does only in a file it opens (an `fd:` is a stream to it).
async fn pass_as_fdset(qmp: &Qmp, file: &std::fs::File) -> virtest_qmp::Result<String> {
    qmp.execute_with_fd("add-fd", json!({ "fdset-id": STATE_FDSET }), file.as_fd())
        .await?;
    Ok(format!("file:/dev/fdset/{STATE_FDSET}"))
}

/// Whether the QEMU has the `mapped-ram` capability.
async fn offers_mapped_ram(qmp: &Qmp) -> virtest_qmp::Result<bool> {
    let capabilities = qmp
        .execute_raw("query-migrate-capabilities", Value::Null)
        .await?;
    Ok(capabilities
        .as_array()
        .is_some_and(|list| list.iter().any(|c| c["capability"] == "mapped-ram")))
}

/// Tells the QEMU which format the state file has (or gets): `mapped-ram`
/// on for [`StateFormat::MappedRam`]. A stream needs nothing.
async fn set_state_format(qmp: &Qmp, format: StateFormat) -> virtest_qmp::Result<()> {
    if format == StateFormat::MappedRam {
        let on = json!({ "capabilities": [{ "capability": "mapped-ram", "state": true }] });
        qmp.execute_raw("migrate-set-capabilities", on).await?;
    }
    Ok(())
}

/// "no space left on the disk holding `DIR` (N KiB free): " when the
/// disk `path` is on is all but full, which QEMU may not say.
fn disk_full(path: &Path) -> Option<String> {
    const NEARLY_FULL: u64 = 1 << 20;
    let dir = path.parent()?;
    let stat = rustix::fs::statvfs(dir).ok()?;
    let free = stat.f_bavail * stat.f_frsize;
    (free < NEARLY_FULL).then(|| {
        format!(
            "no space left on the disk holding `{}` ({} KiB free): ",
            dir.display(),
            free >> 10
        )
    })
}

/// Loads `state` into `instance`, a QEMU started with `-incoming defer`,
/// and waits (at most `deadline`) until the guest runs.
pub(crate) async fn load(
    instance: Instance,
    state: std::fs::File,
    format: StateFormat,
    deadline: Duration,
) -> Result<Instance> {
    let began = Instant::now();
    let qmp = instance.qmp().clone();
    let qmp_error = |step: &'static str| {
        move |source| Error::Qmp {
            step: step.into(),
            source,
        }
    };
    set_state_format(&qmp, format).await.map_err(qmp_error(
        "telling the state's format (`migrate-set-capabilities`)",
    ))?;
    let uri = match format {
        StateFormat::Stream => {
            qmp.execute_with_fd("getfd", json!({ "fdname": STATE_FD }), state.as_fd())
                .await
                .map_err(qmp_error("passing the snapshot's state (`getfd`)"))?;
            format!("fd:{STATE_FD}")
        }
        StateFormat::MappedRam => pass_as_fdset(&qmp, &state)
            .await
            .map_err(qmp_error("passing the snapshot's state (`add-fd`)"))?,
    };
    // QEMU reads its own copy of the descriptor.
    drop(state);
    let incoming = migrate_incoming {
        uri: Some(uri),
        channels: None,
        exit_on_error: None,
    };
    qmp.execute(incoming)
        .await
        .map_err(qmp_error("`migrate-incoming` from the snapshot's state"))?;
    loop {
        let status = tokio::select! {
            status = qmp.execute(query_status {}) => status.map_err(|source| Error::Qmp {
                step: "`query-status` while restoring".into(),
                source,
            })?,
            status = instance.exited() => {
                return Err(instance.exit_error(status, "while restoring the snapshot"));
            }
        };
        match status.status {
            RunState::running => return Ok(instance),
            RunState::paused | RunState::postmigrate => {
                qmp.execute(cont {}).await.map_err(|source| Error::Qmp {
                    step: "`cont` after restoring".into(),
                    source,
                })?;
                return Ok(instance);
            }
            RunState::inmigrate if began.elapsed() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => {
                return Err(Error::State {
                    what: format!(
                        "the restored VM is `{}` after {:?}, not running",
                        other.name(),
                        began.elapsed()
                    ),
                });
            }
        }
    }
}

/// What a clone must not share with its siblings, refreshed over the
/// first session: host entropy into the guest's pool, and the clock.
pub(crate) async fn refresh(session: &SshSession) -> Result<()> {
    let failed = |e: virtest_remote::Error| Error::State {
        what: format!(
            "refreshing the restored guest's entropy and clock failed: {}",
            error_chain(&e)
        ),
    };
    let entropy: [u8; 64] = crate::dirs::random();
    let escaped: String = entropy.iter().map(|b| format!("\\{b:03o}")).collect();
    // The clock is set to the host's time plus the one-way latency of a
    // command, measured just before: under load a command reaches the
    // guest a good part of a second after it is sent.
    let sent = Instant::now();
    session.run("true").await.map_err(failed)?;
    let one_way = sent.elapsed() / 2;
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + one_way;
    let (seconds, nanos) = (at.as_secs(), at.subsec_nanos());
    // GNU date takes fractions; busybox's only whole seconds (rounded).
    let rounded = (at + Duration::from_millis(500)).as_secs();
    let command = format!(
        "printf '{escaped}' > /dev/urandom && \
         {{ date -u -s @{seconds}.{nanos:09} || date -u -s @{rounded}; }} > /dev/null 2>&1"
    );
    session.run(&command).await.map(drop).map_err(failed)
}

/// An error with its sources, on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_says_how_the_vm_began() {
        let key = "0123456789abcdef".to_string();
        assert_eq!(
            Start::MadeSnapshot { key: key.clone() }.to_string(),
            "made snapshot 0123456789abcdef"
        );
        assert_eq!(
            Start::FromSnapshot { key }.to_string(),
            "from snapshot 0123456789abcdef"
        );
        let fresh = Start::Fresh {
            why_not_snapshot: Some("boot=fresh".into()),
        };
        assert_eq!(fresh.to_string(), "fresh (boot=fresh)");
        assert_eq!(BootMode::parse("snapshot"), Some(BootMode::Snapshot));
        assert_eq!(BootMode::parse("sometimes"), None);
    }

    #[test]
    fn only_a_password_in_a_cloud_init_seed_keeps_a_guest_from_snapshots() {
        let guest = |text: &str| {
            GuestDescription::parse(text, Path::new("/guests/g/guest.toml"))
                .unwrap()
                .0
        };
        let login = "[login]\nuser = \"root\"\npassword = \"pw\"\n";
        let kernel = format!("[boot]\nkernel = \"vmlinux\"\n{login}");
        assert_eq!(unsupported(&guest(&kernel), true), None);
        let disk = format!("[[disks]]\npath = \"disk.qcow2\"\n{login}");
        assert_eq!(unsupported(&guest(&disk), true), None);
        let cloud = format!("{disk}[cloud_init]\nenabled = true\n");
        assert_eq!(unsupported(&guest(&cloud), false), None);
        assert!(
            unsupported(&guest(&cloud), true)
                .unwrap()
                .contains("password")
        );
    }
}
