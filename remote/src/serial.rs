//! A session over a guest's serial console (a QEMU chardev unix socket),
//! for guests without a network.
//!
//! It logs in at a login prompt, or uses a shell that is already there.
//! Each command runs in a subshell between two marker lines that `printf`
//! assembles from pieces, so the terminal's echo of the command line never
//! contains a marker; the end marker carries the exit status. A terminal
//! merges stderr into stdout: [`CmdResult::stderr`] stays empty.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::result::CmdResult;

/// A logged-in serial console.
#[derive(Debug)]
pub struct SerialSession {
    io: tokio::sync::Mutex<Console>,
    next: AtomicU64,
    path: String,
}

#[derive(Debug)]
struct Console {
    stream: UnixStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

impl Console {
    /// Reads until `pick` finds something in the buffer (returning its end
    /// offset and a value), or the deadline passes.
    async fn read_until<T>(
        &mut self,
        what: &str,
        deadline: Instant,
        pick: impl Fn(&[u8]) -> Option<(usize, T)>,
    ) -> Result<T> {
        loop {
            if let Some((end, value)) = pick(&self.buf) {
                self.buf.drain(..end);
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(left, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) => return Err(self.error(what, "the console closed")),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(self.error(what, &e.to_string())),
                Err(_) => return Err(self.error(what, "nothing came in time")),
            }
        }
    }

    fn error(&self, what: &str, why: &str) -> Error {
        let seen =
            String::from_utf8_lossy(&self.buf[self.buf.len().saturating_sub(300)..]).into_owned();
        Error::Serial {
            what: what.to_string(),
            reason: format!("{why}; the console showed: {seen:?}"),
        }
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        self.stream
            .write_all(text.as_bytes())
            .await
            .map_err(|e| Error::Serial {
                what: "writing to the console".into(),
                reason: e.to_string(),
            })
    }
}

/// The end offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + needle.len())
}

impl SerialSession {
    /// Connects to a console socket and gets a shell: at a login prompt it
    /// logs in as `user` with `password`; a shell prompt (a console that
    /// logs in by itself, or a session left there) is used as is.
    pub async fn connect(
        socket: &Path,
        user: &str,
        password: Option<&str>,
        deadline: Duration,
    ) -> Result<SerialSession> {
        let until = Instant::now() + deadline;
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| Error::Serial {
                what: format!("connecting to the console {}", socket.display()),
                reason: e.to_string(),
            })?;
        let mut console = Console {
            stream,
            buf: Vec::new(),
        };
        console.send("\r").await?;
        #[derive(PartialEq)]
        enum Seen {
            Login,
            Shell,
        }
        let seen = console
            .read_until("a login or shell prompt", until, |b| {
                find(b, b"login: ")
                    .map(|e| (e, Seen::Login))
                    .or_else(|| find(b, b"# ").map(|e| (e, Seen::Shell)))
            })
            .await?;
        if seen == Seen::Login {
            let Some(password) = password else {
                return Err(Error::SerialNeedsPassword {
                    user: user.to_string(),
                });
            };
            console.send(&format!("{user}\r")).await?;
            console
                .read_until("the password prompt", until, |b| {
                    find(b, b"assword: ").map(|e| (e, ()))
                })
                .await?;
            console.send(&format!("{password}\r")).await?;
            console
                .read_until("a shell prompt after login", until, |b| {
                    if find(b, b"incorrect").is_some() {
                        return Some((b.len(), Err(())));
                    }
                    find(b, b"# ")
                        .or_else(|| find(b, b"$ "))
                        .map(|e| (e, Ok(())))
                })
                .await?
                .map_err(|()| Error::Serial {
                    what: format!("logging in as `{user}` on the console"),
                    reason: "the login was refused".into(),
                })?;
        }
        Ok(SerialSession {
            io: tokio::sync::Mutex::new(console),
            next: AtomicU64::new(1),
            path: socket.display().to_string(),
        })
    }

    /// Runs a command; a non-zero exit is an [`Error::Exit`].
    pub async fn run(&self, command: &str) -> Result<CmdResult> {
        let result = self
            .run_unchecked(command, Duration::from_secs(600))
            .await?;
        if result.success() {
            Ok(result)
        } else {
            Err(Error::Exit(Box::new(result)))
        }
    }

    /// Runs a command within `deadline`, whatever its exit status.
    pub async fn run_unchecked(&self, command: &str, deadline: Duration) -> Result<CmdResult> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (begin, end) = (format!("__VT_B{n}__"), format!("__VT_E{n}__"));
        let mut console = self.io.lock().await;
        let start = Instant::now();
        let line = format!(
            "printf '%s%s\\n' __VT_B {n}__; ( {command} ); printf '\\n%s%s %d\\n' __VT_E {n}__ $?\r"
        );
        console.send(&line).await?;
        let until = start + deadline;
        let timeout = |e: Error| match e {
            Error::Serial { reason, .. } if reason.starts_with("nothing came") => Error::Timeout {
                command: command.to_string(),
                after: deadline,
            },
            other => other,
        };
        console
            .read_until(&format!("the start of `{command}`"), until, |b| {
                find(b, format!("{begin}\r\n").as_bytes()).map(|e| (e, ()))
            })
            .await
            .map_err(timeout)?;
        let (output, status) = console
            .read_until(&format!("the end of `{command}`"), until, |b| {
                let marker = format!("\r\n{end} ");
                let at = find(b, marker.as_bytes())?;
                let line_end = at + b[at..].iter().position(|&c| c == b'\n')?;
                let status = String::from_utf8_lossy(&b[at..line_end])
                    .trim()
                    .parse::<i32>()
                    .ok()?;
                Some((line_end + 1, (b[..at - marker.len()].to_vec(), status)))
            })
            .await
            .map_err(timeout)?;
        let stdout = String::from_utf8_lossy(&output).replace("\r\n", "\n");
        tracing::debug!(console = %self.path, command, exit = status, "ran on the serial console");
        Ok(CmdResult {
            command: command.to_string(),
            stdout,
            stderr: String::new(),
            exit_status: status,
            duration: start.elapsed(),
        })
    }
}
