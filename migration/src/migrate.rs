//! `vm.migrate(mode)`: a destination from the source's command line, the
//! migration followed through QEMU's events, and the handover.

use std::time::{Duration, Instant};

use qapi::Enum;
use qapi::qmp::{
    MigrationStatus, migrate_cancel, migrate_continue, migrate_pause, migrate_start_postcopy,
    query_migrate,
};
use serde_json::Value;
use tracing::Instrument;
use virtest_host::Host;
use virtest_qmp::outgoing::{Outgoing, OutgoingError, Target};
use virtest_vm::{Instance, Vm, VmState};

use crate::ending::{RECOVERY, destination_runs, final_figures, recover_source, retire};
use crate::error::{Error, Result};
use crate::mode::MigrationMode;
use crate::report::{MigrationReport, RamFigures, StatusChange};
use crate::schema::has_file_transport;
use crate::setup::{
    check_capabilities, check_destination_qemu, check_migratable, configure, qemus_and_machine,
    secure, typed_parameters,
};
use crate::spec::MigrationSpec;
use crate::storage::DiskCopy;
use crate::transport::{Transport, listen_address};

/// Live migration for [`Vm`]: after it returns, the same `vm` drives the
/// destination QEMU (QMP, console, forwarded port); call `login_remote`
/// again. On an error the source keeps running, still the VM's QEMU.
///
/// ```no_run
/// # async fn f(mut vm: virtest_vm::Vm) -> Result<(), Box<dyn std::error::Error>> {
/// use virtest_migration::{Migrate, MigrationMode};
/// let report = vm.migrate(MigrationMode::Tcp).await?;
/// println!("{} ms, downtime {} ms", report.total_time_ms, report.downtime_ms);
/// vm.login_remote().await?;
/// # Ok(()) }
/// ```
pub trait Migrate {
    /// Migrates over `mode`, with the rest of the VM's default spec (see
    /// [`Migrate::set_migration_defaults`]; unset, [`MigrationSpec::new`]:
    /// QEMU's defaults, but a 60 s timeout and no bandwidth cap).
    fn migrate(
        &mut self,
        mode: MigrationMode,
    ) -> impl Future<Output = Result<MigrationReport>> + Send;

    /// Migrates over `mode` to `host`, with the rest of the VM's default
    /// spec: the same `vm` then drives QEMU there, and can move back.
    ///
    /// ```no_run
    /// # async fn f(mut vm: virtest_vm::Vm, lab: virtest_host::Lab) -> Result<(), Box<dyn std::error::Error>> {
    /// use virtest_migration::{Migrate, MigrationMode};
    /// let b = lab.add_host("b").await?;
    /// vm.migrate_to(&b, MigrationMode::Tcp).await?;
    /// vm.login_remote().await?;
    /// # Ok(()) }
    /// ```
    fn migrate_to(
        &mut self,
        host: &Host,
        mode: MigrationMode,
    ) -> impl Future<Output = Result<MigrationReport>> + Send;

    /// Migrates as `spec` says.
    fn migrate_with(
        &mut self,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<MigrationReport>> + Send;

    /// Makes `spec` (its mode aside) what every later `migrate(mode)` of
    /// this VM uses: a test runner sets the timeout, bandwidth and
    /// destination binary from its parameters this way.
    ///
    /// ```no_run
    /// # async fn f(mut vm: virtest_vm::Vm) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use virtest_migration::{Migrate, MigrationMode, MigrationSpec};
    /// let mut defaults = MigrationSpec::new(MigrationMode::Tcp);
    /// defaults.timeout = Duration::from_secs(120);
    /// vm.set_migration_defaults(defaults);
    /// vm.migrate(MigrationMode::Unix).await?; // over unix, within 120 s
    /// # Ok(()) }
    /// ```
    fn set_migration_defaults(&mut self, spec: MigrationSpec);

    /// The spec `migrate(mode)` uses, its mode aside: the one
    /// [`Migrate::set_migration_defaults`] set, else [`MigrationSpec::new`].
    fn migration_defaults(&self) -> MigrationSpec;
}

/// A VM's default spec, kept in its extensions.
struct Defaults(MigrationSpec);

impl Migrate for Vm {
    async fn migrate(&mut self, mode: MigrationMode) -> Result<MigrationReport> {
        let mut spec = self.migration_defaults();
        spec.mode = mode;
        self.migrate_with(&spec).await
    }

