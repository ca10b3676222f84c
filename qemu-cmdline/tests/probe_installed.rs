//! Probes the QEMU installed on this machine (CI installs it).

use virtest_qemu_cmdline::binary::{self, BinaryKind};

#[test]
fn the_installed_system_emulator_probes() {
    let qemu = binary::find(BinaryKind::System, None).expect("QEMU is installed (see .ci/run)");
    let probe = binary::probe(&qemu).unwrap();
    assert!(probe.version.major >= 7, "{:?}", probe.version);
    assert!(
        probe.version_line.contains("QEMU"),
        "{}",
        probe.version_line
    );
    assert!(probe.has_accel("tcg"), "{:?}", probe.accelerators);
    for machine in ["pc", "q35", "none"] {
        assert!(
            probe.machines.iter().any(|m| m == machine),
            "{machine} not in {:?}",
            probe.machines
        );
    }
    // A second probe is served from the cache: the same value.
    assert!(std::sync::Arc::ptr_eq(
        &probe,
        &binary::probe(&qemu).unwrap()
    ));
}

#[test]
fn the_installed_qemu_img_reports_its_version() {
    let img = binary::find(BinaryKind::Img, None).expect("qemu-img is installed");
    let (version, line) = binary::probe_version(&img).unwrap();
    assert!(version.major >= 7 && line.starts_with("qemu-img"), "{line}");
}
