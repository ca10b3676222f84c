//! The QMP message codec: bytes in, messages out, no I/O.
//!
//! QEMU sends one JSON object per line. [`decode`] takes whatever bytes
//! have arrived and returns the first whole message and how many bytes it
//! used, or `None` when more bytes are needed. It is lenient where QEMU
//! may be newer than us (unknown events and fields pass through as JSON)
//! and strict only where the line cannot be a QMP message. Typed commands
//! (`qapi`'s, of QMP and of the guest agent) become JSON arguments and
//! their replies typed values here, for both clients.

use serde_json::{Map, Value};

/// The longest line accepted; a reply larger than this is a protocol
/// error rather than unbounded memory.
pub const MAX_LINE: usize = 64 << 20;

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting sent on connect.
    Greeting {
        /// `QMP.version` as sent.
        version: Value,
        /// `QMP.capabilities`.
        capabilities: Vec<String>,
    },
    /// A command's successful reply.
    Return {
        /// The id the command was sent with, if any.
        id: Option<Value>,
        /// The returned value.
        value: Value,
    },
    /// A command's error reply.
    Error {
        /// The id the command was sent with, if any.
        id: Option<Value>,
        /// The error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// An asynchronous event, kept as JSON.
    Event {
        /// The event name (`STOP`, `MIGRATION`, or one we do not know).
        name: String,
        /// Its `data`, or `null`.
        data: Value,
        /// Its `timestamp` as (seconds, microseconds), if well formed.
        timestamp: Option<(i64, i64)>,
    },
}

/// Why a line is not a QMP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line is not JSON.
    #[error("malformed JSON from the server: {reason} in {line:?}")]
    Json {
        /// The parser's message.
        reason: String,
        /// The start of the line.
        line: String,
    },
    /// The line is JSON but none of greeting, return, error or event.
    #[error("not a QMP message: {line:?}")]
    NotQmp {
        /// The start of the line.
        line: String,
    },
    /// A line longer than [`MAX_LINE`] without its end.
    #[error("a message over {MAX_LINE} bytes without a line end")]
    TooLong,
}

/// Decodes the first message in `buf`: `Ok(Some((message, used)))`, or
/// `Ok(None)` when `buf` holds no whole line yet. Blank lines are skipped.
///
/// ```
/// use virtest_qmp::codec::{decode, Message};
/// let bytes = b"{\"return\": {}, \"id\": 1}\r\n{\"ev";
/// let (msg, used) = decode(bytes).unwrap().unwrap();
/// assert!(matches!(msg, Message::Return { .. }));
/// assert_eq!(decode(&bytes[used..]).unwrap(), None);
/// ```
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let mut start = 0;
    loop {
        let Some(end) = buf[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|n| start + n)
        else {
            return if buf.len() - start > MAX_LINE {
                Err(DecodeError::TooLong)
            } else {
                Ok(None)
            };
        };
        let line = &buf[start..end];
        if line.iter().all(u8::is_ascii_whitespace) {
            start = end + 1;
            continue;
        }
        return parse_line(line).map(|m| Some((m, end + 1)));
    }
}

/// Parses one line (without its newline) into a message.
pub fn parse_line(line: &[u8]) -> Result<Message, DecodeError> {
    let preview = || String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    let value: Value = serde_json::from_slice(line).map_err(|e| DecodeError::Json {
        reason: e.to_string(),
        line: preview(),
    })?;
    let Value::Object(mut object) = value else {
        return Err(DecodeError::NotQmp { line: preview() });
    };
    // `"id": null` is no id.
    let id = object.remove("id").filter(|id| !id.is_null());
    if let Some(value) = object.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = object.remove("error") {
        let field = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        });
    }
    if let Some(Value::String(name)) = object.remove("event") {
        return Ok(Message::Event {
            name,
            data: object.remove("data").unwrap_or(Value::Null),
            timestamp: object.get("timestamp").and_then(timestamp),
        });
    }
    if let Some(Value::Object(qmp)) = object.remove("QMP") {
        return Ok(greeting(qmp));
    }
    Err(DecodeError::NotQmp { line: preview() })
}

fn greeting(mut qmp: Map<String, Value>) -> Message {
    let capabilities = match qmp.remove("capabilities") {
        Some(Value::Array(caps)) => caps
            .into_iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Message::Greeting {
        version: qmp.remove("version").unwrap_or(Value::Null),
        capabilities,
    }
}

fn timestamp(value: &Value) -> Option<(i64, i64)> {
    Some((
        value.get("seconds")?.as_i64()?,
        value.get("microseconds")?.as_i64()?,
    ))
}

/// Encodes a command as one line: `{"execute": name, "arguments": args,
/// "id": id}` and a newline. Null arguments and a missing id are left out:
/// QEMU reads commands one byte at a time, so every byte costs.
pub fn encode_command(name: &str, arguments: &Value, id: Option<&Value>) -> Vec<u8> {
    encode(Execution::InBand, name, arguments, id)
}

/// How a command is run: in the main loop, queued behind the others
/// (`execute`), or out of band (`exec-oob`), at once, even while the main
/// loop is blocked. Only a few commands allow the second
/// (`migrate-recover`, `migrate-pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// `execute`.
    InBand,
    /// `exec-oob` (negotiated with `oob`; needs an id).
    OutOfBand,
}

