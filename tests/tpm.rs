//! A VM's TPM 2.0 (`tpm = true`) on the Debian guest: an swtpm of its
//! own, which the guest's kernel finds and which takes a PCR extend, from
//! a ready snapshot; its PCRs and sealed secrets through two live
//! migrations and a power cycle; and swtpm gone with the VM, also when
//! the VM's owner is killed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tpm::{DEBUG_PCR, extend_pcr_command, extended, read_pcr_command};
use virtest::prelude::*;
use virtest::vm::{Vm, VmConfig};

/// The Debian guest with a TPM, from its ready snapshot.
fn config() -> VmConfig {
    let mut config = VmConfig::new(common::debian().clone());
    config.tpm = true;
    config.boot = BootMode::Snapshot;
    config
}

async fn run(vm: &Vm, command: &str) -> String {
    vm.remote().unwrap().run(command).await.unwrap().stdout
}

/// Extends the debug PCR by `digest` and checks what it then holds.
async fn extend_and_check(vm: &Vm, digest: &[u8; 32]) {
    let before = run(vm, &read_pcr_command(DEBUG_PCR)).await;
    let before: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&before.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let code = run(vm, &extend_pcr_command(DEBUG_PCR, digest)).await;
    assert_eq!(code, "00000000", "the TPM's response code");
    assert_eq!(
        run(vm, &read_pcr_command(DEBUG_PCR)).await.trim(),
        extended(&before, digest)
    );
}

/// A TPM 2.0 from the guest's ready snapshot, through two live
/// migrations and a power cycle. The kernel finds it and a raw PCR extend
/// gives the value it must; after the migrations the PCRs read the same
/// and a secret sealed to two of them unseals under the primary key made
/// before (a saved context, which only the same TPM's state loads); each
/// migration's source swtpm ends with its QEMU; and after a power cycle
/// (a boot from the disk), a key made under the owner's primary loads
/// again: the TPM kept its seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpm_keeps_its_state_through_migrations_and_a_power_cycle() {
    let _slot = common::guest_slots(1);
    let logs = common::test_logs();
    let mut config = config();
    config.log_dir = Some(logs.path().to_path_buf());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    assert!(vm.start().is_restored(), "{}", vm.start());
    vm.login_remote().await.unwrap();
    assert_eq!(
        run(&vm, "cat /sys/class/tpm/tpm0/tpm_version_major")
            .await
            .trim(),
        "2"
    );
    extend_and_check(&vm, &[0x5a; 32]).await;
    extend_and_check(&vm, &[0x01; 32]).await;
    run(
        &vm,
        "tpm2_createprimary -Q -C o -c /root/primary.ctx && \
         tpm2_pcrread -Q -o /root/pcrs.bin sha256:7,16 && \
         tpm2_createpolicy -Q --policy-pcr -l sha256:7,16 -f /root/pcrs.bin -L /root/pcrs.policy && \
         head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /root/secret && \
         tpm2_create -Q -C /root/primary.ctx -L /root/pcrs.policy -i /root/secret \
             -u /root/sealed.pub -r /root/sealed.priv && \
         tpm2_create -Q -C /root/primary.ctx -i /root/secret -u /root/kept.pub -r /root/kept.priv && \
         sync",
    )
    .await;
    let pcrs = run(&vm, "tpm2_pcrread sha256:0,1,2,3,4,5,6,7,16").await;
    let secret = run(&vm, "cat /root/secret").await;
    assert_eq!(secret.len(), 48, "{secret}");
    for mode in [MigrationMode::Tcp, MigrationMode::Unix] {
        let source_swtpm = vm.instance().unwrap().tpm_pid().unwrap();
        vm.migrate(mode).await.unwrap();
        vm.login_remote().await.unwrap();
        let swtpm = vm.instance().unwrap().tpm_pid().unwrap();
        assert_ne!(swtpm, source_swtpm);
        assert!(
            common::eventually(Duration::from_secs(5), || !common::alive(source_swtpm)),
            "the source's swtpm {source_swtpm} outlived it after {mode}"
        );
        assert_eq!(
            run(&vm, "tpm2_pcrread sha256:0,1,2,3,4,5,6,7,16").await,
            pcrs,
            "after {mode}"
        );
    }
    let unsealed = run(
        &vm,
        "tpm2_load -Q -C /root/primary.ctx -u /root/sealed.pub -r /root/sealed.priv \
             -c /root/sealed.ctx && tpm2_unseal -c /root/sealed.ctx -p pcr:sha256:7,16",
    )
    .await;
    assert_eq!(unsealed, secret);

    let swtpm = vm.instance().unwrap().tpm_pid().unwrap();
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    vm.power_off().await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(2), || !common::alive(swtpm)),
        "swtpm {swtpm} outlived its VM"
    );
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let unsealed = run(
        &vm,
        "tpm2_createprimary -Q -C o -c /root/primary2.ctx && \
         tpm2_load -Q -C /root/primary2.ctx -u /root/kept.pub -r /root/kept.priv -c /root/kept.ctx && \
         tpm2_unseal -c /root/kept.ctx",
    )
    .await;
    assert_eq!(unsealed, secret, "after a power cycle");
    vm.remote().unwrap().run("shutdown -h now").await.unwrap();
    vm.power_off().await.unwrap();
}

