//! One QEMU process of a VM, started until its console and QMP are
//! connected. A VM runs one at a time, except during a migration, when
//! the destination is a second one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use virtest_host::{Host, ReachedPort};
use virtest_qemu_cmdline::QemuCmdline;
use virtest_qmp::{Qmp, TranscriptWriter};

use crate::console::{Console, ConsoleReader};
use crate::endpoints::{Endpoints, Forward, forwards_in, tcp_forwards};
use crate::error::{Error, Result};
use crate::exit::QemuExit;
use crate::placement::Placement;
use crate::tpm::{Swtpm, TpmFiles};
use virtest_host::process::Process;

/// Where an instance's files go and who reads its console.
pub(crate) struct Files<'a> {
    /// The host QEMU runs on.
    pub host: &'a Host,
    /// The directory for sockets here.
    pub sockets: &'a Path,
    /// The directory for sockets on the host (the same as `sockets` on
    /// this machine).
    pub host_sockets: &'a Path,
    /// QEMU's stdout and stderr, appended.
    pub qemu_log: &'a Path,
    /// The VM's QMP transcript (`qmp.log`), shared by its processes.
    pub qmp_log: &'a TranscriptWriter,
    /// The console every instance of the VM writes to.
    pub console: &'a Console,
    /// Where the VM's files are on the host.
    pub placement: &'a Arc<Placement>,
    /// Whether its disks' overlays there are new, for a migration to
    /// fill.
    pub fill_disks: bool,
    /// The TPM emulator to start for QEMU's TPM, if the VM has one.
    pub tpm: Option<&'a TpmFiles>,
}

/// A QEMU process with its console read and QMP connected. Dropping it
/// kills and reaps the process.
pub struct Instance {
    // Declared first: dropped (killed) before the reader is aborted.
    process: Process,
    /// The VM's TPM emulator for this QEMU, ended after it.
    tpm: Option<Swtpm>,
    qmp: Qmp,
    endpoints: Endpoints,
    host: Host,
    /// Where the VM's files are on the host.
    placement: Arc<Placement>,
    /// The disks (drive ids) a migration must fill, their overlays new.
    disks_to_fill: Vec<String>,
    /// The paths here that lead to the endpoints' sockets, and the relays
    /// of forwarded ports, for QEMU on another host.
    reached: Reached,
    cmdline: QemuCmdline,
    /// Reads the console until QEMU closes it; `None` once it finished.
    console_reader: Option<ConsoleReader>,
    qemu_log: PathBuf,
    /// Where this process's output starts in `qemu.log`.
    log_offset: u64,
}

/// How the test reaches a QEMU's endpoints.
#[derive(Debug)]
struct Reached {
    /// The QMP socket here.
    qmp: PathBuf,
    /// The agent's socket here.
    agent: PathBuf,
    /// QEMU's pid file on another host (for signals there).
    pid_file: PathBuf,
    /// Relays to forwarded ports on another host.
    ports: Vec<ReachedPort>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("pid", &self.process.pid())
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.process.kill_and_reap();
        if let Some(reader) = &self.console_reader {
            reader.stop();
        }
    }
}

impl Instance {
    /// Starts QEMU with the command line `build` makes for a set of fresh
    /// endpoints (named after `generation`), connects its console and QMP
    /// within `deadline`, and reads which ports QEMU bound for the
    /// command line's forwards (`info usernet`).
    pub(crate) async fn start(
        files: &Files<'_>,
        generation: u32,
        deadline: Duration,
        build: &(dyn Fn(&Endpoints) -> QemuCmdline + Sync),
    ) -> Result<Instance> {
        let there = files.host_sockets;
        let endpoints = Endpoints {
            qmp_socket: there.join(format!("qmp-{generation}.sock")),
            console_socket: there.join(format!("console-{generation}.sock")),
            agent_socket: there.join(format!("agent-{generation}.sock")),
            tpm_socket: there.join(format!("tpm-{generation}.sock")),
            generation,
            forwards: Vec::new(),
        };
        let mut instance =
            Instance::start_once(files, &endpoints, deadline, build(&endpoints)).await?;
        let asked = tcp_forwards(&instance.cmdline);
        if !asked.is_empty() {
            let step = "`info usernet` (which ports QEMU forwards)";
            let info = instance
                .qmp
                .hmp("info usernet")
                .await
                .map_err(|source| Error::Qmp {
                    step: step.into(),
                    source,
                })?;
            let bound = forwards_in(&info);
            if let Some(missing) = asked
                .iter()
                .find(|&&guest| !bound.iter().any(|f| f.guest_port == guest))
            {
                return Err(Error::State {
                    what: format!(
                        "QEMU forwards no host port to the guest's port {missing}; {step} said:\n{info}"
                    ),
                });
            }
            instance.endpoints.forwards = instance.reach_ports(files, bound).await?;
        }
        Ok(instance)
    }

