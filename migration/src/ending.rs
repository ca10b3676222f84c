//! How a migration ends: on success, the destination checked to run the
//! guest, the source's final figures read and the old source retired; on
//! a failure, the source made to run as it did before.

use std::time::{Duration, Instant};

use qapi::Enum;
use qapi::qmp::{
    MigrationInfo, MigrationStatus, RunState, cont, migrate_cancel, query_migrate, query_status,
    quit,
};
use serde_json::Value;
use virtest_qmp::Qmp;
use virtest_vm::{Instance, Vm, VmState};

use crate::error::{Error, Result};

/// Checks the destination runs the guest (when the source did).
pub(crate) async fn destination_runs(
    destination: &Instance,
    source_state: &VmState,
    since: virtest_qmp::EventCursor,
) -> Result<()> {
    if *source_state != VmState::Running {
        return Ok(());
    }
    let qmp = destination.qmp();
    let failed = |step: &str| {
        let step = step.to_string();
        move |source| Error::Qmp {
            side: "destination",
            step,
            source,
        }
    };
    qmp.wait_event(since, "RESUME", &Value::Null, Duration::from_secs(10))
        .await
        .map_err(failed("waiting for the guest to resume"))?;
    let status = qmp
        .execute(query_status {})
        .await
        .map_err(failed("`query-status`"))?;
    if status.status != RunState::running {
        return Err(Error::NotRunning {
            state: status.status.name().to_string(),
        });
    }
    Ok(())
}

/// How long recovering the source after a failed migration may take, all
/// its QMP calls together.
pub(crate) const RECOVERY: Duration = Duration::from_secs(10);

/// After a failed migration: cancels what may still run, kills the
/// destination, and makes sure the source runs as before, all within
/// `budget`. Returns `error`, told whether the source was seen running.
pub(crate) async fn recover_source(
    vm: &Vm,
    destination: Instance,
    source_state: VmState,
    error: Error,
    budget: Duration,
) -> Error {
    if matches!(error, Error::SourceDied { .. }) {
        return error;
    }
    let Ok(qmp) = vm.qmp() else {
        return error;
    };
    let deadline = Instant::now() + budget;
    let within = || {
        deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(2))
    };
    let _ = qmp.execute_within(migrate_cancel {}, within()).await;
    // Killed once the source is cancelling: killed first, it made the
    // source fail the migration before the cancel came.
    drop(destination);
    // Cancelling takes effect asynchronously.
    while Instant::now() < deadline {
        let info = qmp.execute_within(query_migrate {}, within()).await;
        match info.map(|info| info.status) {
            Ok(Some(
                MigrationStatus::setup
                | MigrationStatus::active
                | MigrationStatus::cancelling
                | MigrationStatus::device
                | MigrationStatus::pre_switchover,
            )) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => break,
            // Not answering: stop asking.
            Err(_) => break,
        }
    }
    let status = async || {
        let query = qmp.execute_within(query_status {}, within());
        query.await.ok().map(|status| status.status)
    };
    let mut state = status().await;
    if source_state == VmState::Running && state.is_some_and(|s| s != RunState::running) {
        tracing::info!(?state, "resuming the source after the failed migration");
        let _ = qmp.execute_within(cont {}, within()).await;
        state = status().await;
    }
    let answered = state.is_some();
    match error {
        Error::Timeout {
            after, last_status, ..
        } => Error::Timeout {
            after,
            last_status,
            source_answers: answered,
        },
        other => other,
    }
}

/// `query-migrate` on the completed source, re-asked while QEMU's totals
/// still read 0.
pub(crate) async fn final_figures(qmp: &Qmp) -> Result<MigrationInfo> {
    let mut tries = 0;
    loop {
        let info = qmp
            .execute(query_migrate {})
            .await
            .map_err(|source| Error::Qmp {
                side: "source",
                step: "`query-migrate`".into(),
                source,
            })?;
        tries += 1;
        let totalled = info.status == Some(MigrationStatus::completed)
            && info.total_time.is_some_and(|ms| ms > 0);
        if totalled || tries == 100 {
            return Ok(info);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ends the old source: `quit`, then the kill of its drop.
pub(crate) async fn retire(old: Instance) {
    let quick = Duration::from_secs(2);
    let _ = old.qmp().execute_within(quit {}, quick).await;
    if old.wait_exit(Duration::from_secs(3)).await.is_none() {
        tracing::warn!(pid = old.pid(), "the old source did not quit; killing it");
    }
}
