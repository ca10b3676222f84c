//! SSH sessions into a guest, on async-ssh2-lite.
//!
//! A session is a small pool of logged-in SSH connections, each running
//! one command at a time: a long command never makes another task wait,
//! and one connection is never driven by two tasks at once (which
//! async-ssh2-lite does not support, its issue #28). A connection is put
//! back for the next command only when its command ran to its end; one
//! cut short (a timeout, output over the limit, a local file that failed)
//! may leave libssh2 mid-packet, so it is closed instead.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_ssh2_lite::AsyncSession;
use async_ssh2_lite::ssh2::HashType;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::host_key::{base64, openssh_line, public_key_blob};
use crate::result::CmdResult;
use crate::socket::SshSocket;

mod output;

pub use output::OutputStream;
use output::{Copy, Drained, copy, drain};
pub(crate) use output::{RawOutput, Streams};

/// How to prove who we are.
#[derive(Clone)]
pub enum Auth {
    /// A password.
    Password(String),
    /// A private key file (OpenSSH format).
    KeyFile(PathBuf),
    /// A private key in memory (OpenSSH format).
    Key(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(<redacted>)"),
            Auth::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
            Auth::Key(_) => f.write_str("Key(<redacted>)"),
        }
    }
}

impl Auth {
    fn method(&self) -> &'static str {
        match self {
            Auth::Password(_) => "password",
            Auth::KeyFile(_) => "key file",
            Auth::Key(_) => "key",
        }
    }
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// The server.
    pub addr: SocketAddr,
    /// The user.
    pub user: String,
    /// The credentials.
    pub auth: Auth,
    /// Host keys to accept, as OpenSSH public key lines (`ssh-ed25519
    /// AAAA...`). Empty accepts any key: the default for throwaway test
    /// guests; the key's fingerprint is recorded either way.
    pub known_host_keys: Vec<String>,
}

/// How to run one command.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Fail when the exit status is not 0 (the default).
    pub check: bool,
    /// The deadline for the whole command.
    pub timeout: Duration,
    /// The most bytes kept of each of stdout and stderr (256 MiB by
    /// default): a command that writes more is an
    /// [`Error::OutputTooLarge`], not a test process that grows until
    /// the host runs out of memory. Stream bigger output to a file in the
    /// guest and fetch it with a transfer.
    pub max_output: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: true,
            timeout: Duration::from_secs(600),
            max_output: 256 << 20,
        }
    }
}

/// At most this many commands of one session run at once, each on its
/// own connection; more wait their turn.
pub const MAX_CONNECTIONS: usize = 8;

/// A logged-in SSH session: commands from many tasks run at once, on up
/// to [`MAX_CONNECTIONS`] connections that share its login and host key.
pub struct SshSession {
    /// Logged-in connections that run no command.
    idle: std::sync::Mutex<Vec<AsyncSession<SshSocket>>>,
    /// A permit for each command running.
    running: tokio::sync::Semaphore,
    /// Held while a connection is being opened.
    opening: tokio::sync::Mutex<()>,
    /// How to open another connection: the first one's host key pinned
    /// (its only known host key).
    config: SshConfig,
    /// Every command of this session logs inside it.
    span: tracing::Span,
    host_key_fingerprint: String,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("addr", &self.config.addr)
            .field("user", &self.config.user)
            .field("host_key", &self.host_key_fingerprint)
            .finish()
    }
}

impl SshSession {
    /// Connects, checks the host key, and logs in, once.
    pub async fn connect(config: &SshConfig, deadline: Duration) -> Result<SshSession> {
        let (session, blob, fingerprint) = open(config, deadline).await?;
        Ok(SshSession {
            idle: std::sync::Mutex::new(vec![session]),
            running: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
            opening: tokio::sync::Mutex::new(()),
            config: SshConfig {
                known_host_keys: vec![openssh_line(&blob)],
                ..config.clone()
            },
            span: tracing::info_span!("ssh", addr = %config.addr, user = %config.user),
            host_key_fingerprint: fingerprint,
        })
    }

    /// Retries [`SshSession::connect`] with short backoff until the guest
    /// accepts or `deadline` passes. A refused login fails at once: the
    /// guest is up and retrying will not change the credentials.
    pub async fn wait_for_login(config: &SshConfig, deadline: Duration) -> Result<SshSession> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            let error = match SshSession::connect(config, left.max(Duration::from_millis(1))).await
            {
                Ok(session) => return Ok(session),
                Err(e @ (Error::Auth { .. } | Error::HostKey { .. })) => return Err(e),
                Err(e) => e,
            };
            if start.elapsed() + backoff >= deadline {
                return Err(Error::NotUp {
                    addr: config.addr,
                    after: deadline,
                    last: Box::new(error),
                });
            }
            tracing::trace!(error = %error, "guest not up yet");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// The server's host key fingerprint (`SHA256:...`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// The server's host key as an OpenSSH public key line
    /// (`ssh-ed25519 AAAA...`), to pin in a later [`SshConfig`].
    pub fn host_key(&self) -> &str {
        &self.config.known_host_keys[0]
    }

