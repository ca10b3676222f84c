//! The status a test ends with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a test ended, with avocado's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// It passed.
    Pass,
    /// An assertion failed, or the test called `fail`.
    Fail,
    /// An unexpected error (a VM that did not boot, a QMP error, ...).
    Error,
    /// The test decided not to run (`skip`), before doing anything.
    Skip,
    /// The test gave up, for a reason outside it (`cancel`).
    Cancel,
    /// It passed, with warnings.
    Warn,
    /// Its timeout passed, or the job was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
}

impl Status {
    /// Every status, in the order summaries list them.
    pub const ALL: [Status; 7] = [
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Skip,
        Status::Cancel,
        Status::Warn,
        Status::Interrupted,
    ];

    /// The stable name (`PASS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skip => "SKIP",
            Status::Cancel => "CANCEL",
            Status::Warn => "WARN",
            Status::Interrupted => "INTERRUPTED",
        }
    }

    /// Whether a job with this status succeeds.
    pub fn is_success(self) -> bool {
        match self {
            Status::Pass | Status::Warn | Status::Skip | Status::Cancel => true,
            Status::Fail | Status::Error | Status::Interrupted => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
