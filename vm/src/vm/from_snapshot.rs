//! A VM's start from its ready snapshot: found and restored, or made by
//! this start (booted, saved once ready) and then restored; a fresh boot
//! where no snapshot can serve. Saving and loading QEMU's state, and the
//! key, are `crate::snapshot`'s.

use std::time::Instant;

use virtest_guest::description::Ready;
use virtest_guest::snapshots::{
    InUse, Lookup, PendingSnapshot, SavedState, Snapshot, SnapshotKey, SnapshotStore, StateFormat,
};
use virtest_qemu_cmdline::QemuCmdline;

use super::Vm;
use crate::endpoints::Endpoints;
use crate::error::Result;
use crate::instance::Instance;
use crate::snapshot::{self, Start, error_chain};

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
    let instance = vm
        .start_instance_with(&vm.config().host.clone(), launch, vm.local_files(), false)
        .await?;
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
        Ok(()) => restore(vm, launch, state, snapshot.meta.state_format).await,
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
    let saved = match make(vm, launch, &pending).await? {
        Ok(saved) => saved,
        Err(why) => return Ok(Err(why)),
    };
    // In use from before it is in place, so that no prune comes between.
    let made = store
        .hold(key)
        .and_then(|held| Ok((pending.commit(store, began.elapsed(), saved)?, held)));
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
) -> Result<std::result::Result<SavedState, String>> {
    let maker = vm
        .start_instance_with(&vm.config().host.clone(), launch, vm.local_files(), false)
        .await?;
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
    let format = vm.config().snapshot_format;
    let saved = snapshot::save(&qmp, &pending.state(), format).await;
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

/// Starts QEMU with the guest's command line, incoming from `state` (laid
/// out as `format` says), and waits until the guest runs.
async fn restore(
    vm: &mut Vm,
    launch: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    state: std::fs::File,
    format: StateFormat,
) -> Result<Instance> {
    let restoring =
        move |endpoints: &Endpoints| launch(endpoints).clone_for_incoming("defer", |e| e);
    let instance = vm
        .start_instance_with(
            &vm.config().host.clone(),
            &restoring,
            vm.local_files(),
            false,
        )
        .await?;
    snapshot::load(instance, state, format, vm.config().start_timeout).await
}