    async fn migrate_to(&mut self, host: &Host, mode: MigrationMode) -> Result<MigrationReport> {
        let mut spec = self.migration_defaults();
        spec.mode = mode;
        spec.to = Some(host.clone());
        self.migrate_with(&spec).await
    }

    fn migration_defaults(&self) -> MigrationSpec {
        match self.extensions().get::<Defaults>() {
            Some(Defaults(spec)) => spec.clone(),
            None => MigrationSpec::new(MigrationMode::Tcp),
        }
    }

    async fn migrate_with(&mut self, spec: &MigrationSpec) -> Result<MigrationReport> {
        let span = tracing::info_span!(
            parent: self.span(),
            "migrate",
            mode = %spec.mode,
            phase = "migrating"
        );
        migrate(self, spec).instrument(span).await
    }

    fn set_migration_defaults(&mut self, spec: MigrationSpec) {
        self.extensions_mut().insert(Defaults(spec));
    }
}

async fn migrate(vm: &mut Vm, spec: &MigrationSpec) -> Result<MigrationReport> {
    spec.validate()?;
    check_migratable(vm)?;
    if let Some(binary) = &spec.destination_qemu {
        let guest = &vm.config().guest;
        check_destination_qemu(binary, &guest.machine.machine_type, guest.arch).await?;
    }
    let ended = |exit| {
        Error::Source(virtest_vm::Error::QemuEnded {
            action: "migrate".into(),
            exit,
        })
    };
    let source_state = match vm.state().await {
        Ok(VmState::Off) if let Some(exit) = vm.qemu_exit() => return Err(ended(exit)),
        Ok(state) => state,
        Err(virtest_vm::Error::QemuEnded { exit, .. }) => return Err(ended(exit)),
        Err(e) => return Err(Error::Source(e)),
    };
    if spec.wait_for_boot && source_state == VmState::Running {
        let deadline = vm.config().login_timeout;
        vm.within(deadline)
            .wait_ready()
            .await
            .map_err(Error::Source)?;
    }
    let wall = Instant::now();
    if !matches!(source_state, VmState::Running | VmState::Paused) {
        return Err(Error::Spec(format!(
            "the source VM must be running or paused to migrate, not {source_state:?}"
        )));
    }
    let to = spec.to.clone().unwrap_or_else(|| vm.host().clone());
    let listen = listen_address(vm.host(), &to, spec.mode)?;
    let source = vm.instance().map_err(Error::Source)?;
    let source_qmp = source.qmp().clone();
    let source_pid = source.pid();
    let source_cmdline = source.cmdline().clone();
    check_capabilities("source", &source_qmp, &spec.extra_capabilities).await?;
    let extra_parameters = typed_parameters(&source_qmp, &spec.extra_parameters).await?;
    let destination = vm
        .start_incoming_on(&to, "defer", spec.destination_qemu.as_deref())
        .await
        .map_err(Error::Destination)?;
    // From here on, dropping `destination` (on any error) kills it.
    let destination_qmp = destination.qmp().clone();
    check_capabilities("destination", &destination_qmp, &spec.extra_capabilities).await?;
    let (source_qemu, destination_qemu, machine_type) =
        qemus_and_machine(source_cmdline, destination.cmdline());
    let mut report = MigrationReport {
        mode: spec.mode,
        capabilities: spec.enabled_capabilities(),
        parameters: spec.set_parameters(),
        timeline: Vec::new(),
        total_time_ms: 0,
        downtime_ms: 0,
        setup_time_ms: 0,
        ram: RamFigures::default(),
        max_cpu_throttle_percentage: 0,
        throughput_mib_s: 0.0,
        wall_ms: 0.0,
        overhead_ms: 0.0,
        source_pid,
        destination_pid: destination.pid(),
        source_qemu,
        destination_qemu,
        machine_type,
        measurements: Default::default(),
        file: None,
    };
    // The faults of the links the stream crosses, for the report.
    for (side, host) in [("source", vm.host()), ("destination", &to)] {
        if let Some(link) = host.link().filter(|_| !to.same(vm.host())) {
            let figures = link.faults().figures(&format!("{side}_link"));
            report.measurements.extend(figures);
        }
    }
    configure(&source_qmp, &destination_qmp, spec, &extra_parameters).await?;
    let tls = secure(vm, &source_qmp, &destination_qmp, spec, &to).await?;
    if spec.mode == MigrationMode::File {
        for (side, qmp) in [("source", &source_qmp), ("destination", &destination_qmp)] {
            if !has_file_transport(qmp, side).await? {
                let (major, minor, micro) = qmp.greeting().version;
                return Err(Error::Unsupported {
                    side,
                    version: format!("{major}.{minor}.{micro}"),
                    what: "a migration to a file (`file:`, QEMU 8.2 on)".into(),
                });
            }
        }
    }
    // Sockets and FIFOs go where both QEMUs see them: their host's.
    let dir = destination
        .endpoints()
        .qmp_socket
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| vm.files().runtime_dir().to_path_buf());
    let mut transport = Transport::open(
        spec.mode,
        &dir,
        &listen,
        destination.pid(),
        &source_qmp,
        &destination_qmp,
    )
    .await?;
    if spec.pauses_postcopy() {
        transport
            .prepare_recovery(&source_qmp, &destination_qmp)
            .await?;
    }
    // Disks the destination does not see are copied before RAM moves.
    let mut copy = match destination.disks_to_fill() {
        [] => None,
        drives => {
            let left = spec.timeout.saturating_sub(wall.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    after: spec.timeout,
                    last_status: "none yet: the destination's files were still being copied".into(),
                    source_answers: true,
                });
            }
            let (source, destination) = (&source_qmp, &destination_qmp);
            Some(DiskCopy::start(source, destination, &listen, drives, tls.as_ref(), left).await?)
        }
    };
    let destination_events = destination_qmp.event_cursor();
    let outcome = follow(
        vm,
        &destination,
        spec,
        &mut transport,
        &mut copy,
        wall,
        &mut report,
    )
    .await;
    drop(transport);
    if let Some(copy) = copy.filter(|_| outcome.is_err()) {
        copy.abandon(&source_qmp, &destination_qmp).await;
    }
    let handed_over = match outcome {
        Ok(()) => destination_runs(&destination, &source_state, destination_events).await,
        Err(error) => Err(error),
    };
    if let Err(error) = handed_over {
        return Err(recover_source(vm, destination, source_state, error, RECOVERY).await);
    }
    report.take_figures(&final_figures(&source_qmp).await?);
    if let Some(load) = report.measurements.get("file_load_ms") {
        report.downtime_ms += load.round() as u64;
    }
    let old = vm.hand_over(destination);
    if let Some(old) = old {
        retire(old).await;
    }
    report.wall_ms = millis(wall.elapsed());
    report.overhead_ms = millis(
        wall.elapsed()
            .saturating_sub(Duration::from_millis(report.total_time_ms)),
    );
    if let Err(source) = report.save(vm.files().log_dir()) {
        tracing::error!(error = %source, "the migration report could not be saved");
        return Err(Error::ReportNotSaved {
            dir: vm.files().log_dir().to_path_buf(),
            report: Box::new(report),
            source,
        });
    }
    tracing::info!(
        total_ms = report.total_time_ms,
        downtime_ms = report.downtime_ms,
        wall_ms = report.wall_ms,
        "migrated"
    );
    Ok(report)
}

