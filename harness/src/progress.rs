//! What the job shows while it runs: on a terminal, a live line per
//! running test with its phase; otherwise, plain lines as tests start and
//! end. Both end with the same summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::logging::Phase;
use crate::results::TestRecord;

/// The tests running now, by number.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    inner: Arc<Mutex<Board>>,
}

#[derive(Default)]
struct Board {
    running: BTreeMap<usize, (String, Phase, Instant)>,
    /// Lines the live display has drawn (to redraw over).
    drawn: usize,
    total: usize,
    done: usize,
    live: bool,
    /// The live lines are held off (a pause's message is on screen).
    held: bool,
}

/// Holds the live lines off until dropped: see [`Progress::hold`].
pub(crate) struct Hold(Progress);

impl Drop for Hold {
    fn drop(&mut self) {
        let mut board = self.0.board();
        board.held = false;
        board.draw();
    }
}

impl Progress {
    /// A display for `total` tests: live when stdout is a terminal.
    pub(crate) fn new(total: usize) -> Progress {
        let progress = Progress::default();
        {
            let mut board = progress.board();
            board.total = total;
            board.live = std::io::stdout().is_terminal();
        }
        progress
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn started(&self, n: usize, name: &str, phase: Phase) {
        let mut board = self.board();
        if !board.live {
            println!(" ({n}/{}) {name}: STARTED", board.total);
        }
        board
            .running
            .insert(n, (name.to_string(), phase, Instant::now()));
    }

    pub(crate) fn finished(&self, n: usize, record: &TestRecord) {
        let mut board = self.board();
        board.running.remove(&n);
        board.done += 1;
        board.clear();
        let flaky = match record.flaky {
            true => format!(" [FLAKY: passed on retry {}]", record.retried.len()),
            false => String::new(),
        };
        println!("{}{flaky}", line(n, board.total, record));
        board.draw();
    }

    /// A test that did not succeed, and runs again.
    pub(crate) fn retrying(&self, n: usize, record: &TestRecord, retry: usize, retries: u32) {
        let mut board = self.board();
        board.running.remove(&n);
        board.clear();
        println!(
            "{}; retrying ({retry} of {retries})",
            line(n, board.total, record)
        );
        board.draw();
    }

    /// Redraws the live lines every 200 ms until dropped (a terminal only).
    pub(crate) fn spawn_ticker(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.board().live {
            return None;
        }
        let progress = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut board = progress.board();
                board.clear();
                board.draw();
            }
        }))
    }

    /// Clears the live lines and draws none until the guard drops, so a
    /// message the user must read stays on screen.
    pub(crate) fn hold(&self) -> Hold {
        let mut board = self.board();
        board.clear();
        board.held = true;
        Hold(self.clone())
    }

    /// Removes the live lines (before the summary).
    pub(crate) fn finish(&self) {
        self.board().clear();
    }
}

/// ` (n/total) name: STATUS (time, start): first line of the reason`,
/// control characters shown escaped (`\u{1b}`): a reason may quote what
/// a guest printed, which must not drive the user's terminal.
fn line(n: usize, total: usize, record: &TestRecord) -> String {
    let reason = record
        .fail_reason
        .as_deref()
        .map(|r| format!(": {}", r.lines().next().unwrap_or("")))
        .unwrap_or_default();
    let mut shown = String::with_capacity(reason.len());
    for c in reason.chars() {
        match c.is_control() {
            true => shown.extend(c.escape_default()),
            false => shown.push(c),
        }
    }
    let start = record
        .vm_start
        .as_deref()
        .map(|start| format!(", {start}"))
        .unwrap_or_default();
    format!(
        " ({n}/{total}) {}: {} ({:.2} s{start}){shown}",
        record.name, record.status, record.time
    )
}

/// The columns of the terminal on stdout (80 when it does not say).
fn terminal_width() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => 80,
    }
}

/// `line` on one row of `width` columns: control characters (a
/// command's newlines) as spaces, cut with `…` when longer.
fn fit(line: &str, width: usize) -> String {
    let clean = line.chars().map(|c| if c.is_control() { ' ' } else { c });
    let room = width.saturating_sub(1).max(10);
    if line.chars().count() <= room {
        return clean.collect();
    }
    clean.take(room - 1).chain(['…']).collect()
}

impl Board {
    fn clear(&mut self) {
        if self.live && self.drawn > 0 {
            print!("\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self) {
        if !self.live || self.held {
            return;
        }
        // Each line fits the terminal's width: a wrapped one would take
        // rows the next redraw does not clear.
        let width = terminal_width();
        let mut out = String::new();
        for (n, (name, phase, since)) in &self.running {
            let phase = phase.lock().map(|p| p.clone()).unwrap_or_default();
            let line = format!(
                "   ({n}/{}) {name}: {phase} ({:.0} s)",
                self.total,
                since.elapsed().as_secs_f64()
            );
            out.push_str(&fit(&line, width));
            out.push('\n');
        }
        let count = format!(
            "   {} of {} done, {} running",
            self.done,
            self.total,
            self.running.len()
        );
        out.push_str(&fit(&count, width));
        out.push('\n');
        self.drawn = out.lines().count();
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::{fit, line};
    use crate::results::record_for_tests;
    use crate::status::Status;

    #[test]
    fn guest_text_in_a_reason_cannot_drive_the_terminal() {
        // A title change, a bell and a clear-screen, as a hostile guest
        // could print them into the output a failure reason quotes.
        let hostile = "\x1b]0;owned\x07\x1b[2J\x1b[Hdisk\u{9b}31m full\r\nnext line";
        let printed = line(3, 9, &record_for_tests(Status::Fail, Some(hostile)));
        assert!(!printed.chars().any(char::is_control), "{printed:?}");
        assert!(
            printed.contains(r"\u{1b}]0;owned\u{7}\u{1b}[2J"),
            "{printed}"
        );
        assert!(printed.ends_with(r"disk\u{9b}31m full"), "{printed}");
    }

    #[test]
    fn live_lines_fit_one_row() {
        assert_eq!(fit("short", 80), "short");
        let long = "x".repeat(100);
        let cut = fit(&long, 60);
        assert_eq!(cut.chars().count(), 59);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("a\nb", 80), "a b");
    }
}
