//! Helpers shared by the end-to-end tests.

use std::net::TcpListener;
use std::sync::OnceLock;

use virtest::guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest::guest::{Manifest, cache};

/// The default guest, bootstrapped once per test binary (a no-op when the
/// cache is current).
pub fn guest() -> &'static Manifest {
    static GUEST: OnceLock<Manifest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let home = cache::default_home().unwrap();
        bootstrap(&BootstrapOptions::new(home))
            .expect("bootstrap")
            .manifest
    })
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
