//! One VM's whole life: spawn and reap QEMU, QMP, console capture,
//! `login_remote`, power states.
//!
//! Built so far: [`GuestLaunch`], the QEMU command line of a guest from
//! its manifest. Not built yet: the `Vm` itself (issue "virtest-vm").
#![deny(missing_docs)]

mod launch;

pub use launch::GuestLaunch;
