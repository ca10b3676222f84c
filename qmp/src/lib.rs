#![doc = include_str!("../README.md")]
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
#![deny(missing_docs)]

mod client;
pub mod codec;
mod error;
mod event;
mod fdpass;
pub mod outgoing;
mod qga;
mod qga_ops;
pub mod transcript;

pub use client::{DEFAULT_COMMAND_TIMEOUT, Greeting, Options, Qmp};
pub use error::{Error, Result};
pub use event::{Event, EventCursor, LOG_CAPACITY, Subscription};
pub use qga::{DEFAULT_QGA_TIMEOUT, Qga};
pub use qga_ops::AgentExec;
pub use transcript::{TRANSCRIPT_BACKLOG, TranscriptWriter};
