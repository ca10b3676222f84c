//! The guest agent's protocol (QGA): JSON commands to `qemu-ga` in the
//! guest, over the VM's agent channel.
//!
//! Unlike QMP there is no greeting and no command id, and a reply that
//! came late (after its caller gave up) would be read as the next one's.
//! So the client synchronizes with `guest-sync-delimited` when it
//! connects and after any command that timed out: it sends the byte 0xFF
//! (which resets the agent's parser; the agent may answer it with an
//! error, discarded) and a sync with a fresh id, then skips everything up
//! to the 0xFF the agent puts before its answer, and checks the id. One
//! command at a time.
//!
//! ```no_run
//! # async fn f() -> virtest_qmp::Result<()> {
//! use std::time::Duration;
//! let agent = virtest_qmp::Qga::connect_unix("/run/vm/qga.sock".as_ref(), Duration::from_secs(30)).await?;
//! agent.execute(qapi::qga::guest_ping {}).await?;
//! let info = agent.execute(qapi::qga::guest_info {}).await?;
//! println!("qemu-ga {}", info.version);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use crate::codec;
use crate::error::{Error, Result};

/// How long a command may take unless told (`guest-exec` returns at
/// once; `guest-fsfreeze-freeze` can take a while).
pub const DEFAULT_QGA_TIMEOUT: Duration = Duration::from_secs(30);

/// The byte that delimits a sync's answer, and resets the agent's parser.
const DELIMITER: u8 = 0xff;

/// A connection to a guest agent.
#[derive(Debug)]
pub struct Qga {
    io: Mutex<Io>,
    next_sync: AtomicU64,
    path: String,
}

#[derive(Debug)]
struct Io {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// A command timed out: a late reply may be on its way.
    desynced: bool,
}

