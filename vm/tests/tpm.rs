//! A VM's TPM 2.0 (`tpm = true`) refused before anything starts, with
//! an error that says what to do: when swtpm is missing, and for a guest
//! whose initrd QEMU loads. (The root's `tests/tpm.rs` runs TPMs on the
//! Debian guest, which boots from its disk.)

use virtest_testkit as common;

use virtest_vm::{Error, Vm, VmConfig};

#[tokio::test]
async fn a_missing_swtpm_says_what_to_install_and_starts_nothing() {
    let mut config = VmConfig::new(common::description().clone());
    config.tpm = true;
    config.swtpm = Some("/nonexistent/swtpm".into());
    let mut vm = Vm::new(config);
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let error = vm.power_on().await.unwrap_err();
    assert!(matches!(error, Error::Tpm { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("/nonexistent/swtpm"), "{text}");
    assert!(text.contains("apt-get install swtpm"), "{text}");
    assert!(!vm.is_on());
    assert!(common::processes_with(&marker).is_empty());
}

#[tokio::test]
async fn a_tpm_is_refused_for_a_guest_whose_initrd_qemu_loads() {
    let mut config = VmConfig::new(common::description().clone());
    config.tpm = true;
    let mut vm = Vm::new(config);
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let error = vm.power_on().await.unwrap_err();
    assert!(matches!(error, Error::Tpm { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("boots a kernel and initrd"), "{text}");
    assert!(text.contains("boots from its"), "{text}");
    assert!(common::processes_with(&marker).is_empty());
}
