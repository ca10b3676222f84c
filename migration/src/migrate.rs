//! `vm.migrate(mode)`: a destination from the source's command line, the
//! migration followed through QEMU's events, and the handover.

use std::time::{Duration, Instant};

use qapi::Enum;
use qapi::qmp::{
    MigrateSetParameters, MigrationCapabilityStatus, MigrationInfo, MigrationStatus, RunState,
    cont, migrate_cancel, migrate_set_capabilities, migrate_set_parameters, migrate_start_postcopy,
    query_migrate, query_migrate_parameters, query_status, quit,
};
use serde_json::Value;
use tracing::Instrument;
use virtest_qemu_cmdline::binary;
use virtest_qemu_cmdline::{PropsOption, QemuCmdline};
use virtest_qmp::Qmp;
use virtest_qmp::outgoing::{Outgoing, OutgoingError, Target, UNCAPPED_BANDWIDTH};
use virtest_vm::{Instance, Vm, VmState};

use crate::error::{Error, Result};
use crate::mode::MigrationMode;
use crate::report::{MigrationReport, RamFigures, StatusChange};
use crate::spec::MigrationSpec;
use crate::tls::{self, Tls};
use crate::transport::Transport;

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
    if let Some(binary) = &spec.destination_qemu {
        check_destination_qemu(binary).await?;
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
    let source = vm.instance().map_err(Error::Source)?;
    let source_qmp = source.qmp().clone();
    let source_pid = source.pid();
    let source_cmdline = source.cmdline().clone();
    check_capabilities("source", &source_qmp, &spec.extra_capabilities).await?;
    let extra_parameters = typed_parameters(&source_qmp, &spec.extra_parameters).await?;
    let destination = vm
        .start_incoming("defer", spec.destination_qemu.as_deref())
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
    configure(&source_qmp, &destination_qmp, spec, &extra_parameters).await?;
    secure(vm, &source_qmp, &destination_qmp, spec).await?;
    let transport = Transport::open(
        spec.mode,
        vm.files().runtime_dir(),
        destination.pid(),
        &source_qmp,
        &destination_qmp,
    )
    .await?;
    let destination_events = destination_qmp.event_cursor();
    let outcome = follow(vm, &destination, spec, &transport, wall, &mut report).await;
    drop(transport);
    let handed_over = match outcome {
        Ok(()) => destination_runs(&destination, &source_state, destination_events).await,
        Err(error) => Err(error),
    };
    if let Err(error) = handed_over {
        return Err(recover_source(vm, destination, source_state, error, RECOVERY).await);
    }
    report.take_figures(&final_figures(&source_qmp).await?);
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

/// A destination binary the spec names must be a QEMU system emulator,
/// checked as the source's is (found, then probed), before anything
/// starts: `/bin/true` is not a QEMU.
async fn check_destination_qemu(binary: &std::path::Path) -> Result<()> {
    use virtest_qemu_cmdline::binary::BinaryKind;
    let binary = binary.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let found = binary::find(BinaryKind::Destination, Some(&binary))?;
        binary::probe(&found).map(drop)
    })
    .await
    .expect("probing does not panic")
    .map_err(|e| Error::Destination(virtest_vm::Error::Qemu(e)))
}

/// Checks that the source QEMU offers every capability in `wanted`; an
/// unknown one is an error listing those it offers.
/// The source's and the destination's QEMU versions, and the machine type
/// the guest runs on (as the destination resolves its `-machine`), for
/// the report; `?` for what a probe cannot tell.
fn qemus_and_machine(source: QemuCmdline, destination: &QemuCmdline) -> (String, String, String) {
    let version = |cmdline: &QemuCmdline| {
        binary::probe(&cmdline.binary).map_or_else(|_| "?".to_string(), |p| p.version.to_string())
    };
    let asked = destination
        .props(PropsOption::Machine)
        .and_then(|p| p.head())
        .unwrap_or("?");
    let machine = binary::probe(&destination.binary)
        .ok()
        .and_then(|p| p.resolve_machine(asked).map(str::to_string))
        .unwrap_or_else(|| asked.to_string());
    (version(&source), version(destination), machine)
}

async fn check_capabilities(side: &'static str, qmp: &Qmp, wanted: &[String]) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = qmp
        .execute_raw("query-migrate-capabilities", serde_json::Value::Null)
        .await
        .map_err(|source| Error::Qmp {
            side,
            step: "`query-migrate-capabilities`".into(),
            source,
        })?;
    let offered: Vec<String> = offered
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|status| status["capability"].as_str().map(str::to_string))
        .collect();
    match wanted.iter().find(|name| !offered.contains(name)) {
        Some(unknown) => Err(Error::UnknownCapability {
            side,
            capability: unknown.clone(),
            offered,
        }),
        None => Ok(()),
    }
}

