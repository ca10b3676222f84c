//! How a snapshot's state file holds the guest, and how it was saved.

use serde::{Deserialize, Serialize};

/// How a snapshot's state was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedState {
    /// Its format.
    pub format: StateFormat,
    /// How long QEMU took to write it.
    pub took: std::time::Duration,
}

/// How a snapshot's state file holds the guest: what the restoring QEMU
/// must be told to read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateFormat {
    /// QEMU's migration stream, pages in the order they were sent.
    #[default]
    Stream,
    /// `mapped-ram` (QEMU 9.0 on): each page at its own offset, a file
    /// as large as the guest's RAM with holes where pages are zero.
    MappedRam,
}

impl StateFormat {
    /// Every format's name.
    pub const NAMES: [&'static str; 2] = ["stream", "mapped-ram"];

    /// Its name (`mapped-ram`).
    pub fn as_str(self) -> &'static str {
        match self {
            StateFormat::Stream => "stream",
            StateFormat::MappedRam => "mapped-ram",
        }
    }

    /// The format named `name`.
    ///
    /// ```
    /// use virtest_guest::snapshots::StateFormat;
    /// assert_eq!(StateFormat::parse("mapped-ram"), Some(StateFormat::MappedRam));
    /// assert_eq!(StateFormat::parse("raw"), None);
    /// ```
    pub fn parse(name: &str) -> Option<StateFormat> {
        [StateFormat::Stream, StateFormat::MappedRam]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}
