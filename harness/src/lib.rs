#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `test`: [`VirtTest`], [`Test`] (the context), [`TestDef`].
//! - `outcome`: [`TestResult`], [`TestError`], [`fail`], [`skip`],
//!   [`cancel`], [`ensure!`].
//! - `status`: [`Status`], avocado's statuses.
//! - `params`: [`Params`], the known parameters, params files, variants.
//! - `runner`: planning, running in parallel, timeouts, signals.
//! - `results`: the job directory, `results.json`, JUnit.
//! - `html`: `results.html`, the job for people.
//! - `evidence`: the failure bundle a failed test leaves.
//! - `pause`: `--pause-on-failure`, and how to get into a paused VM.
//! - `logging`: `job.log` and each test's `debug.log`.
//! - `progress`: the live display.
//! - `libtest`: the command line of a `main!` binary; `job_args`: the
//!   job options it shares with `virtest run` ([`JobArgs`]).
#![deny(missing_docs)]

mod evidence;
pub mod host_speed;
mod hosts;
mod html;
mod job_args;
pub mod libtest;
mod logging;
mod outcome;
pub mod params;
pub mod pause;
pub mod prelude;
mod progress;
pub mod qemus;
pub mod results;
pub mod runner;
mod status;
mod test;

pub use job_args::JobArgs;
pub use outcome::{TestError, TestResult, cancel, fail, skip};
pub use params::Params;
pub use status::Status;
pub use test::{Test, TestDef, VirtTest, vm_config};

/// Makes a test binary of tests named after their types:
/// `virtest::main!(Boot, Migration);`. Each run of a test gets a new
/// value from `Default::default()`, so a test may keep state in fields
/// from `setup` through `cleanup`. The binary speaks libtest's command
/// line, so `cargo test` and `cargo nextest run` drive it.
///
/// ```no_run
/// use virtest_harness::{Test, TestResult, VirtTest};
///
/// #[derive(Default)]
/// struct SameGuest {
///     boot_id: String,
/// }
///
/// impl VirtTest for SameGuest {
///     async fn action(&mut self, t: &mut Test) -> TestResult {
///         t.vm.power_on().await?;
///         let remote = t.vm.login_remote().await?;
///         self.boot_id = remote.run("cat /proc/sys/kernel/random/boot_id").await?.stdout;
///         Ok(())
///     }
/// }
///
/// virtest_harness::main!(SameGuest);
/// ```
#[macro_export]
macro_rules! main {
    ($($test:ident),+ $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::libtest::main(vec![
                $($crate::TestDef::new(
                    stringify!($test),
                    <$test as ::std::default::Default>::default,
                )),+
            ])
        }
    };
}
