//! Live migration of a virtest VM to a new QEMU process.
//!
//! Not built yet: this crate only reserves its place in the workspace
//! (see issue "virtest-migration").
