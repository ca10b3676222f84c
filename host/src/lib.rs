#![doc = include_str!("../README.md")]
//! - [`process`]: processes that cannot outlive their owner (own process
//!   group, parent-death signal, kill and reap on drop).
//! - [`ssh`]: one OpenSSH master connection per host, shared by every
//!   command, process and forward to it.
//! - [`Lab`] and [`Link`]: simulated hosts and their links' faults.

mod error;
mod host;
mod hosts_file;
mod lab;
mod link;
pub mod process;
mod relay;
pub mod ssh;

pub use error::{Error, Result};
pub use host::{Host, HostDirs, ReachedPort};
pub use hosts_file::HostsFile;
pub use lab::Lab;
pub use link::{Faults, Link};
