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
//! - [`Qga`] (`qga`): the guest agent's protocol: no greeting,
//!   `guest-sync-delimited`, commands typed by `qapi`'s QGA schema.
//! - [`AgentExec`] (`qga_ops`): what takes the agent several commands:
//!   running a program to its end, reading and writing whole files.
//! - [`transcript`]: every line in and out, timestamped, written on a
//!   thread of its own ([`TranscriptWriter`]) to a writer you
//!   give; the events read back from one.
//!
//! # Example
//!
//! Connect, run a command, wait for the event it causes (this runs a real
//! QEMU in the doctest):
//!
//! ```
//! use std::time::Duration;
//! use virtest_qmp::{Options, Qmp};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let socket = dir.path().join("qmp.sock");
//! # let mut qemu = std::process::Command::new(std::env::var_os("QEMU").unwrap_or("qemu-system-x86_64".into()))
//! #     .args(["-machine", "none", "-nodefaults", "-display", "none", "-qmp"])
//! #     .arg(format!("unix:{},server=on,wait=off", socket.display()))
//! #     .spawn()
//! #     .unwrap();
//! // QEMU was started with `-qmp unix:<socket>,server=on,wait=off`.
//! let qmp = Qmp::connect_unix(&socket, Duration::from_secs(5), Options::default()).await?;
//! println!("QEMU {:?}", qmp.greeting().version);
//!
//! let since = qmp.event_cursor();
//! qmp.execute(qapi::qmp::stop {}).await?;
//! let stop = qmp.wait_event(since, "STOP", &serde_json::Value::Null, Duration::from_secs(5)).await?;
//! assert!(!qmp.execute(qapi::qmp::query_status {}).await?.running);
//! println!("stopped at {:?}", stop.timestamp);
//!
//! qmp.quit().await?;
//! # qemu.wait().unwrap();
//! # Ok::<(), virtest_qmp::Error>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod client;
pub mod codec;
mod error;
mod event;
mod fdpass;
mod qga;
mod qga_ops;
pub mod transcript;

pub use client::{DEFAULT_COMMAND_TIMEOUT, Greeting, Options, Qmp};
pub use error::{Error, Result};
pub use event::{Event, EventCursor, LOG_CAPACITY, Subscription};
pub use qga::{DEFAULT_QGA_TIMEOUT, Qga};
pub use qga_ops::AgentExec;
pub use transcript::{TRANSCRIPT_BACKLOG, TranscriptWriter};