/// Starts the migration on the source and follows its MIGRATION events
/// until it completes, fails, a QEMU dies, or the timeout passes.
async fn follow(
    vm: &Vm,
    destination: &Instance,
    spec: &MigrationSpec,
    transport: &mut Transport,
    copy: &mut Option<DiskCopy>,
    wall: Instant,
    report: &mut MigrationReport,
) -> Result<()> {
    let source = vm.instance().map_err(Error::Source)?;
    let qmp = source.qmp();
    let destination_events = destination.qmp().event_cursor();
    let mut outgoing = Outgoing::start(qmp, Target::Uri(&transport.source_uri))
        .await
        .map_err(source_error)?;
    let deadline = tokio::time::Instant::from_std(wall) + spec.timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut switched = false;
    let mut cancelled = false;
    let mut paused = false;
    let mut cut: Option<tokio::task::JoinHandle<_>> = None;
    let pauses = spec.pauses_postcopy();
    // Only for the progress display: statuses come from the events.
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = progress.tick() => {
                // Bounded: a source that stopped answering must not hold
                // this loop past its deadline.
                let query = qmp.execute_within(query_migrate {}, left().min(PROGRESS_QUERY));
                if let Ok(info) = query.await {
                    let throttle = info.cpu_throttle_percentage.unwrap_or(0).max(0) as u64;
                    report.max_cpu_throttle_percentage = report.max_cpu_throttle_percentage.max(throttle);
                    if let Some(ram) = info.ram.filter(|ram| ram.total > 0) {
                        let done = 100.0 * (ram.total - ram.remaining.min(ram.total)) as f64 / ram.total as f64;
                        tracing::debug!(progress = done, "migration progress");
                    }
                }
            }
            status = outgoing.next_status() => {
                let status = match status {
                    Ok(status) => status,
                    // QMP closes as QEMU exits: name the exit, not the
                    // socket.
                    Err(error) => match source.wait_exit(Duration::from_secs(2)).await {
                        Some(status) => return Err(Error::SourceDied { status }),
                        None => return Err(Error::Qmp {
                            side: "source",
                            step: "following the migration".into(),
                            source: error,
                        }),
                    },
                };
                report.timeline.push(StatusChange {
                    status: status.name().to_string(),
                    at_ms: millis(wall.elapsed()),
                });
                tracing::debug!(status = status.name(), "migration status");
                match status {
                    MigrationStatus::completed if pauses && !paused => {
                        return Err(Error::Failed {
                            status: status.name().to_string(),
                            reason: "it completed before postcopy began, so it was not paused \
                                     and recovered as asked"
                                .into(),
                        });
                    }
                    MigrationStatus::completed if transport.is_deferred() => {
                        // The file is whole: the destination reads it.
                        let reading = Instant::now();
                        load_deferred(destination, transport, left()).await?;
                        report.measurements.insert("file_load_ms".into(), millis(reading.elapsed()));
                        return Ok(());
                    }
                    MigrationStatus::completed => return Ok(()),
                    MigrationStatus::cancelled if let Some(after) = spec.cancel_after.filter(|_| cancelled) => {
                        return Err(Error::Cancelled { after });
                    }
                    _ if spec.cancel_after.is_some_and(|point| point.status() == status) && !cancelled => {
                        cancelled = true;
                        qmp.execute_within(migrate_cancel {}, left())
                            .await
                            .map_err(qmp_failed("source", "`migrate-cancel`"))?;
                    }
                    MigrationStatus::pre_switchover if !cancelled => {
                        // `pause-before-switchover`, turned on to end the
                        // disks' copy with the source stopped, to cancel
                        // in time, or by the spec: go on.
                        if let Some(copy) = copy {
                            let figures = copy.complete(qmp, destination.qmp(), left()).await?;
                            report.measurements.extend(figures);
                        }
                        let command = migrate_continue { state: MigrationStatus::pre_switchover };
                        qmp.execute_within(command, left())
                            .await
                            .map_err(qmp_failed("source", "`migrate-continue`"))?;
                    }
                    MigrationStatus::postcopy_active if pauses && !paused => {
                        paused = true;
                        // Postcopy has begun once the guest runs on the
                        // destination; before, a pause loses the stream.
                        destination
                            .qmp()
                            .wait_event(destination_events, "RESUME", &Value::Null, left())
                            .await
                            .map_err(qmp_failed("destination", "waiting for the guest to resume in postcopy"))?;
                        if let Some(link_cut) = &spec.cut_link {
                            cut = Some(link_cut.link.cut_for(link_cut.down_for));
                        }
                        qmp.execute_within(migrate_pause {}, left())
                            .await
                            .map_err(qmp_failed("source", "`migrate-pause`"))?;
                    }
                    MigrationStatus::postcopy_paused if pauses => {
                        // From its event: its main loop, which answers
                        // `query-migrate`, may wait for a missing page.
                        let destination_qmp = destination.qmp();
                        let paused = serde_json::json!({ "status": "postcopy-paused" });
                        destination_qmp
                            .wait_event(destination_events, "MIGRATION", &paused, left())
                            .await
                            .map_err(qmp_failed("destination", "waiting for postcopy to pause"))?;
                        let uri = transport.recover(destination_qmp).await?;
                        outgoing.resume(&uri).await.map_err(source_error)?;
                        // Recovered: the rest of the copy at full speed,
                        // unless the spec set its own pace.
                        let own_pace = spec.extra_parameters.iter().any(|(name, _)| name == "max-postcopy-bandwidth");
                        if !own_pace {
                            let uncapped = serde_json::json!({ "max-postcopy-bandwidth": 0 });
                            qmp.execute_raw_within("migrate-set-parameters", uncapped, left())
                                .await
                                .map_err(qmp_failed("source", "`migrate-set-parameters` (uncapping postcopy)"))?;
                        }
                    }
                    MigrationStatus::failed | MigrationStatus::cancelled => {
                        let reason = outgoing.failure_reason().await;
                        // A destination that refused the stream says why
                        // (over QMP and in its log, or in its log as it
                        // exits); the source saw only its socket close.
                        if transport.destination_stays_up
                            && let Some(said) = destination_failure(destination).await
                        {
                            return Err(Error::destination_failed(said, destination.output_tail(), reason));
                        }
                        if let Some(status) = destination.wait_exit(DESTINATION_EXIT).await {
                            return Err(Error::destination_died(status, destination.output_tail(), Some(reason)));
                        }
                        return Err(Error::Failed { status: status.name().to_string(), reason });
                    }
                    MigrationStatus::active if cut.is_none() && !spec.postcopy && let Some(link_cut) = &spec.cut_link => {
                        cut = Some(link_cut.link.cut_for(link_cut.down_for));
                    }
                    MigrationStatus::active if spec.postcopy && !switched => {
                        switched = true;
                        qmp.execute_within(migrate_start_postcopy {}, left())
                            .await
                            .map_err(qmp_failed("source", "`migrate-start-postcopy`"))?;
                    }
                    _ => {}
                }
            }
            // A cancelled migration's destination exits (7.2 does): the
            // source's `cancelled` is what ends it then.
            status = destination.exited(), if !cancelled => {
                return Err(Error::destination_died(status, destination.output_tail(), None));
            }
            status = source.exited() => return Err(Error::SourceDied { status }),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout { after: spec.timeout, last_status: outgoing.last_status().name().to_string(), source_answers: true });
            }
        }
    }
}

