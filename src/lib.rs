//! virtest: write virtualization tests against QEMU in Rust, and run them.
//!
//! This crate re-exports the layers and a [`prelude`]; `virtest::main!`
//! makes a test binary. See `examples/boot.rs` and `examples/migration.rs`.

pub use virtest_guest as guest;
pub use virtest_harness as harness;
pub use virtest_harness::main;
pub use virtest_host as host;
pub use virtest_migration as migration;
pub use virtest_qemu_cmdline as qemu_cmdline;
pub use virtest_qmp as qmp;
pub use virtest_remote as remote;
pub use virtest_vm as vm;

pub mod builtin;
pub mod matrix;
pub use virtest_harness::prelude;
