//! Running one test: its directory and log, its phases under the timeout
//! and the interrupt, cleanup always, and the VM killed if cleanup left it
//! on.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::panics;
use crate::evidence;
use crate::logging::{Phase, Sinks, TEST_SPAN, TestSink};
use crate::outcome::{TestError, TestResult, fail};
use crate::params::Params;
use crate::pause::Pauser;
use crate::results::{self, TestRecord};
use crate::status::Status;
use crate::test::{Maker, Test};

/// How long cleanup may take, whatever happened before.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Which signal interrupted the job, once one did.
pub(crate) type Interrupt = watch::Receiver<Option<&'static str>>;

/// One planned test, ready to run.
pub(crate) struct TestRun {
    pub n: usize,
    pub name: String,
    pub params: Params,
    pub dir: PathBuf,
    pub make: Maker,
    /// The name of the test this run repeats (`--repeat`).
    pub repeat_of: Option<String>,
}

impl TestRun {
    /// Runs the test and returns its record.
    pub(crate) async fn execute(
        self,
        interrupt: Interrupt,
        hurry: Interrupt,
        sinks: Sinks,
        phase: Phase,
        pauser: Option<Arc<Pauser>>,
    ) -> TestRecord {
        panics::install_hook();
        let start = results::now();
        let TestRun {
            n,
            name,
            params,
            dir,
            make,
            repeat_of,
        } = self;
        let mut test = make();
        let record = |status, reason: Option<String>, whiteboard: String| {
            record(&name, &params, &dir, start, status, reason, whiteboard)
        };
        let log = match std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::File::create(dir.join("debug.log")))
        {
            Ok(log) => log,
            Err(e) => {
                let reason = format!("cannot create `{}`: {e}", dir.display());
                return record(Status::Error, Some(reason), String::new());
            }
        };
        sinks.register(
            n as u64,
            TestSink {
                log: Arc::new(Mutex::new(log)),
                phase: phase.clone(),
            },
        );
        let span = tracing::info_span!(TEST_SPAN, key = n as u64, name = %name);
        let run = async {
            tracing::info!(test = %name, params = ?params.redacted(), "test starts");
            let mut t = match Test::new(&name, params.clone(), &dir) {
                Ok(t) => t,
                Err(e) => return Ended::early(e),
            };
            let timeout = match params.value(&crate::params::TIMEOUT) {
                Ok(timeout) => timeout,
                Err(e) => return Ended::early(e.into()),
            };
            let deadline = Instant::now() + timeout;
            set(&phase, "setup");
            let mut outcome = guarded(
                test.setup(&mut t),
                deadline,
                timeout,
                interrupt.clone(),
                &phase,
            )
            .await;
            if outcome.is_ok() {
                set(&phase, "running");
                outcome = guarded(
                    test.action(&mut t),
                    deadline,
                    timeout,
                    interrupt.clone(),
                    &phase,
                )
                .await;
            }
            let mut evidence = Vec::new();
            if let Err(e) = &mut outcome {
                name_ended_qemus(&t, e).await;
                tracing::warn!(status = %e.status, reason = %e.reason, "the test did not pass");
                set(&phase, "gathering the failure bundle");
                let budget = params
                    .value(&crate::params::EVIDENCE_TIMEOUT)
                    .unwrap_or_default();
                // A second signal cuts it short, as it does cleanup.
                evidence = tokio::select! {
                    files = evidence::gather_all(&mut t, &dir, budget) => files,
                    _ = signalled(hurry.clone()) => Vec::new(),
                };
                if let Some(pauser) = &pauser {
                    set(&phase, "paused on its failure");
                    let vms = t.vms_mut().collect();
                    pauser.pause(&name, &dir, vms, interrupt.clone()).await;
                }
            }
            set(&phase, "cleanup");
            // A second signal cuts cleanup short.
            let cleanup = guarded(
                test.cleanup(&mut t),
                Instant::now() + CLEANUP_TIMEOUT,
                CLEANUP_TIMEOUT,
                hurry,
                &phase,
            )
            .await;
            let failed = outcome.is_err() || cleanup.is_err();
            let mut kept_disks = Vec::new();
            for (vm_name, vm) in t.vms_mut() {
                if vm.is_on() {
                    tracing::warn!(vm = vm_name, "a VM is still on after cleanup: killing it");
                    let _ = vm.within(Duration::ZERO).power_off().await;
                }
                if failed || vm.config().keep_disks {
                    vm.keep_disks();
                    kept_disks.extend(vm.files().overlays().iter().map(|o| o.path.clone()));
                }
            }
            if !kept_disks.is_empty() {
                tracing::info!(disks = ?kept_disks, "the VMs' disk overlays are kept");
            }
            let outcome = match (outcome, cleanup) {
                (Ok(()), Err(e)) => Err(TestError::new(e.status, format!("cleanup: {}", e.reason))),
                (Err(e), Err(cleanup)) => {
                    tracing::warn!(reason = %cleanup.reason, "cleanup failed too");
                    Err(e)
                }
                (outcome, Ok(())) => outcome,
            };
            let mut warnings = t.warnings().to_vec();
            let vm_start = match t.vm.start() {
                virtest_vm::Start::NotStarted => None,
                start => {
                    if let virtest_vm::Start::SnapshotFailed { why } = start {
                        warnings.push(format!("the VM booted: its ready snapshot failed: {why}"));
                    }
                    Some(start.to_string())
                }
            };
            Ended {
                outcome,
                warnings,
                kept_disks,
                vm_start,
                evidence,
            }
        };
        let Ended {
            outcome,
            warnings,
            kept_disks,
            vm_start,
            evidence,
        } = run.instrument(span.clone()).await;
        let (status, reason) = match outcome {
            Ok(()) if warnings.is_empty() => (Status::Pass, None),
            Ok(()) => (Status::Warn, Some(warnings.join("; "))),
            Err(e) => (e.status, Some(e.reason)),
        };
        span.in_scope(|| tracing::info!(%status, "test ends"));
        let mut record = record(status, reason, warnings.join("\n"));
        record.kept_disks = kept_disks;
        record.vm_start = vm_start;
        record.evidence = evidence;
        record.repeat_of = repeat_of;
        record
    }
}