/// Runs in a child process (see the test below): powers on a VM with a
/// TPM, prints its QEMU's and swtpm's pids, and waits to be killed. Run
/// alone, it fails.
#[tokio::test]
#[ignore = "a helper the SIGKILL test runs in a child process"]
async fn owner_role() {
    std::env::var("VIRTEST_TPM_OWNER")
        .expect("not a test of its own: the SIGKILL test runs it in a child process");
    let mut vm = Vm::new(config());
    vm.power_on().await.unwrap();
    let instance = vm.instance().unwrap();
    println!("pids={} {}", instance.pid(), instance.tpm_pid().unwrap());
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[test]
fn sigkill_of_the_owner_takes_swtpm_with_it() {
    let _slot = common::guest_slots(1);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["owner_role", "--exact", "--ignored", "--nocapture"])
        .env("VIRTEST_TPM_OWNER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|line| {
            let line = line.unwrap();
            let pids = line.strip_prefix("pids=")?;
            Some(pids.split(' ').map(|p| p.parse().unwrap()).collect())
        })
        .expect("the owner printed no pids");
    assert!(pids.iter().all(|&pid| common::alive(pid)), "{pids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || pids
            .iter()
            .all(|&pid| !common::alive(pid))),
        "QEMU or swtpm ({pids:?}) outlived their SIGKILLed owner"
    );
}

/// `-p tpm=true`: the guide's migration test on the Debian guest with a
/// TPM, its VM restored from the TPM guest's ready snapshot (the one the
/// tests above make), each QEMU's swtpm logging beside it.
#[test]
fn the_guides_migration_test_passes_with_a_tpm() {
    let _slot = common::guest_slots(1);
    common::debian();
    let results = tempfile::tempdir().unwrap();
    let (output, json) = common::virtest_run(
        &[
            "migration",
            "-p",
            "guest=debian",
            "-p",
            "tpm=true",
            "-p",
            "migration_iterations=2",
        ],
        results.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let test = &json.tests[0];
    assert_eq!(test.status, Status::Pass, "{stdout}");
    assert_eq!(test.params["tpm"], "true");
    let swtpm_log = std::fs::read_to_string(test.logdir.join("swtpm.log")).unwrap();
    // One swtpm for the VM and each of its 2 destinations, and one more
    // where this VM made the ready snapshot (the boot, then the restore).
    let started = swtpm_log.matches("virtest: starting swtpm").count();
    assert!(matches!(started, 3 | 4), "{started}:\n{swtpm_log}");
}

/// An swtpm that exits at once (a broken install, say): power_on says
/// what it said, and leaves no QEMU behind.
#[tokio::test]
async fn an_swtpm_that_exits_at_once_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("swtpm");
    common::write_script(
        &broken,
        "#!/bin/sh\necho 'swtpm: libtpms is broken here' >&2\nexit 3\n",
    );
    let mut config = config();
    config.boot = BootMode::Fresh;
    config.swtpm = Some(broken);
    let mut vm = Vm::new(config);
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let error = vm.power_on().await.unwrap_err();
    assert!(matches!(error, virtest::vm::Error::Tpm { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("exited at once"), "{text}");
    assert!(text.contains("libtpms is broken here"), "{text}");
    assert!(!vm.is_on());
    assert!(common::processes_with(&marker).is_empty());
}
