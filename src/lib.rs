//! virtest: write virtualization tests against QEMU in Rust, and run them.
//!
//! This crate re-exports the layers; see each for its part.

pub use virtest_guest as guest;
pub use virtest_migration as migration;
pub use virtest_qemu_cmdline as qemu_cmdline;
pub use virtest_qmp as qmp;
pub use virtest_remote as remote;
pub use virtest_vm as vm;
