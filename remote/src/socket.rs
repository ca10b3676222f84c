//! The SSH connection's socket, waited on the way libssh2 needs.
//!
//! libssh2 reads and writes the socket itself, behind tokio's back, so
//! tokio never learns that a socket it saw readable has since been read
//! dry. async-ssh2-lite's own tokio stream therefore finds the socket
//! "ready" on every poll and re-polls each millisecond while a command
//! runs: 1.3-2.9 % of a core for a guest that only sleeps. [`SshSocket`]
//! clears the readiness each time libssh2 would block, so a waiting
//! command sleeps until the guest sends something.
//!
//! Reading each segment the moment it arrives made a guest under TCG
//! stream output line by line up to three times slower (6000 lines:
//! 1.5-2.5 s against 0.55-0.8 s reading every millisecond), most likely
//! from the extra round trips each small read sets off. So while bytes
//! stream in ([`Flow`]), a wait is a 1 ms sleep and a read takes what
//! gathered; the answer to a command is read the moment it arrives.
//!
//! What readiness cannot see: data for one stream of a channel (stdout)
//! that libssh2 read off the socket while another stream (stderr) was
//! being read, after the first had been told to wait. The socket is then
//! empty although data waits in libssh2's queue. So an operation that
//! finds bytes on the socket before it runs wakes every waiter of the
//! session afterwards. Bytes that arrive while an operation runs can
//! still slip past both; a slow fallback wake ([`FALLBACK_WAKE`]) bounds
//! that rare delay.

use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_ssh2_lite::AsyncSessionStream;
use async_ssh2_lite::ssh2::{BlockDirections, Error as Ssh2Error, Session};
use async_ssh2_lite::util::ssh2_error_is_would_block;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::time::{Instant, Sleep};

/// How long a wait may last without the socket becoming ready before the
/// waiter looks again anyway (see the module's doc).
const FALLBACK_WAKE: Duration = Duration::from_millis(100);

/// How often a streaming command's output is read.
const STREAMING_POLL: Duration = Duration::from_millis(1);
/// Arrivals within one [`FLOW_WINDOW`] that make a command's output a
/// stream (a command's answer and the channel's closing take 3 to 5).
const STREAMING_ARRIVALS: usize = 6;
/// The window over which [`STREAMING_ARRIVALS`] are counted.
const FLOW_WINDOW: Duration = Duration::from_millis(10);

/// A connected TCP socket for an `AsyncSession`.
pub(crate) struct SshSocket {
    fd: AsyncFd<TcpStream>,
    /// The tasks waiting on this session, woken when an operation takes
    /// bytes off the socket (they may be theirs).
    waiters: Mutex<Vec<Waker>>,
    /// How fast bytes come in.
    flow: Mutex<Flow>,
    /// The fallback wake, or the next read while streaming.
    timer: Mutex<Pin<Box<Sleep>>>,
}

/// How often bytes were found on the socket during the current
/// [`FLOW_WINDOW`].
#[derive(Debug)]
struct Flow {
    since: Instant,
    arrivals: usize,
}

impl Flow {
    /// Counts an operation that found `bytes` on the socket; whether
    /// bytes stream in.
    fn took(&mut self, bytes: usize) -> bool {
        if self.since.elapsed() > FLOW_WINDOW {
            if bytes == 0 {
                return false;
            }
            *self = Flow {
                since: Instant::now(),
                arrivals: 0,
            };
        }
        self.arrivals += usize::from(bytes > 0);
        self.arrivals >= STREAMING_ARRIVALS
    }
}

impl SshSocket {
    /// Takes over a connected stream (made non-blocking here).
    pub(crate) fn new(stream: TcpStream) -> io::Result<SshSocket> {
        stream.set_nonblocking(true)?;
        // SAFETY: the stream owns its descriptor, which stays open and
        // the same until the `AsyncFd` (which owns the stream) drops.
        let fd = unsafe { AsyncFd::register(stream) }.map_err(|e| e.into_parts().1)?;
        Ok(SshSocket {
            fd,
            waiters: Mutex::new(Vec::new()),
            flow: Mutex::new(Flow {
                since: Instant::now(),
                arrivals: 0,
            }),
            timer: Mutex::new(Box::pin(tokio::time::sleep(FALLBACK_WAKE))),
        })
    }

