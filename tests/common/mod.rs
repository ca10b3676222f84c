//! Helpers of the end-to-end tests, which cross layers: the test kit's,
//! the harness tests' job runner, and tests and streams of their own.

#![allow(dead_code, unused_imports)] // each test binary uses its own part

pub mod slow;
pub mod stream;

#[path = "../../harness/tests/common/mod.rs"]
mod harness;

pub use harness::run_job;
pub use virtest_testkit::*;