    /// The ports here that lead to QEMU's forwards `bound` on its host:
    /// the same on this machine, relays for another.
    async fn reach_ports(
        &mut self,
        files: &Files<'_>,
        bound: Vec<Forward>,
    ) -> Result<Vec<Forward>> {
        if self.host.is_local() {
            return Ok(bound);
        }
        let mut here = Vec::new();
        for forward in bound {
            let via = files.sockets.join(format!(
                "port-{}-{}.sock",
                self.endpoints.generation, forward.guest_port
            ));
            let reached = self
                .host
                .reach_port(forward.host_port, &via)
                .await
                .map_err(host_error)?;
            here.push(Forward {
                host_port: reached.port,
                guest_port: forward.guest_port,
            });
            self.reached.ports.push(reached);
        }
        Ok(here)
    }

    async fn start_once(
        files: &Files<'_>,
        endpoints: &Endpoints,
        deadline: Duration,
        cmdline: QemuCmdline,
    ) -> Result<Instance> {
        let started = Instant::now();
        let host = files.host;
        let generation = endpoints.generation;
        let here = |name: &str| files.sockets.join(format!("{name}-{generation}.sock"));
        let console_here = here("console");
        for socket in [
            &endpoints.qmp_socket,
            &console_here,
            &endpoints.agent_socket,
        ] {
            let _ = std::fs::remove_file(socket);
        }
        let listener = UnixListener::bind(&console_here).map_err(|source| Error::Io {
            what: "listening on",
            path: console_here.clone(),
            source,
        })?;
        // On another host, QEMU's end of each socket is forwarded here.
        host.serve_socket(&console_here, &endpoints.console_socket)
            .await
            .map_err(host_error)?;
        let qmp_here = host
            .reach_socket(&endpoints.qmp_socket, &here("qmp"))
            .await
            .map_err(host_error)?;
        let agent_here = host
            .reach_socket(&endpoints.agent_socket, &here("agent"))
            .await
            .map_err(host_error)?;
        let pid_file = files.host_sockets.join(format!("qemu-{generation}.pid"));
        let (stdout, log, log_offset) = open_output_log(
            files.qemu_log,
            &format!("virtest: starting {}", cmdline.display()),
        )?;
        let tpm = match files.tpm {
            Some(tpm) => Some(Swtpm::start(host, tpm, &endpoints.tpm_socket).await?),
            None => None,
        };
        let process = host
            .spawn(&argv(&cmdline), &pid_file, stdout.into(), log.into())
            .map_err(|error| match error {
                virtest_host::Error::Spawn { source, .. } => Error::Spawn {
                    binary: cmdline.binary.clone(),
                    source,
                },
                other => host_error(other),
            })?;
        tracing::debug!(pid = process.pid(), cmdline = %cmdline.display(), "QEMU started");
        let exited =
            |status, during: &str| exit_error(status, during, files.qemu_log, log_offset, &cmdline);
        let timed_out = |what: &str| Error::State {
            what: format!(
                "QEMU (pid {}) did not {what} within {deadline:?}\nQEMU said: {}\ncommand line: {}",
                process.pid(),
                log_tail(files.qemu_log, log_offset),
                cmdline.display()
            ),
        };
        let stream = tokio::select! {
            accepted = tokio::time::timeout(deadline, listener.accept()) => match accepted {
                Ok(Ok((stream, _))) => stream,
                Ok(Err(source)) => return Err(Error::Io {
                    what: "accepting the console of QEMU on",
                    path: endpoints.console_socket.clone(),
                    source,
                }),
                Err(_) => return Err(timed_out("connect its serial console")),
            },
            status = process.wait() => return Err(exited(status, "while starting")),
        };
        let console_reader = files.console.attach(stream).map_err(|source| Error::Io {
            what: "reading the console of QEMU on",
            path: endpoints.console_socket.clone(),
            source,
        })?;
        // Out of band on: a destination whose main loop waits for a
        // paused postcopy's pages still takes `migrate-recover`.
        let options = virtest_qmp::Options {
            transcript: Some(files.qmp_log.clone()),
            oob: true,
            ..Default::default()
        };
        let left = deadline.saturating_sub(started.elapsed());
        let qmp = tokio::select! {
            qmp = connect_qmp(&qmp_here, left, options, !host.is_local()) => match qmp {
                Ok(qmp) => qmp,
                // QEMU listens on QMP before it checks all its options:
                // a rejected option closes the socket as QEMU exits.
                Err(source) => match process.wait_within(Duration::from_secs(2)).await {
                    Some(status) => return Err(exited(status, "while starting")),
                    None => return Err(Error::Qmp { step: "connecting".into(), source }),
                },
            },
            status = process.wait() => return Err(exited(status, "while starting, before QMP answered")),
        };
        Ok(Instance {
            process,
            tpm,
            qmp,
            endpoints: endpoints.clone(),
            host: host.clone(),
            placement: files.placement.clone(),
            disks_to_fill: match files.fill_disks {
                true => (0..files.placement.overlays().len())
                    .map(crate::launch::disk_id)
                    .collect(),
                false => Vec::new(),
            },
            reached: Reached {
                qmp: qmp_here,
                agent: agent_here,
                pid_file,
                ports: Vec::new(),
            },
            cmdline,
            console_reader: Some(console_reader),
            qemu_log: files.qemu_log.to_path_buf(),
            log_offset,
        })
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The pid of its TPM emulator (swtpm), for a VM with a TPM; on
    /// another host, of the SSH client that runs it there.
    pub fn tpm_pid(&self) -> Option<u32> {
        self.tpm.as_ref().map(Swtpm::pid)
    }

    /// Where its TPM keeps its state, on its host.
    pub(crate) fn tpm_state_dir(&self) -> Option<&Path> {
        self.tpm.as_ref().map(Swtpm::state_dir)
    }

    /// Its QMP connection.
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// Its host-side endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The host it runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The disks (their `-drive` ids) whose overlays on this QEMU's host
    /// are new and empty, over copies of their bases: the VM's disks are
    /// on another host's storage, and a migration to this QEMU copies
    /// them in. Empty when both hosts see the same files.
    pub fn disks_to_fill(&self) -> &[String] {
        &self.disks_to_fill
    }

    /// Where the VM's files are on its host.
    pub(crate) fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// The path here that leads to its guest agent's socket.
    pub fn agent_socket_here(&self) -> &Path {
        &self.reached.agent
    }

    /// The path here that leads to its QMP socket.
    pub fn qmp_socket_here(&self) -> &Path {
        &self.reached.qmp
    }

    /// The command line it runs.
    pub fn cmdline(&self) -> &QemuCmdline {
        &self.cmdline
    }

    /// The command line, to record what was hot-plugged since QEMU
    /// started (a migration's destination starts from it).
    pub(crate) fn cmdline_mut(&mut self) -> &mut QemuCmdline {
        &mut self.cmdline
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        self.process.status().is_none()
    }

    /// How QEMU ended, once it has.
    pub fn ended(&self) -> Option<QemuExit> {
        let status = self.process.status()?;
        let last_words = match status.code() {
            Some(0) | None => None,
            Some(_) => log_tail(&self.qemu_log, self.log_offset)
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string),
        };
        Some(QemuExit {
            pid: self.pid(),
            status,
            last_words,
        })
    }

