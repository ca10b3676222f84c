//! The serial console of a VM: every byte the guest writes, to
//! `console.log` and to a buffer that can be searched and waited on; and
//! bytes typed into it.
//!
//! QEMU connects its serial chardev to a socket we listen on, so nothing
//! the guest prints before we read is lost. One [`Console`] outlives the
//! QEMU processes of a VM: after a migration the destination's output
//! continues the same log and buffer.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How much console output is kept in memory (the log file keeps all).
const KEEP_BYTES: usize = 8 << 20;

/// How often a console reader with nothing to read checks whether it
/// was told to stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// A position in the console output: waits and searches from a cursor see
/// only what came after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConsoleCursor(pub u64);

/// The console output of one VM; clones share it.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    buffer: Mutex<Buffer>,
    log: Mutex<File>,
    /// The total number of bytes received, for waiters.
    length: watch::Sender<u64>,
    /// The way into the running QEMU's serial port (the latest attached).
    input: Mutex<Option<Arc<tokio::sync::Mutex<UnixStream>>>>,
}

/// The newest output, starting at absolute offset `base`.
#[derive(Debug, Default)]
struct Buffer {
    base: u64,
    bytes: Vec<u8>,
}

impl Console {
    /// A console writing to `log` (appended to when it exists).
    pub(crate) fn create(log: &Path) -> std::io::Result<Console> {
        let file = File::options().create(true).append(true).open(log)?;
        Ok(Console {
            inner: Arc::new(Inner {
                buffer: Mutex::new(Buffer::default()),
                log: Mutex::new(file),
                length: watch::channel(0).0,
                input: Mutex::new(None),
            }),
        })
    }

    /// Reads `stream` (QEMU's end of the serial port) until it closes,
    /// on a thread of the blocking pool: writing `console.log` never holds
    /// up the async workers other VMs share. What is typed goes to the
    /// stream from now on.
    pub(crate) fn attach(&self, stream: UnixStream) -> std::io::Result<ConsoleReader> {
        // Non-blocking, as tokio left it: the reader waits with poll(2).
        let reader = stream.into_std()?;
        let input = UnixStream::from_std(reader.try_clone()?)?;
        *self.inner.input.lock().expect("input lock") =
            Some(Arc::new(tokio::sync::Mutex::new(input)));
        let stop = Arc::new(AtomicBool::new(false));
        let console = self.clone();
        let stopped = stop.clone();
        let thread = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0; 16 << 10];
            while !stopped.load(Ordering::Relaxed) {
                match (&reader).read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => console.append(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_readable(&reader, STOP_CHECK);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        Ok(ConsoleReader { thread, stop })
    }

    /// Records output: to the log first, then to the buffer and waiters.
    pub(crate) fn append(&self, bytes: &[u8]) {
        if let Err(e) = self.inner.log.lock().expect("log lock").write_all(bytes) {
            tracing::warn!(error = %e, "writing console.log failed");
        }
        let total = {
            let mut buffer = self.inner.buffer.lock().expect("console lock");
            buffer.bytes.extend_from_slice(bytes);
            if buffer.bytes.len() > KEEP_BYTES {
                let drop = buffer.bytes.len() - KEEP_BYTES / 2;
                buffer.bytes.drain(..drop);
                buffer.base += drop as u64;
            }
            buffer.base + buffer.bytes.len() as u64
        };
        self.inner.length.send_replace(total);
    }

    /// The position after everything received so far.
    pub fn cursor(&self) -> ConsoleCursor {
        ConsoleCursor(*self.inner.length.borrow())
    }

    /// Everything kept since `since`, as text.
    pub fn text_since(&self, since: ConsoleCursor) -> String {
        let buffer = self.inner.buffer.lock().expect("console lock");
        let start = since.0.saturating_sub(buffer.base) as usize;
        String::from_utf8_lossy(buffer.bytes.get(start..).unwrap_or_default()).into_owned()
    }

    /// Where the first `pattern` after `since` ends, if it came.
    pub fn find(&self, since: ConsoleCursor, pattern: &str) -> Option<ConsoleCursor> {
        let buffer = self.inner.buffer.lock().expect("console lock");
        let start = since.0.saturating_sub(buffer.base) as usize;
        let haystack = buffer.bytes.get(start..)?;
        let needle = pattern.as_bytes();
        if needle.is_empty() {
            return Some(since);
        }
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|at| ConsoleCursor(buffer.base + (start + at + needle.len()) as u64))
    }

    /// The last `lines` lines, without carriage returns.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text_since(ConsoleCursor(0)).replace('\r', "");
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Types `bytes` into the guest's serial port (the running QEMU's).
    pub async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let input = self.inner.input.lock().expect("input lock").clone();
        let Some(input) = input else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no QEMU is attached to the console",
            ));
        };
        let mut input = input.lock().await;
        input.write_all(bytes).await
    }

    /// Waits for output after `since` and returns its bytes with the
    /// cursor past them (what left memory before it was read is skipped).
    pub async fn output_after(&self, since: ConsoleCursor) -> (Vec<u8>, ConsoleCursor) {
        let mut changes = self.changes();
        let _ = changes.wait_for(|&length| length > since.0).await;
        let buffer = self.inner.buffer.lock().expect("console lock");
        let start = since.0.saturating_sub(buffer.base) as usize;
        let bytes = buffer.bytes.get(start..).unwrap_or_default().to_vec();
        let end = ConsoleCursor(buffer.base + buffer.bytes.len() as u64);
        (bytes, end)
    }

    /// A receiver that changes whenever output arrives.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.length.subscribe()
    }
}

/// The thread that reads a QEMU's console into a [`Console`].
#[derive(Debug)]
pub(crate) struct ConsoleReader {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl ConsoleReader {
    /// Tells the reader to stop (within [`STOP_CHECK`]), even if QEMU
    /// keeps the console open.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until the reader has taken everything (QEMU closed the
    /// console) or stopped. Await it to its end only once.
    pub(crate) async fn finished(&mut self) {
        let _ = (&mut self.thread).await;
    }
}

/// Waits until `stream` has bytes to read, it closes, or `timeout` passes.
fn wait_readable(stream: &std::os::unix::net::UnixStream, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    let _ = poll(&mut [PollFd::new(stream, PollFlags::IN)], Some(&timeout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_respects_the_cursor_and_the_log_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let console = Console::create(&log).unwrap();
        console.append(b"boot\r\nready uptime=1\r\n");
        let first = console.find(ConsoleCursor(0), "ready").unwrap();
        assert_eq!(first, ConsoleCursor(11));
        assert_eq!(console.find(first, "ready"), None);
        console.append(b"reboot\r\nready uptime=2\r\n");
        assert!(console.find(first, "ready").unwrap() > first);
        assert_eq!(console.tail(2), "reboot\nready uptime=2");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "boot\r\nready uptime=1\r\nreboot\r\nready uptime=2\r\n"
        );
    }

    #[test]
    fn old_output_leaves_memory_but_offsets_stay_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::create(&dir.path().join("console.log")).unwrap();
        let line = vec![b'x'; 1 << 20];
        for _ in 0..12 {
            console.append(&line);
        }
        console.append(b"marker");
        let total = 12 * (1 << 20) + 6;
        assert_eq!(console.cursor(), ConsoleCursor(total));
        assert_eq!(
            console.find(ConsoleCursor(0), "marker"),
            Some(ConsoleCursor(total))
        );
        assert!(console.text_since(ConsoleCursor(0)).len() <= KEEP_BYTES);
    }
}
