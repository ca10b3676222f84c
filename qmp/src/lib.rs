//! The QMP wire protocol, usable by any Rust tool that drives QEMU.
//!
//! Built so far: [`codec`], the pure message codec (bytes in, messages
//! out, no I/O), lenient with events and fields newer than us. Not built
//! yet: the connection (greeting, negotiation, commands routed by id,
//! event subscribers, transcript) of issue "virtest-qmp".
#![deny(missing_docs)]

pub mod codec;