    /// Runs `op` until it stops saying "would block", waiting in between
    /// for the direction libssh2 blocked on.
    fn poll_op<R, E>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> Result<R, E>,
        would_block: impl Fn(&E) -> bool,
        session: &Session,
    ) -> Poll<Result<R, WaitError<E>>> {
        loop {
            let unread = self.unread_bytes();
            let result = op();
            if unread > 0 {
                self.wake_waiters();
            }
            let streaming = self.flow.lock().expect("flow lock").took(unread);
            match result {
                Err(e) if would_block(&e) => {}
                done => return Poll::Ready(done.map_err(WaitError::Op)),
            }
            if streaming {
                self.wake_after(cx, STREAMING_POLL);
                return Poll::Pending;
            }
            // Whatever readiness tokio still holds is stale: libssh2 has
            // just taken the socket as far as it could. Clear it and look
            // again; a wait is registered only when nothing is ready.
            let directions = session.block_directions();
            let outbound = matches!(
                directions,
                BlockDirections::Outbound | BlockDirections::Both
            );
            let inbound = !matches!(directions, BlockDirections::Outbound);
            let cleared = (|| {
                let mut cleared = false;
                if outbound {
                    cleared |= clear_if_ready(self.fd.poll_write_ready(cx))?;
                }
                if inbound {
                    cleared |= clear_if_ready(self.fd.poll_read_ready(cx))?;
                }
                Ok(cleared)
            })();
            match cleared {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Poll::Ready(Err(WaitError::Io(e))),
            }
        }
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        drop(waiters);
        self.wake_after(cx, FALLBACK_WAKE);
        Poll::Pending
    }

    /// Wakes the task after `delay` (unless woken earlier).
    fn wake_after(&self, cx: &mut Context<'_>, delay: Duration) {
        let mut timer = self.timer.lock().expect("timer lock");
        timer.as_mut().reset(Instant::now() + delay);
        let _ = timer.as_mut().poll(cx);
    }

    /// How many bytes wait on the socket, unread.
    fn unread_bytes(&self) -> usize {
        rustix::io::ioctl_fionread(self.fd.get_ref()).map_or(0, |unread| unread as usize)
    }

    /// Wakes every task waiting on the session.
    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().expect("waiters lock"));
        for waker in waiters {
            waker.wake();
        }
    }
}

/// Clears readiness tokio holds (`true`), or registers the waker for it
/// (`false`).
fn clear_if_ready(ready: Poll<io::Result<AsyncFdReadyGuard<'_, TcpStream>>>) -> io::Result<bool> {
    match ready {
        Poll::Ready(Ok(mut guard)) => {
            guard.clear_ready();
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// Why a wait for libssh2 ended without a result.
enum WaitError<E> {
    /// libssh2's operation failed.
    Op(E),
    /// Waiting on the socket failed.
    Io(io::Error),
}

impl AsRawFd for SshSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

#[async_trait::async_trait]
impl AsyncSessionStream for SshSocket {
    async fn x_with<R>(
        &self,
        mut op: impl FnMut() -> Result<R, Ssh2Error> + Send,
        sess: &Session,
        _expected_block_directions: BlockDirections,
        _sleep_dur: Option<Duration>,
    ) -> Result<R, async_ssh2_lite::Error> {
        let done =
            std::future::poll_fn(|cx| self.poll_op(cx, &mut op, ssh2_error_is_would_block, sess))
                .await;
        done.map_err(|e| match e {
            WaitError::Op(e) => e.into(),
            WaitError::Io(e) => e.into(),
        })
    }

    fn poll_x_with<R>(
        &self,
        cx: &mut Context,
        op: impl FnMut() -> Result<R, io::Error> + Send,
        sess: &Session,
        _expected_block_directions: BlockDirections,
        _sleep_dur: Option<Duration>,
    ) -> Poll<Result<R, io::Error>> {
        let would_block = |e: &io::Error| e.kind() == io::ErrorKind::WouldBlock;
        self.poll_op(cx, op, would_block, sess)
            .map_err(|e| match e {
                WaitError::Op(e) | WaitError::Io(e) => e,
            })
    }
}
