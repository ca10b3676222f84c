//! The transcript: every line in and out, timestamped, written on a
//! thread of its own to a writer the caller gives (the VM layer writes
//! it to the test's `qmp.log`), and reading the events back out of one.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

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

/// What the writer thread is given.
enum Entry {
    /// A whole line, timestamped and ended with `\n`.
    Line(Vec<u8>),
    /// Answer once every line sent before is written.
    Written(oneshot::Sender<()>),
}

/// Where transcripts go: a writer on a thread of its own, so a slow or
/// full disk never holds an async worker. Clone it to give one writer to
/// many connections (every QEMU process of a VM shares its `qmp.log`,
/// in the order the lines were sent or received).
///
/// Lines wait in memory until written, up to [`TRANSCRIPT_BACKLOG`]
/// bytes: past it, while the disk does not keep up, lines are dropped
/// and the transcript says how many. The thread writes what is queued,
/// then flushes. A write error is reported once, then the
/// transcript stops rather than failing the connection. The thread
/// ends, after the last line, when the last clone is dropped; lines
/// still queued when the process exits are lost, so await
/// [`TranscriptWriter::written`] before reading the transcript or
/// exiting.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let file = std::fs::File::create("qmp.log")?;
/// let transcript = virtest_qmp::TranscriptWriter::spawn(Box::new(file))?;
/// let options = virtest_qmp::Options {
///     transcript: Some(transcript.clone()),
///     ..Default::default()
/// };
/// // ... connect with `options`, run commands ...
/// transcript.written().await;
/// let text = std::fs::read_to_string("qmp.log")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TranscriptWriter {
    entries: mpsc::Sender<Entry>,
    backlog: Arc<Backlog>,
}

/// The most bytes of transcript lines waiting to be written (16 MiB:
/// hours of a VM's QMP traffic).
pub const TRANSCRIPT_BACKLOG: usize = 16 << 20;

/// What waits to be written, and what did not fit.
struct Backlog {
    limit: usize,
    bytes: AtomicUsize,
    dropped: AtomicU64,
}

impl std::fmt::Debug for TranscriptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptWriter").finish_non_exhaustive()
    }
}

impl TranscriptWriter {
    /// Starts the thread that writes to `out`.
    pub fn spawn(out: Box<dyn Write + Send>) -> std::io::Result<TranscriptWriter> {
        Self::spawn_with_backlog(out, TRANSCRIPT_BACKLOG)
    }

