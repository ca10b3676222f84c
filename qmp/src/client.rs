//! The QMP client: one connection, many tasks.
//!
//! A reader task owns the read half: it routes each reply to its command
//! and appends each event to the event log. Commands take the write half
//! in turn. When the stream ends, every pending command gets
//! [`Error::Disconnected`] and waits on events end.
//!
//! Routing: without out-of-band execution QEMU runs in-band commands one
//! at a time and answers in order, so replies go to the oldest pending
//! command and commands carry no id. That is not only simpler: QEMU's
//! monitor reads commands one byte per system call, and an id made each
//! command a third slower on these machines. With out-of-band enabled QEMU
//! requires ids, and replies are routed by id.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::codec::{self, Execution, Message};
use crate::error::{Error, Result};
use crate::event::{Event, EventCursor, EventLog, Subscription};
use crate::fdpass;
use crate::transcript::{Direction, TranscriptWriter};

mod reader;
mod shared;

use reader::{read_greeting, read_loop};
use shared::{Pending, Shared, Waiter};

/// The default deadline for a command's reply.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server said about itself when we connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version as (major, minor, micro).
    pub version: (u64, u64, u64),
    /// The package string (`Debian 1:7.2+dfsg-7`), possibly empty.
    pub package: String,
    /// Capabilities offered (`oob`).
    pub capabilities: Vec<String>,
}

/// How to connect.
#[derive(Clone)]
pub struct Options {
    /// Where to write the transcript, if anywhere.
    pub transcript: Option<TranscriptWriter>,
    /// The deadline for each command's reply.
    pub command_timeout: Duration,
    /// Enable out-of-band execution when the server offers it.
    pub oob: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            transcript: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            oob: false,
        }
    }
}

/// A QMP connection; clone it to use it from many tasks.
///
/// Dropping the last clone stops the reader task and closes the socket.
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

struct Inner {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    /// The socket under `writer`, when it is a unix socket (file
    /// descriptors can be passed over it).
    unix_socket: Option<OwnedFd>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    greeting: Greeting,
    command_timeout: Duration,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("greeting", &self.inner.greeting)
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects to a unix socket, waiting up to `deadline` for it to
    /// appear and accept, then reads the greeting and negotiates.
    pub async fn connect_unix(path: &Path, deadline: Duration, options: Options) -> Result<Qmp> {
        let start = Instant::now();
        let stream = retry_until(start + deadline, path.display().to_string(), || {
            tokio::net::UnixStream::connect(path)
        })
        .await?;
        // A second descriptor of the socket, for messages that carry a
        // file descriptor (`sendmsg`), beside the writer's stream.
        let socket = stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Connect {
                addr: path.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let left = deadline.saturating_sub(start.elapsed());
        Qmp::start(read, write, Some(socket), left, options).await
    }

    /// Connects over TCP, waiting up to `deadline` for the port to accept.
    pub async fn connect_tcp(
        addr: std::net::SocketAddr,
        deadline: Duration,
        options: Options,
    ) -> Result<Qmp> {
        let start = Instant::now();
        let stream = retry_until(start + deadline, addr.to_string(), || {
            tokio::net::TcpStream::connect(addr)
        })
        .await?;
        stream.set_nodelay(true).ok();
        let (read, write) = stream.into_split();
        Qmp::start(
            read,
            write,
            None,
            deadline.saturating_sub(start.elapsed()),
            options,
        )
        .await
    }

    /// Runs the protocol over any stream: reads the greeting (within
    /// `deadline`), starts the reader, and sends `qmp_capabilities`.
    pub async fn handshake<S>(stream: S, deadline: Duration, options: Options) -> Result<Qmp>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Qmp::start(read, write, None, deadline, options).await
    }

