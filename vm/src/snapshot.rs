//! Ready snapshots: a VM that starts from the saved state of a guest that
//! was ready, instead of booting. The first VM of a guest boots, is saved
//! once ready (QEMU's migration stream into a file of the cache) and is
//! restored from it; later VMs only restore. The store is
//! [`virtest_guest::snapshots`]; this module makes and restores.
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
use serde_json::json;
use virtest_guest::GuestDescription;
use virtest_guest::cloud_init::Seed;
use virtest_guest::description::Ready;
use virtest_guest::snapshots::{
    FileStamp, InUse, Lookup, PendingSnapshot, Snapshot, SnapshotKey, SnapshotStore,
};
use virtest_qemu_cmdline::QemuCmdline;
use virtest_qemu_cmdline::binary::Probe;
use virtest_qmp::Qmp;
use virtest_qmp::outgoing::{Outgoing, OutgoingError, Target, UNCAPPED_BANDWIDTH};
use virtest_remote::SshSession;

use crate::disks::VmDisks;
use crate::error::{Error, Result};
use crate::instance::{Endpoints, Instance};
use crate::network::NetworkNic;
use crate::vm::Vm;

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

/// The key of the snapshot a VM would start from: the guest-visible
/// command line (its host endpoints and network segments blanked), the
/// QEMU binary and its version, and the guest's files.
pub(crate) fn key(
    guest: &GuestDescription,
    qemu: &Probe,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    disks: Option<&VmDisks>,
    seed: Option<&Seed>,
    networks: &[NetworkNic],
) -> Result<SnapshotKey> {
    let mut template = launch(&Endpoints {
        qmp_socket: PathBuf::from("<qmp>"),
        console_socket: PathBuf::from("<console>"),
        agent_socket: PathBuf::from("<agent>"),
        generation: 0,
        forwards: Vec::new(),
    })
    .display();
    if let Some(disks) = disks {
        template = template.replace(&*disks.dir().to_string_lossy(), "<disks>");
    }
    for nic in networks {
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

/// Starts `vm`'s QEMU from the ready snapshot for `key`, making it first
/// when there is none. Where the snapshot fails (the store cannot be
/// written, saving or restoring fails), the guest boots from its own
/// disks made anew, and the reason is logged as a warning and returned in
/// [`Start::SnapshotFailed`]. An error is returned only for what a fresh boot
/// would fail on too (QEMU does not start, the guest never gets ready).
pub(crate) async fn start(
    vm: &mut Vm,
    store: &SnapshotStore,
    key: &SnapshotKey,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
) -> Result<(Instance, Start)> {
    let id = key.id();
    let found = find(store, key).await;
    let outcome = match found {
        Lookup::Found(snapshot) => match restore_checked(vm, launch, &snapshot, None).await {
            Restored::Started(instance) => {
                return Ok((*instance, Start::FromSnapshot { key: id }));
            }
            Restored::Damaged(reason) => {
                tracing::warn!(
                    key = id,
                    reason,
                    "a damaged snapshot was removed; making it again"
                );
                vm.recreate_disks().await?;
                make_and_restore(vm, store, key, launch).await?
            }
            Restored::Refused(why) => Err(why),
        },
        Lookup::Rejected { reason } => {
            tracing::warn!(
                key = id,
                reason,
                "a damaged snapshot was removed; making it again"
            );
            make_and_restore(vm, store, key, launch).await?
        }
        Lookup::Missing => make_and_restore(vm, store, key, launch).await?,
    };
    let why = match outcome {
        Ok(started) => return Ok(started),
        Err(why) => why,
    };
    tracing::warn!(key = id, "{why}; booting fresh");
    vm.recreate_disks().await?;
    let instance = vm.start_instance_with(launch).await?;
    Ok((instance, Start::SnapshotFailed { why }))
}

/// Finds `key`'s snapshot (reading its record and file sizes) off the
/// async threads.
async fn find(store: &SnapshotStore, key: &SnapshotKey) -> Lookup {
    let (store, key) = (store.clone(), key.clone());
    tokio::task::spawn_blocking(move || store.find(&key))
        .await
        .unwrap_or(Lookup::Missing)
}

/// What restoring a found snapshot came to.
enum Restored {
    /// The VM runs from it.
    Started(Box<Instance>),
    /// A file of it does not match its record; it was removed.
    Damaged(String),
    /// QEMU refused it; it was removed.
    Refused(String),
}

/// Restores from `snapshot`, checking its files' hashes while QEMU loads
/// the state: the VM is handed over only when both are done. A disk
/// guest's disks become the snapshot's first. `held` marks the snapshot in
/// use when the caller did (its maker); else it is marked here.
async fn restore_checked(
    vm: &mut Vm,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    snapshot: &Snapshot,
    held: Option<InUse>,
) -> Restored {
    let id = &snapshot.meta.key;
    // Held from here until QEMU has the state open, and as long as the
    // VM's disks are overlays over the snapshot's: prune leaves it.
    let held = match held {
        Some(held) => held,
        None => {
            let snapshot = snapshot.clone();
            match tokio::task::spawn_blocking(move || snapshot.hold()).await {
                Ok(Ok(held)) => held,
                Ok(Err(e)) => {
                    return Restored::Refused(format!("snapshot {id} cannot be used: {e}"));
                }
                Err(e) => return Restored::Refused(format!("snapshot {id} cannot be used: {e}")),
            }
        }
    };
    let state_path = snapshot.state();
    let state = match std::fs::File::open(&state_path) {
        Ok(state) => state,
        Err(e) => {
            return Restored::Refused(format!(
                "snapshot {id} cannot be used: its state `{}` cannot be opened: {e}",
                state_path.display()
            ));
        }
    };
    let verifying = {
        let snapshot = snapshot.clone();
        tokio::task::spawn_blocking(move || snapshot.verify().map_err(|e| e.to_string()))
    };
    let restored = match vm.adopt_disks(snapshot.dir(), held).await {
        Ok(()) => restore(vm, launch, state).await,
        Err(e) => Err(e),
    };
    let verified = verifying
        .await
        .unwrap_or_else(|e| Err(format!("checking it failed: {e}")));
    match (verified, restored) {
        (Ok(()), Ok(instance)) => Restored::Started(Box::new(instance)),
        (Err(reason), restored) => {
            drop(restored);
            snapshot.remove();
            Restored::Damaged(reason)
        }
        (Ok(()), Err(e)) => {
            snapshot.remove();
            Restored::Refused(format!(
                "restoring snapshot {id} failed, so it was removed: {e}"
            ))
        }
    }
}

/// Makes the snapshot under its lock (or finds that another VM made it
/// meanwhile) and restores from it. The inner error says why no snapshot
/// serves; the outer one is the guest failing to get ready.
async fn make_and_restore(
    vm: &mut Vm,
    store: &SnapshotStore,
    key: &SnapshotKey,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
) -> Result<std::result::Result<(Instance, Start), String>> {
    let id = key.id();
    let cannot_store = |e: &dyn std::error::Error| {
        format!(
            "no ready snapshot can be stored in `{}`: {}",
            store.root().display(),
            error_chain(e)
        )
    };
    let locking = {
        let (store, key) = (store.clone(), key.clone());
        tokio::task::spawn_blocking(move || store.lock(&key))
    };
    let _lock = match locking.await.expect("the lock task does not panic") {
        Ok(lock) => lock,
        Err(e) => return Ok(Err(cannot_store(&e))),
    };
    // Another VM may have made it while this one waited for the lock.
    let found = find(store, key).await;
    if let Lookup::Found(snapshot) = found {
        return Ok(match restore_checked(vm, launch, &snapshot, None).await {
            Restored::Started(instance) => Ok((*instance, Start::FromSnapshot { key: id })),
            Restored::Damaged(why) | Restored::Refused(why) => Err(why),
        });
    }
    let pending = match store.prepare(key) {
        Ok(pending) => pending,
        Err(e) => return Ok(Err(cannot_store(&e))),
    };
    let began = Instant::now();
    if let Err(why) = make(vm, launch, &pending).await? {
        return Ok(Err(why));
    }
    // In use from before it is in place, so that no prune comes between.
    let made = store
        .hold(key)
        .and_then(|held| Ok((pending.commit(store, began.elapsed())?, held)));
    let (snapshot, held) = match made {
        Ok(made) => made,
        Err(e) => return Ok(Err(cannot_store(&e))),
    };
    tracing::info!(
        key = id,
        size = snapshot.size(),
        elapsed = ?began.elapsed(),
        "made a ready snapshot"
    );
    Ok(
        match restore_checked(vm, launch, &snapshot, Some(held)).await {
            Restored::Started(instance) => Ok((*instance, Start::MadeSnapshot { key: id })),
            Restored::Damaged(why) | Restored::Refused(why) => Err(why),
        },
    )
}

/// Boots the guest as `vm`'s QEMU, waits until it is ready (as
/// `login_remote` would: its ready signal, and for a guest whose
/// readiness is its sshd, a login), saves it into the pending snapshot,
/// ends that QEMU, and moves the VM's disk state (overlays, seed, UEFI
/// variables) into the snapshot. The inner error says why saving failed.
async fn make(
    vm: &mut Vm,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    pending: &PendingSnapshot,
) -> Result<std::result::Result<(), String>> {
    let maker = vm.start_instance_with(launch).await?;
    tracing::debug!(pid = maker.pid(), "booting the guest to save it once ready");
    vm.hand_over(maker);
    let deadline = vm.config().login_timeout;
    match vm.config().guest.ready {
        Ready::Ssh => vm.login_remote_within(deadline).await.map(drop)?,
        Ready::Console(_) | Ready::CloudInit | Ready::Agent => {
            vm.wait_ready_to_log_in(deadline).await?
        }
    }
    let qmp = vm.qmp()?.clone();
    let saved = save(&qmp, &pending.state()).await;
    if let Some(maker) = vm.take_instance() {
        // Saved and stopped: nothing is lost by killing it.
        drop(maker);
    }
    if saved.is_ok()
        && let Err(e) = vm.freeze_disks_into(pending.dir())
    {
        return Ok(Err(format!(
            "the guest's disks could not be moved into `{}`: {e}",
            pending.dir().display()
        )));
    }
    Ok(saved)
}

/// The name QEMU knows the snapshot's state descriptor by.
const STATE_FD: &str = "snapshot-state";

/// How long saving a ready guest may take: its RAM, written to a local
/// file, takes about a second under TCG.
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Saves the guest's state into `state`: stopped, then migrated into
/// the file through a descriptor QEMU gets over QMP, so the file is
/// whole when QEMU says the migration completed.
async fn save(qmp: &Qmp, state: &Path) -> std::result::Result<(), String> {
    let file =
        std::fs::File::create(state).map_err(|e| format!("creating `{}`: {e}", state.display()))?;
    let qmp_error = |step: &str, e: virtest_qmp::Error| format!("saving the guest ({step}): {e}");
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
    let saving = Outgoing::start(qmp, Target::Fd(file.as_fd())).await;
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
        .map_err(failed)
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

/// Starts QEMU with the guest's command line, incoming from `state`, and
/// waits until the guest runs.
async fn restore(
    vm: &mut Vm,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    state: std::fs::File,
) -> Result<Instance> {
    let restoring =
        move |endpoints: &Endpoints| launch(endpoints).clone_for_incoming("defer", |e| e);
    let instance = vm.start_instance_with(&restoring).await?;
    let deadline = vm.config().start_timeout;
    let began = Instant::now();
    let qmp = instance.qmp().clone();
    let qmp_error = |step: &'static str| {
        move |source| Error::Qmp {
            step: step.into(),
            source,
        }
    };
    qmp.execute_with_fd("getfd", json!({ "fdname": STATE_FD }), state.as_fd())
        .await
        .map_err(qmp_error("passing the snapshot's state (`getfd`)"))?;
    // QEMU reads its own copy of the descriptor.
    drop(state);
    let incoming = migrate_incoming {
        uri: Some(format!("fd:{STATE_FD}")),
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
fn error_chain(error: &dyn std::error::Error) -> String {
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