    fn spawn_with_backlog(
        out: Box<dyn Write + Send>,
        limit: usize,
    ) -> std::io::Result<TranscriptWriter> {
        let (entries, received) = mpsc::channel();
        let backlog = Arc::new(Backlog {
            limit,
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let shared = Arc::clone(&backlog);
        std::thread::Builder::new()
            .name("qmp-transcript".into())
            .spawn(move || write_entries(out, &received, &shared))?;
        Ok(TranscriptWriter { entries, backlog })
    }

    /// Waits until every line sent before this call is written and
    /// flushed (or the transcript stopped on a write error).
    pub async fn written(&self) {
        let (done, wait) = oneshot::channel();
        if self.entries.send(Entry::Written(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Queues `<unix seconds>.<micros> <- line` or `->`, stamped now.
    pub(crate) fn line(&self, direction: Direction, line: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let arrow = match direction {
            Direction::In => "<-",
            Direction::Out => "->",
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut entry =
            format!("{}.{:06} {arrow} ", now.as_secs(), now.subsec_micros()).into_bytes();
        entry.extend_from_slice(line);
        entry.push(b'\n');
        let queued = self.backlog.bytes.fetch_add(entry.len(), Ordering::Relaxed);
        if queued + entry.len() > self.backlog.limit {
            self.backlog.bytes.fetch_sub(entry.len(), Ordering::Relaxed);
            self.backlog.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The thread lives while a sender does; a send cannot fail.
        let _ = self.entries.send(Entry::Line(entry));
    }
}

/// The writer thread: writes each batch of queued lines, then flushes,
/// until every sender is gone.
fn write_entries(out: Box<dyn Write + Send>, received: &mpsc::Receiver<Entry>, backlog: &Backlog) {
    let mut out = Some(BufWriter::new(out));
    while let Ok(first) = received.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Entry::Line(line) => {
                    write_line(&mut out, &line);
                    backlog.bytes.fetch_sub(line.len(), Ordering::Relaxed);
                    note_dropped(&mut out, backlog);
                }
                Entry::Written(done) => {
                    note_dropped(&mut out, backlog);
                    flush(&mut out);
                    let _ = done.send(());
                }
            }
            next = received.try_recv().ok();
        }
        note_dropped(&mut out, backlog);
        flush(&mut out);
    }
}

/// Says how many lines were dropped since it last said, if any.
fn note_dropped(out: &mut Option<BufWriter<Box<dyn Write + Send>>>, backlog: &Backlog) {
    let dropped = backlog.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let note = format!("!! {dropped} lines dropped here: the disk did not keep up\n");
        write_line(out, note.as_bytes());
    }
}

fn write_line(out: &mut Option<BufWriter<Box<dyn Write + Send>>>, line: &[u8]) {
    if let Some(writer) = out
        && let Err(e) = writer.write_all(line)
    {
        stop(out, &e);
    }
}

fn flush(out: &mut Option<BufWriter<Box<dyn Write + Send>>>) {
    if let Some(writer) = out
        && let Err(e) = writer.flush()
    {
        stop(out, &e);
    }
}

/// Stops the transcript after a write error, dropping what is buffered.
fn stop(out: &mut Option<BufWriter<Box<dyn Write + Send>>>, error: &std::io::Error) {
    tracing::warn!(%error, "the QMP transcript cannot be written; it stops here");
    if let Some(writer) = out.take() {
        // Its buffer cannot be written either; do not try again on drop.
        let _ = writer.into_parts();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Takes `room` bytes, then fails every write.
    struct FillsUp {
        taken: Arc<Mutex<Vec<u8>>>,
        room: usize,
    }

    impl Write for FillsUp {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut taken = self.taken.lock().unwrap();
            if taken.len() + bytes.len() > self.room {
                return Err(std::io::Error::from(rustix::io::Errno::NOSPC));
            }
            taken.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn writer(room: usize) -> (TranscriptWriter, Arc<Mutex<Vec<u8>>>) {
        let taken = Arc::default();
        let out = FillsUp {
            taken: Arc::clone(&taken),
            room,
        };
        (TranscriptWriter::spawn(Box::new(out)).unwrap(), taken)
    }

    #[tokio::test]
    async fn lines_from_every_clone_are_written_in_the_order_sent() {
        let (transcript, taken) = writer(usize::MAX);
        let other = transcript.clone();
        for n in 0..1000 {
            let sender = if n % 2 == 0 { &transcript } else { &other };
            sender.line(Direction::Out, format!("{{\"n\": {n}}}\n").as_bytes());
        }
        transcript.written().await;
        let text = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|line| line.rsplit_once(": ").unwrap().1.trim_end_matches('}'))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>());
        assert!(text.lines().all(|line| line.contains(" -> {\"n\": ")));
    }

    /// Takes every write once the test says so.
    struct Stalled {
        taken: Arc<Mutex<Vec<u8>>>,
        go: mpsc::Receiver<()>,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.go.recv();
            self.taken.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_disk_that_does_not_keep_up_costs_lines_not_memory() {
        let taken: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (go, wait) = mpsc::channel();
        let out = Stalled {
            taken: Arc::clone(&taken),
            go: wait,
        };
        let transcript = TranscriptWriter::spawn_with_backlog(Box::new(out), 4096).unwrap();
        // Lines of 1 KiB, while the disk takes nothing.
        for _ in 0..100 {
            transcript.line(Direction::In, &[b'x'; 1000]);
        }
        assert!(transcript.backlog.bytes.load(Ordering::Relaxed) <= 4096);
        // The disk catches up.
        drop(go);
        transcript.written().await;
        let text = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        let written = text.lines().filter(|l| l.contains(" <- xxx")).count() as u64;
        let dropped: u64 = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("!! ")?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(written + dropped, 100, "{text}");
        // At most 4 KiB queued and 8 KiB in the writer's buffer were
        // taken: about a dozen lines.
        assert!(dropped >= 85, "{dropped} dropped: {text}");
    }

    #[tokio::test]
    async fn a_full_disk_stops_the_transcript_and_nothing_waits_forever() {
        let (transcript, taken) = writer(100);
        transcript.line(Direction::In, b"{\"return\": {}}");
        transcript.written().await;
        let written = taken.lock().unwrap().len();
        assert!(written > 0);
        transcript.line(Direction::In, &[b'x'; 200]);
        transcript.written().await;
        transcript.line(Direction::In, b"{}");
        transcript.written().await;
        assert_eq!(
            taken.lock().unwrap().len(),
            written,
            "nothing after the error"
        );
    }
}
