#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod error;
mod host_key;
mod result;
mod serial;
mod session;
mod socket;
mod ssh;
mod transfer;

pub use error::{Error, Result};
pub use result::CmdResult;
pub use serial::SerialSession;
pub use session::Session;
pub use ssh::{Auth, MAX_CONNECTIONS, OutputStream, RunOptions, SshConfig, SshSession};