    /// [`Qmp::handshake`] over a stream already split in two (sockets
    /// split without the lock `tokio::io::split` needs).
    async fn start<R, W>(
        mut read: R,
        write: W,
        unix_socket: Option<OwnedFd>,
        deadline: Duration,
        options: Options,
    ) -> Result<Qmp>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            send_ids: AtomicBool::new(false),
            events: Arc::new(EventLog::new()),
            transcript: options.transcript,
            reader_stopped: tokio::sync::watch::Sender::new(false),
        });
        let mut buf = Vec::with_capacity(64 << 10);
        let greeting = tokio::time::timeout(deadline, read_greeting(&mut read, &mut buf, &shared))
            .await
            .map_err(|_| Error::Timeout {
                what: "the QMP greeting".into(),
                after: deadline,
            })??;
        let reader = tokio::spawn(read_loop(read, buf, shared.clone()));
        let qmp = Qmp {
            inner: Arc::new(Inner {
                writer: tokio::sync::Mutex::new(Box::new(write)),
                unix_socket,
                shared,
                next_id: AtomicU64::new(1),
                command_timeout: options.command_timeout,
                greeting,
                reader,
            }),
        };
        let enable: Vec<&str> =
            if options.oob && qmp.inner.greeting.capabilities.iter().any(|c| c == "oob") {
                vec!["oob"]
            } else {
                vec![]
            };
        let args = if enable.is_empty() {
            Value::Null
        } else {
            json!({ "enable": enable })
        };
        qmp.execute_raw("qmp_capabilities", args)
            .await
            .map_err(|e| Error::Negotiation(Box::new(e)))?;
        // Out-of-band replies may overtake others: route by id from now on.
        qmp.inner
            .shared
            .send_ids
            .store(!enable.is_empty(), Ordering::Relaxed);
        Ok(qmp)
    }

    /// What the server said when we connected.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Runs a command from `qapi`'s generated definitions and returns its
    /// typed reply.
    ///
    /// ```no_run
    /// # async fn f(qmp: virtest_qmp::Qmp) -> virtest_qmp::Result<()> {
    /// let status = qmp.execute(qapi::qmp::query_status {}).await?;
    /// println!("running: {}", status.running);
    /// # Ok(()) }
    /// ```
    pub async fn execute<C: qapi::Command>(&self, command: C) -> Result<C::Ok> {
        self.execute_within(command, self.inner.command_timeout)
            .await
    }

    /// [`Qmp::execute`] with its own deadline.
    pub async fn execute_within<C: qapi::Command>(
        &self,
        command: C,
        deadline: Duration,
    ) -> Result<C::Ok> {
        let value = self
            .execute_raw_within(C::NAME, codec::command_args(&command)?, deadline)
            .await?;
        codec::typed_reply::<C>(value, "the reply")
    }

    /// Runs any command by name, with JSON arguments (`null` for none).
    pub async fn execute_raw(&self, name: &str, args: Value) -> Result<Value> {
        self.execute_raw_within(name, args, self.inner.command_timeout)
            .await
    }

    /// [`Qmp::execute_raw`] with its own deadline.
    pub async fn execute_raw_within(
        &self,
        name: &str,
        args: Value,
        deadline: Duration,
    ) -> Result<Value> {
        self.run(Execution::InBand, name, args, deadline).await
    }

    /// Runs a command out of band (`exec-oob`): QEMU answers at once, even
    /// while its main loop is blocked (a destination waiting for a
    /// paused postcopy's pages). Only commands that allow it
    /// (`migrate-recover`, `migrate-pause`), on a connection made with
    /// [`Options::oob`] to a QEMU that offers it.
    pub async fn execute_oob_within<C: qapi::Command>(
        &self,
        command: C,
        deadline: Duration,
    ) -> Result<C::Ok> {
        if !self.inner.shared.send_ids.load(Ordering::Relaxed) {
            return Err(Error::Protocol(format!(
                "`{}` out of band: the connection did not negotiate `oob`",
                C::NAME
            )));
        }
        let args = codec::command_args(&command)?;
        let value = self
            .run(Execution::OutOfBand, C::NAME, args, deadline)
            .await?;
        codec::typed_reply::<C>(value, "the reply")
    }

    /// Sends a command as `execution` says and waits for its reply.
    async fn run(
        &self,
        execution: Execution,
        name: &str,
        args: Value,
        deadline: Duration,
    ) -> Result<Value> {
        let shared = &self.inner.shared;
        let send_ids = shared.send_ids.load(Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (id, others_in_flight) = {
            // Taking a place among the pending and in the outbox under one
            // lock keeps the wire order equal to the order replies are
            // matched in.
            let mut pending = shared.pending.lock().expect("pending lock");
            let (id, line) = self.take_place(&mut pending, execution, name, &args, send_ids, tx)?;
            pending.outbox.extend_from_slice(&line);
            (id, pending.waiters.len() > 1)
        };
        if others_in_flight {
            // Let the other tasks sending now queue theirs: one write for all.
            tokio::task::yield_now().await;
        }
        self.flush_outbox().await;
        self.wait_reply(name, id, rx, send_ids, deadline).await
    }

    /// Gives a command its id and its place among the pending, under the
    /// caller's lock, and returns its line (written to the transcript).
    fn take_place(
        &self,
        pending: &mut Pending,
        execution: Execution,
        name: &str,
        args: &Value,
        send_ids: bool,
        reply: oneshot::Sender<Result<Value>>,
    ) -> Result<(u64, Vec<u8>)> {
        if let Some(reason) = &pending.closed {
            return Err(Error::Disconnected {
                reason: reason.clone(),
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let line = codec::encode(execution, name, args, send_ids.then(|| json!(id)).as_ref());
        if let Some(t) = &self.inner.shared.transcript {
            t.line(Direction::Out, &line);
        }
        pending.waiters.insert(id, (name.to_string(), reply));
        Ok((id, line))
    }

    /// Waits for the reply to command `id`.
    async fn wait_reply(
        &self,
        name: &str,
        id: u64,
        rx: oneshot::Receiver<Result<Value>>,
        send_ids: bool,
        deadline: Duration,
    ) -> Result<Value> {
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::Disconnected {
                reason: "the reader stopped".into(),
            }),
            Err(_) => {
                // Replies in order: the late reply must still find this
                // command's place, or it would go to the next command.
                if send_ids {
                    self.inner.shared.forget(id);
                }
                Err(Error::Timeout {
                    what: format!("QMP command `{name}`"),
                    after: deadline,
                })
            }
        }
    }

    /// Runs a command with a file descriptor attached (`getfd`,
    /// `add-fd`): QEMU takes a copy of `fd`. Only over a unix socket.
    ///
    /// ```no_run
    /// # async fn f(qmp: virtest_qmp::Qmp, file: std::fs::File) -> virtest_qmp::Result<()> {
    /// use std::os::fd::AsFd;
    /// let args = serde_json::json!({"fdname": "migration"});
    /// qmp.execute_with_fd("getfd", args, file.as_fd()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_with_fd(
        &self,
        name: &str,
        args: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value> {
        let socket = self.inner.unix_socket.as_ref().ok_or_else(|| {
            Error::Protocol("file descriptors can only be passed over a unix socket".into())
        })?;
        let shared = &self.inner.shared;
        let send_ids = shared.send_ids.load(Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // Holding the writer keeps every other line off the socket while
        // this one goes out with its descriptor.
        let mut writer = self.inner.writer.lock().await;
        let (id, line, earlier) = {
            let mut pending = shared.pending.lock().expect("pending lock");
            let (id, line) =
                self.take_place(&mut pending, Execution::InBand, name, &args, send_ids, tx)?;
            (id, line, std::mem::take(&mut pending.outbox))
        };
        let sent = async {
            if !earlier.is_empty() {
                writer.write_all(&earlier).await?;
                writer.flush().await?;
            }
            let mut at = 0;
            while at < line.len() {
                let with = (at == 0).then_some(fd);
                match fdpass::send(socket.as_fd(), &line[at..], with) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        if let Err(e) = sent.await {
            shared.close(format!("sending a command failed: {e}"));
        }
        drop(writer);
        let deadline = self.inner.command_timeout;
        self.wait_reply(name, id, rx, send_ids, deadline).await
    }

    /// Writes whatever commands are queued, in one write. A command whose
    /// line another task already wrote finds the outbox empty. A failed
    /// write ends the connection: every pending command gets the error.
    async fn flush_outbox(&self) {
        let shared = &self.inner.shared;
        let mut writer = self.inner.writer.lock().await;
        let batch = std::mem::take(&mut shared.pending.lock().expect("pending lock").outbox);
        if batch.is_empty() {
            return;
        }
        let written = match writer.write_all(&batch).await {
            Ok(()) => writer.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            shared.close(format!("sending a command failed: {e}"));
        }
    }

    /// Runs a human monitor command (`info status`) and returns its text.
    pub async fn hmp(&self, command_line: &str) -> Result<String> {
        self.execute(qapi::qmp::human_monitor_command {
            command_line: command_line.into(),
            cpu_index: None,
        })
        .await
    }

    /// Asks QEMU to quit. The socket closing before the reply arrives
    /// counts as success.
    pub async fn quit(&self) -> Result<()> {
        match self.execute_raw("quit", Value::Null).await {
            Ok(_) | Err(Error::Disconnected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A point in the event stream. Take it before triggering an event,
    /// then [`Qmp::wait_event`] from it: the event cannot be missed.
    pub fn event_cursor(&self) -> EventCursor {
        self.inner.shared.events.cursor()
    }

    /// Waits for an event named `name` whose data holds `filter` (`null`
    /// for any), among those that arrived after `since`, until `deadline`.
    ///
    /// ```no_run
    /// # async fn f(qmp: virtest_qmp::Qmp) -> virtest_qmp::Result<()> {
    /// use std::time::Duration;
    /// let since = qmp.event_cursor();
    /// qmp.execute(qapi::qmp::stop {}).await?;
    /// qmp.wait_event(since, "STOP", &serde_json::Value::Null, Duration::from_secs(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_event(
        &self,
        since: EventCursor,
        name: &str,
        filter: &Value,
        deadline: Duration,
    ) -> Result<Event> {
        let pick = |e: &Event| e.matches(name, filter);
        let (event, _) = self
            .inner
            .shared
            .events
            .wait(since, &format!("event {name}"), &pick, Some(deadline))
            .await?;
        Ok(event)
    }

    /// A subscriber that sees every event from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            log: self.inner.shared.events.clone(),
            cursor: self.event_cursor(),
        }
    }

    /// Waits until the reader has taken everything the server sent
    /// before it closed the connection (into the transcript, too): at
    /// once when it has already stopped.
    pub async fn reader_stopped(&self) {
        let mut stopped = self.inner.shared.reader_stopped.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner
            .shared
            .pending
            .lock()
            .expect("pending lock")
            .closed
            .is_some()
    }
}

/// Connects with short backoff until `until`, keeping the last error.
async fn retry_until<T, F, Fut>(until: Instant, addr: String, mut connect: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        match connect().await {
            Ok(stream) => return Ok(stream),
            Err(source) if Instant::now() + backoff >= until => {
                return Err(Error::Connect { addr, source });
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
}
