//! Live migration of a virtest VM to a new QEMU process, handing the same
//! `vm` back.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use virtest_migration::{Migrate, MigrationMode, MigrationSpec};
//! use virtest_vm::{Vm, VmConfig};
//! let mut vm = Vm::new(VmConfig::default_guest()?);
//! vm.power_on().await?;
//! for _ in 0..4 {
//!     vm.migrate(MigrationMode::Tcp).await?;
//!     vm.login_remote().await?;
//! }
//! let mut spec = MigrationSpec::new(MigrationMode::Unix);
//! spec.auto_converge = true;
//! let report = vm.migrate_with(&spec).await?;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `migrate`: the [`Migrate`] extension trait on `Vm`: destination,
//!   capabilities, following the events, handover, recovery.
//! - `mode`: [`MigrationMode`], the transports.
//! - `transport`: each transport's incoming side and source URI.
//! - `spec`: [`MigrationSpec`], capabilities, parameters and limits.
//! - `report`: [`MigrationReport`], what happened, in figures.
#![deny(missing_docs)]

mod error;
mod migrate;
mod mode;
mod report;
mod spec;
mod transport;

pub use error::{Error, Result};
pub use migrate::Migrate;
pub use mode::MigrationMode;
pub use report::{MigrationReport, RamFigures, StatusChange};
pub use spec::{DEFAULT_TIMEOUT, MigrationSpec};
