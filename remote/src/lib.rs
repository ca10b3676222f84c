//! Sessions into a guest: log in, run commands, get their results.
//!
//! Built so far: [`SshSession`] over async-ssh2-lite (password or key
//! login, host key check, `run` with stdout and stderr kept apart, exit
//! status, deadlines, `wait_for_login` that tells "not up yet" from "wrong
//! credentials"), and file and tree transfer both ways with modes kept.
//! Not built yet: the serial-console session behind a common trait, and a
//! live output callback (issue "virtest-remote").
#![deny(missing_docs)]

mod error;
mod result;
mod ssh;
mod transfer;

pub use error::{Error, Result};
pub use result::CmdResult;
pub use ssh::{Auth, RunOptions, SshConfig, SshSession};
