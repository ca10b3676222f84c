//! An encrypted migration stream: a pre-shared key and x509 certificates
//! made for the VM, over tcp and unix; the guest is the same one after.
//! A destination whose certificate does not match the name the source
//! checks fails cleanly: QEMU's words, the source runs on, no destination
//! is left. TLS is refused on a transport QEMU cannot encrypt.

mod common;

use common::*;
use virtest_migration::{Migrate, MigrationMode, MigrationSpec, Tls};

fn spec(mode: MigrationMode, tls: Tls) -> MigrationSpec {
    let mut spec = MigrationSpec::new(mode);
    spec.tls = Some(tls);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_migrates_under_psk_and_x509_over_tcp_and_unix() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    let mut vm = running_vm(logs.path()).await;
    let (boot_id, _) = identity(&vm).await;
    for (mode, tls) in [
        (MigrationMode::Tcp, Tls::Psk),
        (MigrationMode::Unix, Tls::Psk),
        (MigrationMode::Tcp, Tls::X509),
        (MigrationMode::Unix, Tls::X509),
        (MigrationMode::Fd, Tls::Psk),
        (MigrationMode::Fd, Tls::X509),
    ] {
        let report = vm.migrate_with(&spec(mode, tls)).await.unwrap();
        assert!(
            report.parameters.contains(&format!("tls={tls}")),
            "{report:?}"
        );
        vm.login_remote().await.unwrap();
        assert_eq!(identity(&vm).await.0, boot_id, "after {tls} over {mode}");
    }
    // The QEMU that came in under TLS migrates on without it.
    vm.migrate(MigrationMode::Tcp).await.unwrap();
    let qmp = std::fs::read_to_string(logs.path().join("qmp.log")).unwrap();
    assert!(
        qmp.contains("\"qom-type\":\"tls-creds-x509\""),
        "x509 objects were added"
    );
    assert!(
        qmp.contains("\"tls-creds\":\"\""),
        "TLS was cleared for the last one"
    );
    vm.power_off().await.unwrap();
}

/// A certificate for another name, and a destination holding credentials
/// that are not the VM's (x509 from another CA; another pre-shared key),
/// are refused in the handshake: the error says what TLS said, the
/// destination is gone, and the source runs on and migrates after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_or_foreign_credentials_fail_cleanly_and_the_source_runs_on() {
    let _slot = guest_slots(1);
    let logs = test_logs();
    let mut vm = running_vm(logs.path()).await;
    let (boot_id, _) = identity(&vm).await;
    let mut wrong = spec(MigrationMode::Tcp, Tls::X509);
    wrong.tls_hostname = Some("not-the-destination.example".into());
    let error = vm.migrate_with(&wrong).await.unwrap_err().to_string();
    assert!(error.contains("not-the-destination.example"), "{error}");
    assert!(error.contains("the source VM keeps running"), "{error}");
    assert!(
        eventually(std::time::Duration::from_secs(5), || qemus(&vm).len() == 1),
        "the destination is gone"
    );
    vm.login_remote().await.unwrap();
    assert_eq!(identity(&vm).await.0, boot_id);
    for (tls, said) in [
        (Tls::X509, "The certificate hasn't got a known issuer"),
        (Tls::Psk, "TLS handshake failed"),
    ] {
        let mut foreign = spec(MigrationMode::Tcp, tls);
        foreign.tls_foreign_destination = true;
        let error = vm.migrate_with(&foreign).await.unwrap_err().to_string();
        assert!(error.contains(said), "{tls}: {error}");
        assert!(error.contains("the source VM keeps running"), "{error}");
        assert!(
            eventually(std::time::Duration::from_secs(5), || qemus(&vm).len() == 1),
            "{tls}: the destination is gone"
        );
        vm.login_remote().await.unwrap();
        assert_eq!(identity(&vm).await.0, boot_id);
    }
    // And the right credentials and name work from the same source.
    vm.migrate_with(&spec(MigrationMode::Tcp, Tls::X509))
        .await
        .unwrap();

    let error = vm
        .migrate_with(&spec(MigrationMode::Exec, Tls::Psk))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("TLS (psk) needs a two-way channel for its handshake"),
        "{error}"
    );
    vm.power_off().await.unwrap();
}