/// [`encode_command`], run as `execution` says.
pub fn encode(execution: Execution, name: &str, arguments: &Value, id: Option<&Value>) -> Vec<u8> {
    let key = match execution {
        Execution::InBand => "execute",
        Execution::OutOfBand => "exec-oob",
    };
    let mut object = Map::new();
    object.insert(key.into(), Value::String(name.into()));
    if !arguments.is_null() {
        object.insert("arguments".into(), arguments.clone());
    }
    if let Some(id) = id {
        object.insert("id".into(), id.clone());
    }
    let mut line = serde_json::to_vec(&Value::Object(object)).expect("JSON values serialize");
    line.push(b'\n');
    line
}

/// A typed command's arguments as JSON: `null` when it has none.
pub(crate) fn command_args<C: qapi::Command>(command: &C) -> crate::Result<Value> {
    let args = serde_json::to_value(command)
        .map_err(|e| crate::Error::Protocol(format!("`{}` does not serialize: {e}", C::NAME)))?;
    Ok(match args.as_object().is_some_and(|o| o.is_empty()) {
        true => Value::Null,
        false => args,
    })
}

/// A typed command's reply, read from its JSON; `whose` names the peer
/// in the error (`the reply`, `the agent's reply`).
pub(crate) fn typed_reply<C: qapi::Command>(value: Value, whose: &str) -> crate::Result<C::Ok> {
    serde_json::from_value(value).map_err(|e| {
        crate::Error::Protocol(format!(
            "{whose} to `{}` does not fit its schema type: {e}",
            C::NAME
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(bytes: &[u8]) -> Message {
        let (message, used) = decode(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        message
    }

    #[test]
    fn a_real_greeting_decodes() {
        let line = br#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        let Message::Greeting {
            version,
            capabilities,
        } = one(&bytes)
        else {
            panic!()
        };
        assert_eq!(version["qemu"]["major"], 7);
        assert_eq!(capabilities, ["oob"]);
    }

    #[test]
    fn returns_errors_and_events_decode() {
        assert_eq!(
            one(b"{\"return\": {\"status\": \"running\"}, \"id\": 7}\n"),
            Message::Return {
                id: Some(json!(7)),
                value: json!({"status": "running"})
            }
        );
        assert_eq!(
            one(b"{\"id\": \"a\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\n"),
            Message::Error { id: Some(json!("a")), class: "CommandNotFound".into(), desc: "The command nope has not been found".into() }
        );
        // An event we do not know, with an enum value we do not know.
        let Message::Event { name, data, timestamp } =
            one(b"{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 5}, \"event\": \"FUTURE_THING\", \"data\": {\"status\": \"brand-new\"}}\n")
        else {
            panic!()
        };
        assert_eq!(
            (name.as_str(), data["status"].as_str()),
            ("FUTURE_THING", Some("brand-new"))
        );
        assert_eq!(timestamp, Some((1700000000, 5)));
        assert_eq!(
            one(b"{\"event\": \"STOP\"}\n"),
            Message::Event {
                name: "STOP".into(),
                data: Value::Null,
                timestamp: None
            }
        );
    }

    #[test]
    fn partial_input_needs_more_and_lines_split_anywhere() {
        let stream = b"\r\n{\"return\": {}, \"id\": 1}\r\n{\"event\": \"RESUME\"}\n";
        for cut in 0..stream.len() {
            let first = decode(&stream[..cut]).unwrap();
            if cut < 27 {
                assert_eq!(first, None, "cut at {cut}");
            }
        }
        let (first, used) = decode(stream).unwrap().unwrap();
        assert!(matches!(first, Message::Return { .. }));
        let (second, rest) = decode(&stream[used..]).unwrap().unwrap();
        assert!(matches!(second, Message::Event { .. }));
        assert_eq!(used + rest, stream.len());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b"{not json\n"[..],
            b"[1, 2]\n",
            b"{\"hello\": 1}\n",
            b"\xff\xfe\n",
            b"{\"event\": 3}\n",
            b"null\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let huge = vec![b' '; MAX_LINE + 1];
        assert_eq!(decode(&huge), Err(DecodeError::TooLong));
    }

    #[test]
    fn a_16_mib_reply_decodes() {
        let big = "x".repeat(16 << 20);
        let line = format!("{{\"return\": \"{big}\", \"id\": 3}}\n");
        let Message::Return { value, .. } = one(line.as_bytes()) else {
            panic!()
        };
        assert_eq!(value.as_str().unwrap().len(), 16 << 20);
    }

    #[test]
    fn commands_encode_as_one_line() {
        let line = encode_command("query-status", &Value::Null, None);
        assert_eq!(line, b"{\"execute\":\"query-status\"}\n");
        let line = encode_command("query-status", &Value::Null, Some(&json!(1)));
        assert_eq!(line, b"{\"execute\":\"query-status\",\"id\":1}\n");
        let line = encode_command("stop", &json!({"a": "b\nc"}), Some(&json!(2)));
        let oob = encode(
            Execution::OutOfBand,
            "migrate-pause",
            &Value::Null,
            Some(&json!(3)),
        );
        assert_eq!(oob, b"{\"exec-oob\":\"migrate-pause\",\"id\":3}\n");
        assert_eq!(
            line.iter().filter(|&&b| b == b'\n').count(),
            1,
            "newlines inside strings are escaped"
        );
    }
}
