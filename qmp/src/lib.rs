//! The QMP wire protocol: connect to a QEMU monitor, negotiate, send
//! commands and receive events.
//!
//! Not built yet: this crate only reserves its place in the workspace
//! (see issue "virtest-qmp").
