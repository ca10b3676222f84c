//! Sessions into a guest: SSH and the serial console behind one trait.
//!
//! Not built yet: this crate only reserves its place in the workspace
//! (see issue "virtest-remote").
