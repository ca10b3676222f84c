//! What a test file needs: `use virtest::prelude::*;` (or
//! `virtest_harness::prelude` without the facade).

pub use crate::{
    Params, Status, Test, TestError, TestResult, VirtTest, cancel, ensure, fail, skip,
};
pub use virtest_host::{Host, Link};
pub use virtest_migration::{Migrate, MigrationMode, MigrationReport, MigrationSpec};
pub use virtest_remote::Session;
pub use virtest_vm::{BootMode, Network, PowerOff, Reboot, Start, Vm, VmConfig, VmState};