/// `parameters` (by QEMU's names, as text) as `migrate-set-parameters`
/// arguments, each value given the type of the source QEMU's current one;
/// an unknown name is an error listing the ones it has.
async fn typed_parameters(source: &Qmp, parameters: &[(String, String)]) -> Result<Value> {
    let mut typed = serde_json::Map::new();
    if parameters.is_empty() {
        return Ok(Value::Object(typed));
    }
    let current = source
        .execute_raw("query-migrate-parameters", Value::Null)
        .await
        .map_err(|source| Error::Qmp {
            side: "source",
            step: "`query-migrate-parameters`".into(),
            source,
        })?;
    for (name, text) in parameters {
        let refuse = |what: String| Error::Spec(format!("migration parameter `{name}`: {what}"));
        let value = match current.get(name) {
            None => {
                let known: Vec<&str> = current
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.keys().map(String::as_str))
                    .collect();
                return Err(Error::Spec(format!(
                    "unknown migration parameter `{name}`; this QEMU has: {}",
                    known.join(", ")
                )));
            }
            Some(Value::Bool(_)) => Value::Bool(
                text.parse()
                    .map_err(|_| refuse(format!("takes true or false, not `{text}`")))?,
            ),
            Some(Value::Number(_)) => Value::from(
                text.parse::<u64>()
                    .map_err(|_| refuse(format!("takes a whole number, not `{text}`")))?,
            ),
            Some(Value::String(_)) => Value::String(text.clone()),
            Some(other) => {
                return Err(refuse(format!(
                    "takes a structured value ({other}), which virtest sets only through \
                     MigrationSpec's own fields"
                )));
            }
        };
        typed.insert(name.clone(), value);
    }
    Ok(Value::Object(typed))
}

/// Capabilities on both sides, parameters where they apply.
async fn configure(
    source: &Qmp,
    destination: &Qmp,
    spec: &MigrationSpec,
    extra_parameters: &Value,
) -> Result<()> {
    let capabilities: Vec<_> = spec
        .capabilities()
        .into_iter()
        .map(|(capability, state)| MigrationCapabilityStatus { capability, state })
        .collect();
    // Set every time: a source keeps what an earlier, failed migration
    // set. Unset values take the fresh destination's, QEMU's defaults.
    let defaults = destination
        .execute(query_migrate_parameters {})
        .await
        .map_err(|source| Error::Qmp {
            side: "destination",
            step: "`query-migrate-parameters`".into(),
            source,
        })?;
    let source_params = MigrateSetParameters {
        max_bandwidth: Some(spec.max_bandwidth.unwrap_or(UNCAPPED_BANDWIDTH)),
        downtime_limit: spec.downtime_limit_ms.or(defaults.downtime_limit),
        xbzrle_cache_size: spec.xbzrle_cache_bytes,
        multifd_channels: spec.multifd_channels,
        ..MigrateSetParameters::default()
    };
    let destination_params = MigrateSetParameters {
        multifd_channels: spec.multifd_channels,
        ..MigrateSetParameters::default()
    };
    for (side, qmp, params) in [
        ("source", source, source_params),
        ("destination", destination, destination_params),
    ] {
        let failed = |step: &str| {
            let step = step.to_string();
            move |source| Error::Qmp { side, step, source }
        };
        qmp.execute(migrate_set_capabilities {
            capabilities: capabilities.clone(),
        })
        .await
        .map_err(failed("`migrate-set-capabilities`"))?;
        if !spec.extra_capabilities.is_empty() {
            let extra: Vec<_> = spec
                .extra_capabilities
                .iter()
                .map(|name| serde_json::json!({ "capability": name, "state": true }))
                .collect();
            let args = serde_json::json!({ "capabilities": extra });
            qmp.execute_raw("migrate-set-capabilities", args)
                .await
                .map_err(failed("`migrate-set-capabilities` (extra)"))?;
        }
        qmp.execute(migrate_set_parameters(params))
            .await
            .map_err(failed("`migrate-set-parameters`"))?;
        if extra_parameters.as_object().is_some_and(|o| !o.is_empty()) {
            qmp.execute_raw("migrate-set-parameters", extra_parameters.clone())
                .await
                .map_err(failed(&format!(
                    "`migrate-set-parameters` {extra_parameters}"
                )))?;
        }
    }
    Ok(())
}