impl Qga {
    /// Connects to the agent's unix socket (retrying until `deadline`, as
    /// QEMU or the agent may not listen yet) and synchronizes.
    pub async fn connect_unix(path: &Path, deadline: Duration) -> Result<Qga> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(source) if start.elapsed() >= deadline => {
                    return Err(Error::Connect {
                        addr: path.display().to_string(),
                        source,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (reader, writer) = stream.into_split();
        let qga = Qga {
            io: Mutex::new(Io {
                reader: BufReader::new(reader),
                writer,
                desynced: true,
            }),
            // Ids differ across connections, so a stale answer of an
            // earlier client never matches.
            next_sync: AtomicU64::new(u64::from(std::process::id()) << 32 | start_nanos()),
            path: path.display().to_string(),
        };
        let left = deadline
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        qga.sync(&mut *qga.io.lock().await, left).await?;
        Ok(qga)
    }

    /// Runs a command typed by `qapi`'s QGA schema, within
    /// [`DEFAULT_QGA_TIMEOUT`].
    pub async fn execute<C: qapi::Command>(&self, command: C) -> Result<C::Ok> {
        self.execute_within(command, DEFAULT_QGA_TIMEOUT).await
    }

    /// [`Qga::execute`] with its own deadline.
    pub async fn execute_within<C: qapi::Command>(
        &self,
        command: C,
        deadline: Duration,
    ) -> Result<C::Ok> {
        let args = codec::command_args(&command)?;
        let value = self.execute_raw_within(C::NAME, args, deadline).await?;
        codec::typed_reply::<C>(value, "the agent's reply")
    }

    /// Runs any command by name with JSON arguments (`null` or `{}` for
    /// none), within `deadline`.
    pub async fn execute_raw_within(
        &self,
        name: &str,
        args: Value,
        deadline: Duration,
    ) -> Result<Value> {
        let mut io = self.io.lock().await;
        if io.desynced {
            self.sync(&mut io, deadline).await?;
        }
        let mut request = json!({ "execute": name });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            request["arguments"] = args;
        }
        let exchange = async {
            send(&mut io.writer, &request).await?;
            read_message(&mut io.reader).await
        };
        let reply = match tokio::time::timeout(deadline, exchange).await {
            Ok(reply) => reply?,
            Err(_) => {
                io.desynced = true;
                return Err(Error::Timeout {
                    what: format!("the guest agent's `{name}`"),
                    after: deadline,
                });
            }
        };
        tracing::debug!(agent = %self.path, command = name, "guest agent command");
        answer(name, reply)
    }

    /// Sends a command the agent does not answer when it succeeds
    /// (`guest-shutdown`, `guest-suspend-*`): its error, if the agent
    /// sends one within `error_wait`, else success. The next command
    /// resynchronizes first.
    pub(crate) async fn send_unanswered(
        &self,
        name: &str,
        args: Value,
        error_wait: Duration,
    ) -> Result<()> {
        let mut io = self.io.lock().await;
        if io.desynced {
            self.sync(&mut io, DEFAULT_QGA_TIMEOUT).await?;
        }
        let request = json!({ "execute": name, "arguments": args });
        send(&mut io.writer, &request).await?;
        io.desynced = true;
        tracing::debug!(agent = %self.path, command = name, "guest agent command, no answer expected");
        match tokio::time::timeout(error_wait, read_message(&mut io.reader)).await {
            Ok(Ok(reply)) => answer(name, reply).map(drop),
            // Closed: the guest went down as asked.
            Ok(Err(Error::Disconnected { .. })) | Err(_) => Ok(()),
            Ok(Err(other)) => Err(other),
        }
    }

    /// Resynchronizes: 0xFF, `guest-sync-delimited` with a fresh id, and
    /// everything up to the agent's 0xFF skipped.
    async fn sync(&self, io: &mut Io, deadline: Duration) -> Result<()> {
        let id = self.next_sync.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            io.writer
                .write_all(&[DELIMITER])
                .await
                .map_err(disconnected)?;
            let sync = json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
            send(&mut io.writer, &sync).await?;
            loop {
                let mut skipped = Vec::new();
                let n = io
                    .reader
                    .read_until(DELIMITER, &mut skipped)
                    .await
                    .map_err(disconnected)?;
                if n == 0 || skipped.last() != Some(&DELIMITER) {
                    return Err(Error::Disconnected {
                        reason: "the agent closed the channel".into(),
                    });
                }
                let reply = read_message(&mut io.reader).await?;
                // An answer to an earlier sync is skipped too.
                if reply.get("return").and_then(Value::as_u64) == Some(id) {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => {
                io.desynced = result.is_err();
                result
            }
            Err(_) => Err(Error::Timeout {
                what: format!("the guest agent at `{}` (guest-sync-delimited)", self.path),
                after: deadline,
            }),
        }
    }
}

/// A seed for sync ids that differs between connections.
fn start_nanos() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    u64::from(nanos)
}

fn disconnected(e: std::io::Error) -> Error {
    Error::Disconnected {
        reason: e.to_string(),
    }
}

async fn send(writer: &mut OwnedWriteHalf, message: &Value) -> Result<()> {
    let mut line = message.to_string().into_bytes();
    line.push(b'\n');
    writer.write_all(&line).await.map_err(disconnected)
}

/// The next JSON message: one line.
async fn read_message(reader: &mut BufReader<OwnedReadHalf>) -> Result<Value> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(disconnected)?;
    if n == 0 {
        return Err(Error::Disconnected {
            reason: "the agent closed the channel".into(),
        });
    }
    serde_json::from_slice(&line).map_err(|e| {
        Error::Protocol(format!(
            "the guest agent sent what is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    })
}

/// A reply's `return`, or its `error` as [`Error::AgentCommand`].
fn answer(name: &str, reply: Value) -> Result<Value> {
    if let Some(value) = reply.get("return") {
        return Ok(value.clone());
    }
    match reply.get("error") {
        Some(error) => Err(Error::AgentCommand {
            command: name.to_string(),
            class: error["class"].as_str().unwrap_or("").to_string(),
            desc: error["desc"].as_str().unwrap_or("").to_string(),
        }),
        None => Err(Error::Protocol(format!(
            "the guest agent's reply to `{name}` has neither return nor error: {reply}"
        ))),
    }
}
