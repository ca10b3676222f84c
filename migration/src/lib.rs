#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `migrate`: the [`Migrate`] extension trait on `Vm`: destination,
//!   capabilities, following the events, handover, recovery.
//! - `ending`: the destination checked, or the source recovered.
//! - `mode`: [`MigrationMode`], the transports.
//! - `setup`: both QEMUs made ready: capabilities, parameters, TLS.
//! - `schema`: what a QEMU can do, from its QMP schema (`file:`).
//! - `transport`: each transport's incoming side and source URI.
//! - `spec`: [`MigrationSpec`], capabilities, parameters and limits.
//! - `tls`: [`Tls`], the stream encrypted with credentials made per VM.
//! - `feature`: [`Feature`], the features a migration matrix names.
//! - `report`: [`MigrationReport`], what happened, in figures.
#![deny(missing_docs)]

mod ending;
mod error;
mod feature;
mod migrate;
mod mode;
mod report;
mod schema;
mod setup;
mod spec;
mod storage;
mod tls;
mod transport;

pub use error::{Error, Result};
pub use feature::Feature;
pub use migrate::Migrate;
pub use mode::MigrationMode;
pub use report::{MigrationReport, RamFigures, StatusChange};
pub use spec::{CancelPoint, DEFAULT_TIMEOUT, LinkCut, MigrationSpec, PAUSE_POSTCOPY_BANDWIDTH};
pub use tls::Tls;
