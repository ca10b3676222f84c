//! The reading side of a connection: the greeting, then every message
//! handed to the command waiting for it or to the event log.

use super::*;

/// Reads until the first message, which must be the greeting.
pub(super) async fn read_greeting<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> Result<Greeting> {
    loop {
        match codec::decode(buf) {
            Ok(Some((message, used))) => {
                if let Some(t) = &shared.transcript {
                    t.line(Direction::In, &buf[..used]);
                }
                buf.drain(..used);
                return match message {
                    Message::Greeting {
                        version,
                        capabilities,
                    } => Ok(Greeting {
                        version: (
                            version["qemu"]["major"].as_u64().unwrap_or(0),
                            version["qemu"]["minor"].as_u64().unwrap_or(0),
                            version["qemu"]["micro"].as_u64().unwrap_or(0),
                        ),
                        package: version["package"]
                            .as_str()
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                        capabilities,
                    }),
                    other => Err(Error::Greeting(format!(
                        "the first message is not a greeting: {other:?}"
                    ))),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(Error::Greeting(e.to_string())),
        }
        let n = read_more(read, buf)
            .await
            .map_err(|e| Error::Greeting(format!("reading it failed: {e}")))?;
        if n == 0 {
            return Err(Error::Greeting(
                "the connection closed before any greeting".into(),
            ));
        }
    }
}

async fn read_more<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.reserve(64 << 10);
    read.read_buf(buf).await
}

/// The reader task: decodes messages until the stream ends.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
) {
    let reason = loop {
        // Decode every whole message already buffered.
        let mut consumed = 0;
        let failure = loop {
            match codec::decode(&buf[consumed..]) {
                Ok(Some((message, used))) => {
                    if let Some(t) = &shared.transcript {
                        t.line(Direction::In, &buf[consumed..consumed + used]);
                    }
                    consumed += used;
                    dispatch(&shared, message);
                }
                Ok(None) => break None,
                Err(codec::DecodeError::TooLong) => {
                    break Some(codec::DecodeError::TooLong.to_string());
                }
                Err(e) => {
                    // A bad line is skipped; the stream stays usable.
                    let end = buf[consumed..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(buf.len(), |n| consumed + n + 1);
                    if let Some(t) = &shared.transcript {
                        t.line(Direction::In, &buf[consumed..end]);
                    }
                    tracing::warn!(error = %e, "skipping a line that is not QMP");
                    consumed = end;
                }
            }
        };
        buf.drain(..consumed);
        if let Some(reason) = failure {
            break reason;
        }
        match read_more(&mut read, &mut buf).await {
            Ok(0) if buf.is_empty() => break "the server closed the connection".to_string(),
            Ok(0) => {
                break format!(
                    "the server closed the connection in the middle of a message ({} bytes)",
                    buf.len()
                );
            }
            Ok(_) => {}
            Err(e) => break format!("reading failed: {e}"),
        }
    };
    tracing::debug!(%reason, "QMP reader stopped");
    shared.close(reason);
    shared.reader_stopped.send_replace(true);
}

/// Routes one message: replies to their command, events to the log.
fn dispatch(shared: &Shared, message: Message) {
    let ids = shared.send_ids.load(Ordering::Relaxed);
    match message {
        Message::Return { id, value } => {
            if let Some((_, tx)) = take_waiter(shared, id.as_ref(), ids) {
                let _ = tx.send(Ok(value));
            }
        }
        Message::Error { id, class, desc } => {
            if let Some((command, tx)) = take_waiter(shared, id.as_ref(), ids) {
                let error = if ids && id.is_none() {
                    Error::Protocol(format!(
                        "QEMU could not read command `{command}`: {class}: {desc}"
                    ))
                } else {
                    Error::Command {
                        command,
                        class,
                        desc,
                    }
                };
                let _ = tx.send(Err(error));
            }
        }
        Message::Event {
            name,
            data,
            timestamp,
        } => {
            shared.events.push(name, data, timestamp);
        }
        Message::Greeting { .. } => tracing::warn!("a second QMP greeting; ignored"),
    }
}

/// The command a reply answers. With ids, the one with the reply's id, or
/// for a reply without one the oldest (QEMU leaves out the id only when it
/// could not read the command). Without ids, the oldest; a reply that
/// carries an id we never sent is dropped.
fn take_waiter(shared: &Shared, id: Option<&Value>, ids: bool) -> Option<Waiter> {
    let mut pending = shared.pending.lock().expect("pending lock");
    let waiter = match (id, ids) {
        (Some(id), true) => id.as_u64().and_then(|n| pending.waiters.remove(&n)),
        (None, _) => pending.waiters.pop_first().map(|(_, w)| w),
        (Some(_), false) => None,
    };
    if waiter.is_none() {
        tracing::warn!(id = ?id, "a QMP reply no command is waiting for; dropped");
    }
    waiter
}
