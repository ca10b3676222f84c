//! What takes the guest agent more than one command and answer: running
//! a program to its end with its output (`guest-exec`, then
//! `guest-exec-status` until it exited), reading or writing a whole file
//! (`guest-file-open`, reads or writes in chunks, `guest-file-close`),
//! and a shutdown, which the agent does not answer.

use std::time::{Duration, Instant};

use qapi::qga;

use crate::error::{Error, Result};
use crate::qga::Qga;

/// The bytes one `guest-file-read` or `guest-file-write` carries.
const FILE_CHUNK: usize = 48 * 1024;

/// How often `guest-exec-status` is asked while a program runs.
const EXEC_POLL: Duration = Duration::from_millis(50);

/// What a program run through the agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentExec {
    /// Its exit status, when it exited.
    pub exit_code: Option<i64>,
    /// The signal that ended it, when one did.
    pub signal: Option<i64>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl AgentExec {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

impl Qga {
    /// Runs `argv` (a program and its arguments; no shell) in the guest
    /// and waits until it ends, within `deadline`: its exit status and
    /// output. A program still running at the deadline is an
    /// [`Error::Timeout`] (the agent has no way to kill it).
    ///
    /// ```no_run
    /// # async fn f(agent: &virtest_qmp::Qga) -> virtest_qmp::Result<()> {
    /// use std::time::Duration;
    /// let done = agent.exec(&["uname", "-r"], Duration::from_secs(10)).await?;
    /// assert!(done.success());
    /// println!("{}", String::from_utf8_lossy(&done.stdout));
    /// # Ok(()) }
    /// ```
    pub async fn exec(&self, argv: &[&str], deadline: Duration) -> Result<AgentExec> {
        let start = Instant::now();
        let (path, args) = argv
            .split_first()
            .ok_or_else(|| Error::Protocol("guest-exec needs a program to run".into()))?;
        let started = self
            .execute_within(
                qga::guest_exec {
                    path: path.to_string(),
                    arg: Some(args.iter().map(|a| a.to_string()).collect()),
                    env: None,
                    input_data: None,
                    capture_output: Some(qga::GuestExecCaptureOutput::flag(true)),
                },
                deadline,
            )
            .await?;
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            let status = self
                .execute_within(
                    qga::guest_exec_status { pid: started.pid },
                    left.max(EXEC_POLL),
                )
                .await?;
            if status.exited {
                return Ok(AgentExec {
                    exit_code: status.exitcode,
                    signal: status.signal,
                    stdout: status.out_data.unwrap_or_default(),
                    stderr: status.err_data.unwrap_or_default(),
                });
            }
            if start.elapsed() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "`{}` run by the guest agent (pid {})",
                        argv.join(" "),
                        started.pid
                    ),
                    after: deadline,
                });
            }
            tokio::time::sleep(EXEC_POLL).await;
        }
    }

    /// The whole content of the guest's file `path`.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let handle = self.open(path, "r").await?;
        let mut content = Vec::new();
        let read = async {
            loop {
                let chunk = self
                    .execute(qga::guest_file_read {
                        handle,
                        count: Some(FILE_CHUNK as i64),
                    })
                    .await?;
                content.extend_from_slice(&chunk.buf_b64);
                if chunk.eof || chunk.count == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        self.close(handle, read).await?;
        Ok(content)
    }

    /// Writes `content` to the guest's file `path`, replacing it.
    pub async fn write_file(&self, path: &str, content: &[u8]) -> Result<()> {
        let handle = self.open(path, "w").await?;
        let write = async {
            for chunk in content.chunks(FILE_CHUNK) {
                let written = self
                    .execute(qga::guest_file_write {
                        handle,
                        buf_b64: chunk.to_vec(),
                        count: None,
                    })
                    .await?;
                if written.count != chunk.len() as i64 {
                    return Err(Error::Protocol(format!(
                        "the guest agent wrote {} of {} bytes to `{path}`",
                        written.count,
                        chunk.len()
                    )));
                }
            }
            Ok(())
        }
        .await;
        self.close(handle, write).await
    }

    /// Asks the guest to shut down (`powerdown`), halt or reboot
    /// (`guest-shutdown`, which the agent answers only with an error): an
    /// error the agent sends within a second, else `Ok` once asked.
    pub async fn shutdown(&self, mode: &str) -> Result<()> {
        self.send_unanswered(
            "guest-shutdown",
            serde_json::json!({ "mode": mode }),
            Duration::from_secs(1),
        )
        .await
    }

    async fn open(&self, path: &str, mode: &str) -> Result<i64> {
        self.execute(qga::guest_file_open {
            path: path.to_string(),
            mode: Some(mode.to_string()),
        })
        .await
    }

    /// Closes `handle` whatever `outcome` was; the first error wins.
    async fn close(&self, handle: i64, outcome: Result<()>) -> Result<()> {
        let closed = self
            .execute(qga::guest_file_close { handle })
            .await
            .map(drop);
        outcome.and(closed)
    }
}
