//! Helpers of the end-to-end tests, which cross layers: the test kit's,
//! the harness tests' job runner, and tests and streams of their own.

#![allow(dead_code, unused_imports)] // each test binary uses its own part

pub mod slow;
pub mod stream;

#[path = "../../harness/tests/common/mod.rs"]
mod harness;

pub use harness::run_job;
pub use virtest_testkit::*;

/// `virtest ARGS` (this build's): whether it succeeded, its stdout and
/// its stderr.
pub fn virtest(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
