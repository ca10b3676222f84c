//! What a test body returns: `Ok(())`, or why it did not pass.

use std::fmt;

use crate::status::Status;

/// The result of a test phase.
pub type TestResult = Result<(), TestError>;

/// Why a phase did not pass: a status other than PASS, with its reason.
///
/// Any error converts with `?` and makes the test ERROR; [`fail`],
/// [`skip`] and [`cancel`] make the other statuses.
///
/// ```
/// use virtest_harness::{Status, TestResult, fail};
/// fn check(uptime: f64) -> TestResult {
///     if uptime < 0.0 {
///         return Err(fail(format!("uptime went backwards: {uptime}")));
///     }
///     let _: u32 = "42".parse()?; // a parse error would be ERROR
///     Ok(())
/// }
/// assert_eq!(check(-1.0).unwrap_err().status, Status::Fail);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestError {
    /// FAIL, ERROR, SKIP, CANCEL or INTERRUPTED.
    pub status: Status,
    /// Why, for people (the error and its causes, one per `: `).
    pub reason: String,
}

impl TestError {
    /// An error with this status and reason.
    pub fn new(status: Status, reason: impl Into<String>) -> TestError {
        TestError {
            status,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TestError {
    fn from(error: E) -> TestError {
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        TestError::new(Status::Error, reason)
    }
}

/// The test failed: what it checked is not so.
pub fn fail(reason: impl Into<String>) -> TestError {
    TestError::new(Status::Fail, reason)
}

/// The test does not apply here (before it did anything).
pub fn skip(reason: impl Into<String>) -> TestError {
    TestError::new(Status::Skip, reason)
}

/// The test gave up for a reason outside it.
pub fn cancel(reason: impl Into<String>) -> TestError {
    TestError::new(Status::Cancel, reason)
}

/// Fails the test with a message unless `cond` holds.
///
/// ```
/// # use virtest_harness::{ensure, TestResult};
/// fn check(status: i32) -> TestResult {
///     ensure!(status == 0, "the command exited with {status}");
///     Ok(())
/// }
/// assert!(check(1).is_err());
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err($crate::fail(format!($($message)+)));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let error: TestError = Outer(std::io::Error::other("inner")).into();
        assert_eq!(error.status, Status::Error);
        assert_eq!(error.reason, "outer: inner");
    }
}
