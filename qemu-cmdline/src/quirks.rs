//! Defects of particular QEMU versions that virtest works around: for
//! each, the versions it affects, how it shows, and what is done.

use crate::accel::Chosen;
use crate::binary::Version;

/// The first QEMU whose TCG live migration carries every write: 9.0 has
/// upstream's "physmem: Fix migration dirty bitmap coherency with TCG
/// memory access". Debian 12's 7.2.22 does not.
const TCG_DIRTY_TRACKING_FIXED: Version = Version {
    major: 9,
    minor: 0,
    micro: 0,
};

/// QEMU's granule of guest RAM: `-m` is rounded up to it.
const RAM_GRANULE_KIB: u64 = 8;

/// Whether a live migration on this QEMU can lose the guest's writes.
///
/// Under TCG, QEMU before 9.0 clears a RAM block's dirty bits a 64-page
/// word at a time without making the virtual CPU's cached translations
/// trap the next write to those pages. A write through such a
/// translation after its page was sent never reaches the destination,
/// which then runs with stale pages: measured here, 11 of 131072 pages of
/// a Debian guest differed between source and destination after a
/// completed migration, and such a guest oopses seconds after it resumes.
///
/// ```
/// use virtest_qemu_cmdline::accel::Chosen;
/// use virtest_qemu_cmdline::binary::Version;
/// use virtest_qemu_cmdline::quirks::tcg_migration_loses_writes;
/// let debian_12 = Version { major: 7, minor: 2, micro: 22 };
/// assert!(tcg_migration_loses_writes(debian_12, Chosen::Tcg));
/// assert!(!tcg_migration_loses_writes(debian_12, Chosen::Kvm));
/// ```
pub fn tcg_migration_loses_writes(version: Version, accel: Chosen) -> bool {
    accel == Chosen::Tcg && version < TCG_DIRTY_TRACKING_FIXED
}

/// The guest RAM, in KiB, that `-m` gives a guest of `mib` MiB on this
/// QEMU: `mib` MiB, or one granule more where
/// [`tcg_migration_loses_writes`]. A RAM block whose length is not a
/// whole number of 64-page words takes QEMU's page-at-a-time path, which
/// does make the translations trap again, so no write is lost.
///
/// ```
/// use virtest_qemu_cmdline::accel::Chosen;
/// use virtest_qemu_cmdline::binary::Version;
/// use virtest_qemu_cmdline::quirks::guest_ram_kib;
/// let v7 = Version { major: 7, minor: 2, micro: 22 };
/// let v10 = Version { major: 10, minor: 0, micro: 2 };
/// assert_eq!(guest_ram_kib(512, v7, Chosen::Tcg), 524_296);
/// assert_eq!(guest_ram_kib(512, v10, Chosen::Tcg), 524_288);
/// ```
pub fn guest_ram_kib(mib: u32, version: Version, accel: Chosen) -> u64 {
    let kib = u64::from(mib) * 1024;
    match tcg_migration_loses_writes(version, accel) {
        true => kib + RAM_GRANULE_KIB,
        false => kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(major: u32, minor: u32, micro: u32) -> Version {
        Version {
            major,
            minor,
            micro,
        }
    }

    #[test]
    fn only_tcg_before_9_0_is_padded() {
        for (v, padded) in [
            (version(7, 2, 22), true),
            (version(8, 2, 9), true),
            (version(9, 0, 0), false),
            (version(10, 1, 0), false),
        ] {
            assert_eq!(tcg_migration_loses_writes(v, Chosen::Tcg), padded, "{v}");
            assert!(!tcg_migration_loses_writes(v, Chosen::Kvm), "{v}");
        }
    }

    #[test]
    fn padded_ram_is_not_a_whole_number_of_bitmap_words() {
        // 64 pages of 4 KiB: QEMU's fast path needs a multiple of this.
        let word_kib = 64 * 4;
        for mib in [128, 256, 512, 4096] {
            let kib = guest_ram_kib(mib, version(7, 2, 22), Chosen::Tcg);
            assert_ne!(kib % word_kib, 0, "{mib} MiB");
            assert_eq!(kib % RAM_GRANULE_KIB, 0, "QEMU would round {kib} KiB");
        }
    }
}
