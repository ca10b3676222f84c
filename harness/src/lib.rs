//! The virtest test framework: `VirtTest`, parameters and variants, the
//! runner and job results.
//!
//! Not built yet: this crate only reserves its place in the workspace
//! (see issue "virtest-harness").
