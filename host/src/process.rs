//! A process (QEMU, sshd, a tool) that cannot outlive its owner.
//!
//! Each process is forked by a thread of its own, which then waits for it.
//! The child gets a process group of its own and asks the kernel for
//! SIGKILL when that thread dies (`PR_SET_PDEATHSIG` follows the forking
//! thread, not the process): the thread lives exactly as long as the
//! child, so the child dies with the owner's process, however that ends.
//!
//! The waiting thread first waits with `WNOWAIT`, then reaps under the
//! lock that signals are sent under: until it is marked exited, the pid is
//! the child's (a zombie at worst), so a signal never reaches a recycled
//! pid.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::process::{self, Pid, Signal};
use tokio::sync::watch;

/// A running (or exited, not yet dropped) child in its own process group.
/// Dropping it kills the group and reaps the child.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    shared: Arc<Shared>,
    exited: watch::Receiver<Option<ExitStatus>>,
    /// The child's stdout and stderr, when the command piped them.
    pipes: (Option<ChildStdout>, Option<ChildStderr>),
    /// The child's stdin, when the command piped it: held open for the
    /// child's life (a remote command's watchdog ends it on EOF).
    _stdin: Option<ChildStdin>,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<Option<ExitStatus>>,
    reaped: Condvar,
}

impl Process {
    /// Starts `command` in a new process group, to die with this process.
    /// `name` names the waiting thread.
    pub fn spawn(mut command: Command, name: &str) -> io::Result<Process> {
        let owner = Pid::from_raw(std::process::id() as i32);
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe system calls (prctl, getppid), allocating
        // nothing but on the error path of a child about to exit.
        unsafe {
            command.pre_exec(move || {
                process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The owner may have died before prctl took effect.
                if process::getppid() != owner {
                    return Err(io::Error::other("the owning process is gone"));
                }
                Ok(())
            });
        }
        let shared = Arc::new(Shared {
            status: Mutex::new(None),
            reaped: Condvar::new(),
        });
        let (exit_tx, exited) = watch::channel(None);
        let (spawned_tx, spawned_rx) = std::sync::mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("virtest-{name}"))
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = spawned_tx.send(Err(e));
                        return;
                    }
                };
                let pipes = (child.stdout.take(), child.stderr.take());
                let stdin = child.stdin.take();
                let _ = spawned_tx.send(Ok((child.id(), pipes, stdin)));
                wait_without_reaping(child.id());
                let mut status = thread_shared.status.lock().expect("status lock");
                let reaped = child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
                *status = Some(reaped);
                exit_tx.send_replace(Some(reaped));
                thread_shared.reaped.notify_all();
            })?;
        // Forking takes a few milliseconds; waiting here synchronously
        // leaves no moment where a child exists without its guard.
        let (pid, pipes, stdin) = spawned_rx
            .recv()
            .map_err(|_| io::Error::other("the spawning thread died"))??;
        Ok(Process {
            pid,
            shared,
            exited,
            pipes,
            _stdin: stdin,
        })
    }

    /// Takes the child's stdout and stderr, where the command piped them.
    pub fn take_output(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        std::mem::take(&mut self.pipes)
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the child has exited and been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// Waits for the child to exit.
    pub async fn wait(&self) -> ExitStatus {
        let mut exited = self.exited.clone();
        let status = exited
            .wait_for(Option::is_some)
            .await
            .map(|s| *s)
            .ok()
            .flatten();
        // The sender lives until the status is set.
        status.unwrap_or_else(|| ExitStatus::from_raw(0))
    }

    /// Waits for the child to exit, at most `deadline`.
    pub async fn wait_within(&self, deadline: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(deadline, self.wait()).await.ok()
    }

    /// Sends `signal` to the child's process group, unless it was reaped.
    pub fn signal(&self, signal: Signal) {
        let status = self.shared.status.lock().expect("status lock");
        // The group still exists while its leader is unreaped.
        if status.is_none()
            && let Some(group) = Pid::from_raw(self.pid as i32)
        {
            let _ = process::kill_process_group(group, signal);
        }
    }

    /// Kills the group and waits (blocking, at most 5 s) for the reap. On
    /// a worker of a multi-threaded tokio runtime the wait is announced
    /// to tokio (`block_in_place`), which moves the worker's other tasks
    /// elsewhere: a QEMU slow to die stalls no other test's VMs.
    pub fn kill_and_reap(&self) {
        if self.status().is_some() {
            return;
        }
        let on_async_worker = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        match on_async_worker {
            true => tokio::task::block_in_place(|| self.kill_and_wait()),
            false => self.kill_and_wait(),
        }
    }

    fn kill_and_wait(&self) {
        self.signal(Signal::KILL);
        let status = self.shared.status.lock().expect("status lock");
        let _ = self
            .shared
            .reaped
            .wait_timeout_while(status, Duration::from_secs(5), |s| s.is_none());
    }
}

/// What a short-lived tool said, and how it exited.
#[derive(Debug)]
pub struct ToolOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// All it wrote to stdout.
    pub stdout: Vec<u8>,
    /// All it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Runs a short-lived tool (qemu-img, say) as QEMU is run: it dies with
/// this process, and with the future (a test's timeout drops it). One
/// still running after `deadline` is killed, and that is an error.
pub async fn run_tool(command: Command, name: &str, deadline: Duration) -> io::Result<ToolOutput> {
    run_tool_fed(command, name, deadline, Stdio::null()).await
}

/// [`run_tool`] reading `stdin` (a file to send to a host, say).
pub async fn run_tool_fed(
    mut command: Command,
    name: &str,
    deadline: Duration,
    stdin: Stdio,
) -> io::Result<ToolOutput> {
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = Process::spawn(command, name)?;
    let (stdout, stderr) = process.take_output();
    let (stdout, stderr) = (read_all(stdout), read_all(stderr));
    let Some(status) = process.wait_within(deadline).await else {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{name} did not finish within {deadline:?}, so it was killed"),
        ));
    };
    Ok(ToolOutput {
        status,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    })
}

/// Reads `pipe` to its end off the async threads.
fn read_all(pipe: Option<impl io::Read + Send + 'static>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

impl Drop for Process {
    /// Kills and reaps ([`Process::kill_and_reap`]).
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Blocks until `pid` has exited, leaving it unreaped.
fn wait_without_reaping(pid: u32) {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    let options = process::WaitIdOptions::EXITED | process::WaitIdOptions::NOWAIT;
    while let Err(rustix::io::Errno::INTR) = process::waitid(process::WaitId::Pid(pid), options) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtest_testkit::alive;

    #[tokio::test]
    async fn exit_status_is_reported() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let process = Process::spawn(command, "test").unwrap();
        assert_eq!(process.wait().await.code(), Some(3));
    }

    /// On a worker of a multi-threaded runtime (the runner's), where the
    /// drop waits through `block_in_place`; the other tests here drop on
    /// a current-thread runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("sleep 60 & echo $! > {}; wait", pid_file.display()));
        let process = Process::spawn(command, "test").unwrap();
        let pid = process.pid();
        while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n')) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            process
                .wait_within(Duration::from_millis(100))
                .await
                .is_none()
        );
        drop(process);
        assert!(!alive(pid));
        // The orphaned grandchild is reaped by init, shortly.
        let start = std::time::Instant::now();
        while alive(grandchild) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "grandchild survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let error = Process::spawn(Command::new("/nonexistent/qemu"), "test").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
