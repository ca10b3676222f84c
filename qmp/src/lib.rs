//! The QMP wire protocol, usable by any Rust tool that drives QEMU.
//!
//! Connect over a unix socket or TCP (waiting for the socket to appear),
//! read the greeting, negotiate, then run commands from many tasks at once:
//! typed through `qapi`'s generated definitions, or raw JSON for anything
//! newer. Events are kept as JSON in a log, so every subscriber sees every
//! event, a waiter can look back to a point it chose, and an event the
//! schema does not know never breaks the stream.
//!
//! # Layout
//!
//! - [`codec`]: bytes to messages and back, no I/O.
//! - [`Qmp`] (`client`): the connection, its reader task and commands.
//! - [`Event`], [`EventCursor`], [`Subscription`] (`event`): the event log.
//! - `transcript`: every line in and out, timestamped, to a writer you give.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use virtest_qmp::{Options, Qmp};
//!
//! # async fn f() -> virtest_qmp::Result<()> {
//! // QEMU started with `-qmp unix:/tmp/qmp.sock,server=on,wait=off`.
//! let qmp = Qmp::connect_unix("/tmp/qmp.sock".as_ref(), Duration::from_secs(5), Options::default()).await?;
//! let since = qmp.event_cursor();
//! qmp.execute(qapi::qmp::stop {}).await?;
//! let stop = qmp.wait_event(since, "STOP", &serde_json::Value::Null, Duration::from_secs(5)).await?;
//! assert!(!qmp.execute(qapi::qmp::query_status {}).await?.running);
//! println!("stopped at {:?}", stop.timestamp);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
pub mod codec;
mod error;
mod event;
mod transcript;

pub use client::{DEFAULT_COMMAND_TIMEOUT, Greeting, Options, Qmp};
pub use error::{Error, Result};
pub use event::{Event, EventCursor, LOG_CAPACITY, Subscription};