/// What running a test leaves besides its outcome.
struct Ended {
    outcome: TestResult,
    warnings: Vec<String>,
    kept_disks: Vec<PathBuf>,
    vm_start: Option<String>,
    evidence: Vec<PathBuf>,
}

impl Ended {
    /// A test that ended before its VM existed.
    fn early(error: TestError) -> Ended {
        Ended {
            outcome: Err(error),
            warnings: Vec::new(),
            kept_disks: Vec::new(),
            vm_start: None,
            evidence: Vec::new(),
        }
    }
}

/// Puts first in a failure's reason each VM whose QEMU ended by itself,
/// and how: "VM `server`: QEMU (pid 42) was killed by signal 9 (SIGKILL)".
/// What the test saw (a lost SSH connection, say) follows.
async fn name_ended_qemus(t: &Test, error: &mut TestError) {
    // A QEMU's end may reach the test (a closed socket) a moment before
    // its exit status reaches the VM.
    const SETTLE: Duration = Duration::from_millis(100);
    let mut ended = Vec::new();
    for (name, vm) in t.vms() {
        if let Ok(instance) = vm.instance() {
            instance.wait_exit(SETTLE).await;
        }
        if let Some(exit) = vm.qemu_exit() {
            tracing::warn!(vm = name, pid = exit.pid, "{exit}");
            ended.push(format!("VM `{name}`: {exit}"));
        }
    }
    if !ended.is_empty() {
        ended.push(std::mem::take(&mut error.reason));
        error.reason = ended.join("; ");
    }
}

fn set(phase: &Phase, now: &str) {
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = now.to_string();
}

/// A phase, bounded by the deadline and the interrupt; a panic in it is
/// a FAIL with where it happened. A timeout says what the test was doing
/// when it was more than its phase (a command in the guest, a boot...).
async fn guarded(
    phase: impl Future<Output = TestResult>,
    deadline: Instant,
    timeout: Duration,
    interrupt: Interrupt,
    doing: &Phase,
) -> TestResult {
    tokio::select! {
        result = AssertUnwindSafe(phase).catch_unwind() => match result {
            Ok(result) => result,
            Err(payload) => Err(fail(panics::describe(&*payload))),
        },
        // Read when the deadline passes, before the phase's future (and
        // the spans that say what it does) is dropped.
        doing = async {
            tokio::time::sleep_until(deadline.into()).await;
            doing.lock().unwrap_or_else(|e| e.into_inner()).clone()
        } => {
            let reason = match doing.as_str() {
                "setup" | "running" | "cleanup" => format!("timed out after {timeout:?}"),
                doing => format!("timed out after {timeout:?} while {doing}"),
            };
            Err(TestError::new(Status::Interrupted, reason))
        }
        signal = signalled(interrupt) => Err(TestError::new(
            Status::Interrupted,
            format!("interrupted by {signal}"),
        )),
    }
}

/// Which signal came, once one did (never, if the sender is gone).
pub(crate) async fn signalled(mut interrupt: Interrupt) -> &'static str {
    loop {
        if let Some(signal) = *interrupt.borrow_and_update() {
            return signal;
        }
        if interrupt.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The record of a test the job never started.
pub(crate) fn not_started(run: &TestRun, signal: &str) -> TestRecord {
    let reason = format!("not started: the job was interrupted by {signal}");
    record(
        &run.name,
        &run.params,
        &run.dir,
        results::now(),
        Status::Interrupted,
        Some(reason),
        String::new(),
    )
}

/// The record of a test that started at `start` and ends now.
fn record(
    name: &str,
    params: &Params,
    dir: &Path,
    start: f64,
    status: Status,
    reason: Option<String>,
    whiteboard: String,
) -> TestRecord {
    let end = results::now();
    TestRecord {
        id: dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        name: name.to_string(),
        status,
        fail_reason: reason,
        logdir: dir.to_path_buf(),
        logfile: dir.join("debug.log"),
        start,
        end,
        time: end - start,
        params: params.redacted(),
        whiteboard,
        kept_disks: Vec::new(),
        vm_start: None,
        evidence: Vec::new(),
        retried: Vec::new(),
        flaky: false,
        repeat_of: None,
    }
}

/// Sends SIGINT or SIGTERM, when one comes, to every test.
pub(crate) async fn forward_signals(
    interrupt: watch::Sender<Option<&'static str>>,
    hurry: watch::Sender<Option<&'static str>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut next = async || {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    };
    let name = next().await;
    eprintln!(
        "virtest: {name}: interrupting the running tests; their cleanup runs (again to cut it short)"
    );
    let _ = interrupt.send(Some(name));
    let name = next().await;
    eprintln!(
        "virtest: {name} again: cutting cleanup short, killing the VMs and writing the results (again to exit at once)"
    );
    let _ = hurry.send(Some(if name == "SIGINT" {
        "a second SIGINT"
    } else {
        "a second SIGTERM"
    }));
    let name = next().await;
    eprintln!(
        "virtest: {name} a third time: exiting now; the results so far are in the job directory"
    );
    // QEMU dies with this process (its parent-death signal).
    std::process::exit(130);
}