/// TLS on both sides as the spec asks: the credentials objects and
/// `tls-creds` (and the source's `tls-hostname`), or both cleared, since a
/// QEMU keeps what an earlier migration set.
async fn secure(vm: &Vm, source: &Qmp, destination: &Qmp, spec: &MigrationSpec) -> Result<()> {
    let (source_args, destination_args) = match spec.tls {
        None => (
            serde_json::json!({ "tls-creds": "", "tls-hostname": "" }),
            serde_json::json!({ "tls-creds": "" }),
        ),
        Some(kind) => {
            let dir = tls::credentials(kind, vm.files().runtime_dir())?;
            let server = tls::add_object(destination, kind, &dir, true).await?;
            let client = tls::add_object(source, kind, &dir, false).await?;
            let hostname = match (&spec.tls_hostname, spec.mode, kind) {
                (Some(name), _, _) => name.clone(),
                (None, MigrationMode::Unix, Tls::X509) => "localhost".into(),
                (None, _, _) => String::new(),
            };
            (
                serde_json::json!({ "tls-creds": client, "tls-hostname": hostname }),
                serde_json::json!({ "tls-creds": server }),
            )
        }
    };
    for (side, qmp, args) in [
        ("source", source, source_args),
        ("destination", destination, destination_args),
    ] {
        qmp.execute_raw("migrate-set-parameters", args.clone())
            .await
            .map_err(|source| Error::Qmp {
                side,
                step: format!("`migrate-set-parameters` {args}"),
                source,
            })?;
    }
    Ok(())
}

/// Starts the migration on the source and follows its MIGRATION events
/// until it completes, fails, a QEMU dies, or the timeout passes.
async fn follow(
    vm: &Vm,
    destination: &Instance,
    spec: &MigrationSpec,
    transport: &Transport,
    wall: Instant,
    report: &mut MigrationReport,
) -> Result<()> {
    let source = vm.instance().map_err(Error::Source)?;
    let qmp = source.qmp();
    let mut outgoing = Outgoing::start(qmp, Target::Uri(&transport.source_uri))
        .await
        .map_err(source_error)?;
    let deadline = tokio::time::Instant::from_std(wall) + spec.timeout;
    let mut switched = false;
    // Only for the progress display: statuses come from the events.
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = progress.tick() => {
                // Bounded: a source that stopped answering must not hold
                // this loop past its deadline.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let query = qmp.execute_within(query_migrate {}, left.min(PROGRESS_QUERY));
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
                    MigrationStatus::completed => return Ok(()),
                    MigrationStatus::failed | MigrationStatus::cancelled => {
                        let reason = outgoing.failure_reason().await;
                        // A destination that refused the stream exits
                        // saying why; the source saw only its socket close.
                        if let Some(status) = destination.wait_exit(DESTINATION_EXIT).await {
                            return Err(Error::destination_died(status, destination.output_tail(), Some(reason)));
                        }
                        return Err(Error::Failed { status: status.name().to_string(), reason });
                    }
                    MigrationStatus::active if spec.postcopy && !switched => {
                        switched = true;
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        qmp.execute_within(migrate_start_postcopy {}, left)
                            .await
                            .map_err(|source| Error::Qmp {
                                side: "source",
                                step: "`migrate-start-postcopy`".into(),
                                source,
                            })?;
                    }
                    _ => {}
                }
            }
            status = destination.exited() => {
                return Err(Error::destination_died(status, destination.output_tail(), None));
            }
            status = source.exited() => return Err(Error::SourceDied { status }),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout { after: spec.timeout, last_status: outgoing.last_status().name().to_string(), source_answers: true });
            }
        }
    }
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

/// Checks the destination runs the guest (when the source did).
async fn destination_runs(
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

/// How long a progress query may take.
const PROGRESS_QUERY: Duration = Duration::from_secs(2);

/// How long a failed migration's destination has to exit, when it
/// refused the stream.
const DESTINATION_EXIT: Duration = Duration::from_secs(2);

/// How long recovering the source after a failed migration may take, all
/// its QMP calls together.
const RECOVERY: Duration = Duration::from_secs(10);

/// After a failed migration: cancels what may still run, kills the
/// destination, and makes sure the source runs as before, all within
/// `budget`. Returns `error`, told whether the source was seen running.
async fn recover_source(
    vm: &Vm,
    destination: Instance,
    source_state: VmState,
    error: Error,
    budget: Duration,
) -> Error {
    drop(destination);
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
async fn final_figures(qmp: &Qmp) -> Result<MigrationInfo> {
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
async fn retire(old: Instance) {
    let quick = Duration::from_secs(2);
    let _ = old.qmp().execute_within(quit {}, quick).await;
    if old.wait_exit(Duration::from_secs(3)).await.is_none() {
        tracing::warn!(pid = old.pid(), "the old source did not quit; killing it");
    }
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}
