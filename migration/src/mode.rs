//! How the migration stream travels from the source to the destination.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The transport of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// TCP over loopback, on a free port.
    #[default]
    Tcp,
    /// A unix socket in the VM's private directory.
    Unix,
    /// A command pipe on each side (`cat` into and out of a FIFO).
    Exec,
    /// A socket pair whose ends QEMU gets over QMP (`getfd`).
    Fd,
    /// A file in the VM's runtime directory (`file:`, QEMU 8.2 on): the
    /// source writes the whole state while the guest runs, stops, and
    /// then the destination reads it. The guest is paused for the
    /// reading too; the file is removed after.
    File,
}

impl MigrationMode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [MigrationMode; 5] = [
        MigrationMode::Tcp,
        MigrationMode::Unix,
        MigrationMode::Exec,
        MigrationMode::Fd,
        MigrationMode::File,
    ];

    /// The modes whose destination reads the stream as the source sends
    /// it: all but `file`.
    pub const STREAMED: [MigrationMode; 4] = [
        MigrationMode::Tcp,
        MigrationMode::Unix,
        MigrationMode::Exec,
        MigrationMode::Fd,
    ];

    /// The mode's name (`tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationMode::Tcp => "tcp",
            MigrationMode::Unix => "unix",
            MigrationMode::Exec => "exec",
            MigrationMode::Fd => "fd",
            MigrationMode::File => "file",
        }
    }
}

impl fmt::Display for MigrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MigrationMode {
    type Err = Error;

    /// ```
    /// use virtest_migration::MigrationMode;
    /// assert_eq!("unix".parse::<MigrationMode>().unwrap(), MigrationMode::Unix);
    /// let error = "rdma".parse::<MigrationMode>().unwrap_err();
    /// assert_eq!(error.to_string(), "unknown migration mode `rdma`; valid modes: tcp, unix, exec, fd, file");
    /// ```
    fn from_str(s: &str) -> Result<MigrationMode, Error> {
        MigrationMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::UnknownMode(s.to_string()))
    }
}
