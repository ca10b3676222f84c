//! At most two guests run at once on these two-core machines: a test
//! holds slots for the guests it runs, and the tests of a binary (which
//! run in parallel) wait for theirs. A test of three VMs holds all slots,
//! so its three run alone.

use std::sync::{Condvar, Mutex};

/// How many guests a test binary runs at once.
const GUEST_SLOTS: u32 = 2;

static SLOTS: (Mutex<u32>, Condvar) = (Mutex::new(GUEST_SLOTS), Condvar::new());

/// Waits for `count` slots (at most all of them) and holds them until the
/// returned guard drops.
pub fn guest_slots(count: u32) -> GuestSlots {
    let count = count.min(GUEST_SLOTS);
    let mut free = SLOTS.0.lock().unwrap_or_else(|e| e.into_inner());
    while *free < count {
        free = SLOTS.1.wait(free).unwrap_or_else(|e| e.into_inner());
    }
    *free -= count;
    GuestSlots(count)
}

/// Slots held; given back on drop.
pub struct GuestSlots(u32);

impl Drop for GuestSlots {
    fn drop(&mut self) {
        *SLOTS.0.lock().unwrap_or_else(|e| e.into_inner()) += self.0;
        SLOTS.1.notify_all();
    }
}