    /// Waits for QEMU to exit, at most `deadline`.
    pub async fn wait_exit(&self, deadline: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_within(deadline).await
    }

    /// Waits for QEMU to exit.
    pub async fn exited(&self) -> std::process::ExitStatus {
        self.process.wait().await
    }

    /// Sends a signal to QEMU (its process group here; on another host,
    /// QEMU there, or for `KILL` its SSH session, which takes QEMU with
    /// it).
    pub(crate) async fn signal(&self, signal: rustix::process::Signal) {
        if self.host.is_local() || signal == rustix::process::Signal::KILL {
            self.process.signal(signal);
            return;
        }
        let name = format!("{signal:?}");
        if let Err(error) = self.host.signal(&self.reached.pid_file, &name).await {
            tracing::warn!(%error, "signalling QEMU on its host");
        }
    }

    /// The last lines QEMU wrote (stdout and stderr).
    pub fn output_tail(&self) -> String {
        log_tail(&self.qemu_log, self.log_offset)
    }

    /// The error for QEMU having exited `during` something.
    pub fn exit_error(&self, status: std::process::ExitStatus, during: &str) -> Error {
        exit_error(
            status,
            during,
            &self.qemu_log,
            self.log_offset,
            &self.cmdline,
        )
    }

    /// Lets the console reader take the last output of an exited QEMU
    /// (at once when it has already finished: a reader is awaited to its
    /// end only once).
    pub(crate) async fn drain_console(&mut self, deadline: Duration) {
        if let Some(reader) = &mut self.console_reader
            && tokio::time::timeout(deadline, reader.finished())
                .await
                .is_ok()
        {
            self.console_reader = None;
        }
    }