    /// Runs a command; a non-zero exit is an [`Error::Exit`] carrying the
    /// whole result.
    pub async fn run(&self, command: &str) -> Result<CmdResult> {
        self.run_with(command, &RunOptions::default()).await
    }

    /// Runs a command with options (ignore the status, a deadline).
    pub async fn run_with(&self, command: &str, options: &RunOptions) -> Result<CmdResult> {
        self.finish(
            command,
            options,
            self.exec(command, Streams::default(), options).await?,
        )
    }

    /// Runs a command and hands each line of its output, stdout and stderr
    /// apart, to `on_line` as it arrives; for long commands whose progress
    /// should show.
    pub async fn run_streaming(
        &self,
        command: &str,
        options: &RunOptions,
        mut on_line: impl FnMut(OutputStream, &str) + Send,
    ) -> Result<CmdResult> {
        let streams = Streams {
            on_line: Some(&mut on_line),
            ..Streams::default()
        };
        let raw = self.exec(command, streams, options).await?;
        self.finish(command, options, raw)
    }

    /// Logs a finished command and checks its status when asked.
    fn finish(&self, command: &str, options: &RunOptions, raw: RawOutput) -> Result<CmdResult> {
        let _entered = self.span.enter();
        let result = raw.into_result(command);
        tracing::debug!(
            command,
            exit = result.exit_status,
            ms = result.duration.as_millis() as u64,
            stdout_bytes = result.stdout.len(),
            stderr_bytes = result.stderr.len(),
            "ran"
        );
        if options.check && !result.success() {
            return Err(Error::Exit(Box::new(result)));
        }
        Ok(result)
    }

    /// Runs a command with its stdin and stdout as `streams` say, and
    /// returns its output (stdout only when it was kept). Status is not
    /// checked.
    pub(crate) async fn exec(
        &self,
        command: &str,
        streams: Streams<'_>,
        options: &RunOptions,
    ) -> Result<RawOutput> {
        let start = Instant::now();
        let exec = async {
            let _running = self.running.acquire().await.expect("never closed");
            let session = self.take_connection().await?;
            let output = run_on(&session, command, streams, options, start).await?;
            self.idle.lock().expect("idle lock").push(session);
            Ok(output)
        };
        // Its own span, so that a harness can say which command a test
        // is waiting on.
        let span = tracing::debug_span!(
            parent: &self.span,
            "run",
            command = %command,
            phase = %format_args!("running `{command}` in the guest")
        );
        tokio::time::timeout(options.timeout, exec.instrument(span))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    command: command.to_string(),
                    after: options.timeout,
                })
            })
    }

    /// An idle connection, or else a new one. Connections are opened
    /// one at a time: dropbear refuses a sixth unauthenticated
    /// connection from one address.
    async fn take_connection(&self) -> Result<AsyncSession<SshSocket>> {
        if let Some(session) = self.idle.lock().expect("idle lock").pop() {
            return Ok(session);
        }
        let _opening = self.opening.lock().await;
        // One may have come back while this waited.
        if let Some(session) = self.idle.lock().expect("idle lock").pop() {
            return Ok(session);
        }
        let (session, _, _) = open(&self.config, LOGIN_DEADLINE).await?;
        tracing::debug!(parent: &self.span, "opened another connection");
        Ok(session)
    }
}

/// How long opening another connection of a session may take.
const LOGIN_DEADLINE: Duration = Duration::from_secs(30);

/// Connects to `config.addr`, checks the host key and logs in: the
/// session, its host key blob and fingerprint.
async fn open(
    config: &SshConfig,
    deadline: Duration,
) -> Result<(AsyncSession<SshSocket>, Vec<u8>, String)> {
    let addr = config.addr;
    let attempt = async {
        let connected = |stream: tokio::net::TcpStream| {
            // SSH sends small packets and waits for answers: Nagle's
            // algorithm meeting the guest's delayed ACK cost ~40 ms a
            // command.
            stream.set_nodelay(true)?;
            SshSocket::new(stream.into_std()?)
        };
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .and_then(connected)
            .map_err(|source| Error::Connect { addr, source })?;
        let mut session = AsyncSession::new(socket, None).map_err(|e| Error::Handshake {
            addr,
            reason: e.to_string(),
        })?;
        session.handshake().await.map_err(|e| Error::Handshake {
            addr,
            reason: e.to_string(),
        })?;
        let (blob, _) = session.host_key().ok_or_else(|| Error::Handshake {
            addr,
            reason: "the server sent no host key".into(),
        })?;
        let blob = blob.to_vec();
        let fingerprint = session
            .host_key_hash(HashType::Sha256)
            .map(|h| format!("SHA256:{}", base64(h)))
            .unwrap_or_default();
        if !config.known_host_keys.is_empty()
            && !config
                .known_host_keys
                .iter()
                .any(|k| public_key_blob(k).as_deref() == Some(&blob[..]))
        {
            return Err(Error::HostKey {
                addr,
                got: fingerprint,
            });
        }
        let refused = |e: async_ssh2_lite::Error| Error::Auth {
            user: config.user.clone(),
            addr,
            method: config.auth.method(),
            reason: e.to_string(),
        };
        match &config.auth {
            Auth::Password(password) => session
                .userauth_password(&config.user, password)
                .await
                .map_err(refused)?,
            Auth::KeyFile(path) => session
                .userauth_pubkey_file(&config.user, None, path, None)
                .await
                .map_err(refused)?,
            Auth::Key(key) => session
                .userauth_pubkey_memory(&config.user, None, key, None)
                .await
                .map_err(refused)?,
        }
        tracing::debug!(%addr, user = %config.user, method = config.auth.method(), host_key = %fingerprint, "SSH login");
        Ok((session, blob, fingerprint))
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Handshake {
                addr,
                reason: format!("no answer within {deadline:?}"),
            })
        })
}

