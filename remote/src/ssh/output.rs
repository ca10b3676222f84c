//! A command's output as it arrives: its streams copied or kept (up to
//! a limit), complete lines handed over as they come, and the bytes
//! that become a [`CmdResult`].

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::result::CmdResult;

/// Which stream a line of output came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where lines go as they arrive.
pub(crate) type LineSink<'a> = &'a mut (dyn FnMut(OutputStream, &str) + Send);

/// Where a command's stdin comes from and its stdout goes, with the
/// local file each stands for (named in errors).
#[derive(Default)]
pub(crate) struct Streams<'a> {
    /// Copied to its stdin, then end of file (none: end of file at once).
    pub(crate) stdin: Option<(&'a mut (dyn AsyncRead + Unpin + Send), &'a Path)>,
    /// Where stdout is copied as it arrives (none: kept, up to
    /// [`crate::RunOptions::max_output`]).
    pub(crate) stdout: Option<(&'a mut (dyn AsyncWrite + Unpin + Send), &'a Path)>,
    /// Gets each line of kept output as it arrives.
    pub(crate) on_line: Option<LineSink<'a>>,
}

/// Why a stream was not read to its end.
pub(super) enum Drained<'a> {
    /// It carried more than the limit.
    TooLarge(OutputStream),
    /// Reading it failed.
    Failed(std::io::Error),
    /// Writing it to the local file failed.
    Local(&'a Path, std::io::Error),
}

/// Which side of a copy failed.
pub(super) enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `from` to its end into `to`, then flushes `to`.
pub(super) async fn copy<R, W>(mut from: R, mut to: W) -> std::result::Result<(), Copy>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let n = from.read(&mut chunk).await.map_err(Copy::Read)?;
        if n == 0 {
            return to.flush().await.map_err(Copy::Write);
        }
        to.write_all(&chunk[..n]).await.map_err(Copy::Write)?;
    }
}

/// Reads a stream to its end into `out` (at most `limit` bytes), handing
/// each complete line (and a last unterminated one) to the sink as it
/// arrives.
pub(super) async fn drain<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    out: &mut Vec<u8>,
    which: OutputStream,
    limit: usize,
    sink: &std::sync::Mutex<Option<LineSink<'_>>>,
) -> std::result::Result<(), Drained<'static>> {
    let mut chunk = vec![0u8; 32 << 10];
    let mut line_start = 0;
    loop {
        let n = reader.read(&mut chunk).await.map_err(Drained::Failed)?;
        if out.len() + n > limit {
            return Err(Drained::TooLarge(which));
        }
        out.extend_from_slice(&chunk[..n]);
        let mut sink = sink.lock().expect("line sink lock");
        if let Some(f) = sink.as_mut() {
            while let Some(pos) = out[line_start..].iter().position(|&b| b == b'\n') {
                f(
                    which,
                    &String::from_utf8_lossy(&out[line_start..line_start + pos]),
                );
                line_start += pos + 1;
            }
            if n == 0 && line_start < out.len() {
                f(which, &String::from_utf8_lossy(&out[line_start..]));
            }
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// A command's output as bytes, before it becomes a [`CmdResult`].
pub(crate) struct RawOutput {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) exit_status: i32,
    pub(crate) duration: Duration,
}

impl RawOutput {
    pub(crate) fn into_result(self, command: &str) -> CmdResult {
        CmdResult {
            command: command.to_string(),
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            exit_status: self.exit_status,
            duration: self.duration,
        }
    }

    /// The output, or [`Error::Exit`] when the status is not 0.
    pub(crate) fn checked(self, command: &str) -> Result<Vec<u8>> {
        if self.exit_status == 0 {
            Ok(self.stdout)
        } else {
            Err(Error::Exit(Box::new(self.into_result(command))))
        }
    }
}