/// A destination that stays up after a failed incoming migration: its
/// `error-desc`, once its status is `failed` (within
/// [`DESTINATION_EXIT`]); `None` when it did not fail or does not answer.
async fn destination_failure(destination: &Instance) -> Option<String> {
    let deadline = Instant::now() + DESTINATION_EXIT;
    while Instant::now() < deadline {
        let info = destination
            .qmp()
            .execute_within(query_migrate {}, DESTINATION_EXIT)
            .await
            .ok()?;
        if info.status == Some(MigrationStatus::failed) {
            return Some(
                info.error_desc
                    .unwrap_or_else(|| "QEMU gave no reason".into()),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Starts the destination reading a migration the source has finished
/// writing, and follows its `MIGRATION` events until it completes, fails,
/// exits, or `within` passes.
async fn load_deferred(
    destination: &Instance,
    transport: &mut Transport,
    within: Duration,
) -> Result<()> {
    let qmp = destination.qmp();
    let mut events = qmp.subscribe();
    transport.start_deferred(qmp).await?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        tokio::select! {
            event = events.next() => {
                let event = event.map_err(qmp_failed("destination", "following the reading of the file"))?;
                let Some(qapi::qmp::Event::MIGRATION { data, .. }) = event.typed() else {
                    continue;
                };
                match data.status {
                    MigrationStatus::completed => return Ok(()),
                    MigrationStatus::failed => {
                        let said = destination_failure(destination).await.unwrap_or_else(|| "QEMU gave no reason".into());
                        return Err(Error::destination_failed(said, destination.output_tail(), "the whole state, written".into()));
                    }
                    _ => {}
                }
            }
            status = destination.exited() => {
                return Err(Error::destination_died(status, destination.output_tail(), None));
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout { after: within, last_status: "completed (the destination still reading)".into(), source_answers: true });
            }
        }
    }
}

/// Makes a QMP error of `side`'s `step`.
fn qmp_failed(side: &'static str, step: &str) -> impl FnOnce(virtest_qmp::Error) -> Error {
    let step = step.to_string();
    move |source| Error::Qmp { side, step, source }
}

/// The source's side of an outgoing migration gone wrong, in this
/// crate's terms.
fn source_error(error: OutgoingError) -> Error {
    match error {
        OutgoingError::Qmp { step, source } => Error::Qmp {
            side: "source",
            step,
            source,
        },
        OutgoingError::Failed { status, reason } => Error::Failed { status, reason },
        OutgoingError::Timeout { after, last_status } => Error::Timeout {
            after,
            last_status,
            source_answers: true,
        },
    }
}

/// How long a progress query may take.
const PROGRESS_QUERY: Duration = Duration::from_secs(2);

/// How long a failed migration's destination has to exit, or to say it
/// failed, when it refused the stream.
const DESTINATION_EXIT: Duration = Duration::from_secs(2);

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}
