//! The transcript: every line in and out, timestamped, to a writer the
//! caller gives (the VM layer writes it to the test's `qmp.log`), and
//! reading the events back out of one.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The events QEMU sent in transcript `text`, oldest first, as the JSON
/// objects QEMU sent (each with its own `timestamp`). Lines that are not
/// events, or are cut short, are skipped.
///
/// ```
/// let text = "1.000001 -> {\"execute\": \"stop\"}\n\
///             1.000002 <- {\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n\
///             1.000003 <- {\"return\": {}}\n";
/// let events = virtest_qmp::transcript::events(text);
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0]["event"], "STOP");
/// ```
pub fn events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|line| line.split_once(" <- "))
        .filter_map(|(_, message)| serde_json::from_str::<serde_json::Value>(message).ok())
        .filter(|message| {
            message
                .get("event")
                .is_some_and(serde_json::Value::is_string)
        })
        .collect()
}

/// Which way a line went.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// From QEMU.
    In,
    /// To QEMU.
    Out,
}

/// A shared transcript writer; write errors are reported once, then the
/// transcript stops rather than failing the connection.
pub(crate) struct Transcript {
    out: Mutex<Option<Box<dyn Write + Send>>>,
}

impl Transcript {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Transcript {
        Transcript {
            out: Mutex::new(Some(out)),
        }
    }

    /// Writes `<unix seconds>.<micros> <- line` or `->`.
    pub(crate) fn line(&self, direction: Direction, line: &[u8]) {
        let mut guard = self.out.lock().expect("transcript lock");
        let Some(out) = guard.as_mut() else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let arrow = match direction {
            Direction::In => "<-",
            Direction::Out => "->",
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let result = write!(out, "{}.{:06} {arrow} ", now.as_secs(), now.subsec_micros())
            .and_then(|()| out.write_all(line))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = result {
            tracing::warn!(error = %e, "the QMP transcript cannot be written; it stops here");
            *guard = None;
        }
    }
}