/// Runs `command` on one connection, its streams as `streams` say.
async fn run_on(
    session: &AsyncSession<SshSocket>,
    command: &str,
    mut streams: Streams<'_>,
    options: &RunOptions,
    start: Instant,
) -> Result<RawOutput> {
    let fail = |reason: String| Error::Channel {
        command: command.to_string(),
        reason,
    };
    let local = |path: &Path, source: std::io::Error| Error::Local {
        path: path.to_path_buf(),
        source,
    };
    let mut channel = session
        .channel_session()
        .await
        .map_err(|e| fail(describe(&e)))?;
    channel
        .exec(command)
        .await
        .map_err(|e| fail(describe(&e)))?;
    if let Some((input, path)) = streams.stdin.take() {
        // Written whole before the output is read: the commands
        // that take input here write little.
        copy(input, &mut channel).await.map_err(|e| match e {
            Copy::Read(e) => local(path, e),
            Copy::Write(e) => fail(format!("writing its input: {e}")),
        })?;
    }
    channel.send_eof().await.map_err(|e| fail(describe(&e)))?;
    let mut stderr_stream = channel.stderr();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let on_line = std::sync::Mutex::new(streams.on_line.take());
    // Both streams at once: a full stderr window must not stall
    // stdout. The first error ends both.
    let limit = options.max_output;
    let stdout_done = async {
        match streams.stdout.take() {
            Some((sink, path)) => copy(&mut channel, sink)
                .await
                .map(drop)
                .map_err(|e| match e {
                    Copy::Read(e) => Drained::Failed(e),
                    Copy::Write(e) => Drained::Local(path, e),
                }),
            None => {
                drain(
                    &mut channel,
                    &mut stdout,
                    OutputStream::Stdout,
                    limit,
                    &on_line,
                )
                .await
            }
        }
    };
    let stderr_done = drain(
        &mut stderr_stream,
        &mut stderr,
        OutputStream::Stderr,
        limit,
        &on_line,
    );
    tokio::try_join!(stdout_done, stderr_done).map_err(|e| match e {
        Drained::TooLarge(stream) => Error::OutputTooLarge {
            command: command.to_string(),
            stream,
            limit,
        },
        Drained::Failed(e) => fail(format!("reading its output: {e}")),
        Drained::Local(path, e) => local(path, e),
    })?;
    channel.wait_close().await.map_err(|e| fail(describe(&e)))?;
    let exit_status = channel.exit_status().map_err(|e| fail(describe(&e)))?;
    Ok(RawOutput {
        stdout,
        stderr,
        exit_status,
        duration: start.elapsed(),
    })
}

/// An SSH library error in words: a connection the guest closed (it
/// powered off, rebooted, or its QEMU ended) says so, instead of
/// libssh2's error number.
fn describe(error: &async_ssh2_lite::Error) -> String {
    use async_ssh2_lite::ssh2::ErrorCode;
    // libssh2's codes for a socket that failed or closed.
    const SOCKET_SEND: i32 = -7;
    const SOCKET_DISCONNECT: i32 = -13;
    const SOCKET_RECV: i32 = -43;
    match error {
        async_ssh2_lite::Error::Ssh2(e) => match e.code() {
            ErrorCode::Session(SOCKET_SEND | SOCKET_DISCONNECT | SOCKET_RECV) => format!(
                "the connection to the guest is gone (it powered off or rebooted, or its QEMU ended): {}",
                e.message()
            ),
            _ => e.message().to_string(),
        },
        async_ssh2_lite::Error::Io(e) => e.to_string(),
        async_ssh2_lite::Error::Other(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_keys_stay_out_of_debug_output() {
        let text = format!(
            "{:?} {:?}",
            Auth::Password("hunter2".into()),
            Auth::Key("-----BEGIN".into())
        );
        assert!(
            !text.contains("hunter2") && !text.contains("BEGIN"),
            "{text}"
        );
    }
}
