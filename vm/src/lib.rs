//! One VM's whole life: spawn and reap QEMU, QMP, console capture,
//! `login_remote`, power states.
//!
//! Not built yet: this crate only reserves its place in the workspace
//! (see issue "virtest-vm").
