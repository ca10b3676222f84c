//! Sessions into a guest: log in, run commands, get their results.
//!
//! Built so far: [`SshSession`] over async-ssh2-lite (password or key
//! login, host key check, `run` with stdout and stderr kept apart, exit
//! status, deadlines, `wait_for_login` that tells "not up yet" from "wrong
//! credentials"), and file and tree transfer both ways with modes kept.
//! [`SerialSession`] runs commands over a guest's serial console; both are
//! a [`Session`]. `run_streaming` hands long commands' output over line by
//! line as it arrives.
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