    /// Lets the QMP reader take the last messages of an exited QEMU
    /// into the transcript, waiting at most `deadline`.
    pub(crate) async fn drain_qmp(&self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, self.qmp.reader_stopped()).await;
    }
}

/// Connects to QMP at `socket` within `deadline`. Through a forward
/// (`forwarded`) a connection is accepted before QEMU listens there,
/// and closed at once: it is tried again until QEMU greets.
async fn connect_qmp(
    socket: &Path,
    deadline: Duration,
    options: virtest_qmp::Options,
    forwarded: bool,
) -> virtest_qmp::Result<Qmp> {
    let started = Instant::now();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match Qmp::connect_unix(socket, left, options.clone()).await {
            Ok(qmp) => return Ok(qmp),
            Err(error) if !forwarded || started.elapsed() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// QEMU's argv, binary first.
fn argv(cmdline: &QemuCmdline) -> Vec<String> {
    std::iter::once(cmdline.binary.as_os_str().to_owned())
        .chain(cmdline.to_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect()
}

/// A failure of the host QEMU runs on (its SSH connection, a forward).
fn host_error(source: virtest_host::Error) -> Error {
    Error::Host(source)
}

/// QEMU exited `during` something: its status, output and command line.
fn exit_error(
    status: std::process::ExitStatus,
    during: &str,
    log: &Path,
    offset: u64,
    cmdline: &QemuCmdline,
) -> Error {
    Error::Exited {
        during: during.to_string(),
        status,
        stderr_tail: log_tail(log, offset),
        cmdline: cmdline.display(),
    }
}

/// Opens `log` for a process's output (QEMU's, swtpm's), appending
/// `header` first: its stdout, its stderr, and where its output starts
/// (for [`log_tail`]).
pub(crate) fn open_output_log(log: &Path, header: &str) -> Result<(File, File, u64)> {
    let io_error = |what, source| Error::Io {
        what,
        path: log.to_path_buf(),
        source,
    };
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_error("opening", e))?;
    writeln!(file, "{header}").map_err(|e| io_error("writing", e))?;
    let offset = file
        .seek(SeekFrom::End(0))
        .map_err(|e| io_error("seeking", e))?;
    let stdout = file.try_clone().map_err(|e| io_error("opening", e))?;
    Ok((stdout, file, offset))
}

/// The last lines a process (QEMU, swtpm) wrote to `log` after `offset`.
pub(crate) fn log_tail(log: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.take(1 << 20).read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(nothing)".into()
    } else {
        tail
    }
}
