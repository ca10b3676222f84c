//! What a user sees when a VM cannot start or its guest never comes up:
//! clear errors, and no QEMU left behind.

use virtest_testkit as common;

use std::time::Duration;

use virtest_guest::description::Ready;
use virtest_qemu_cmdline::{Arg, Props, PropsOption};
use virtest_vm::{Error, PowerOff, Vm, VmConfig};

fn config() -> VmConfig {
    VmConfig::new(common::description().clone())
}

/// Powers on and returns the error, checking no QEMU of this VM is left.
async fn power_on_error(config: VmConfig) -> Error {
    let mut vm = Vm::new(config);
    let marker = vm.files().runtime_dir().to_string_lossy().into_owned();
    let error = vm.power_on().await.unwrap_err();
    assert!(!vm.is_on());
    assert!(common::processes_with(&marker).is_empty());
    error
}

/// The error and its sources, one per line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!("\n{e}"));
        source = e.source();
    }
    text
}

#[tokio::test]
async fn a_missing_qemu_binary_is_named() {
    let mut config = config();
    config.qemu = Some("/nonexistent/qemu-system-x86_64".into());
    let error = power_on_error(config).await;
    assert!(matches!(error, Error::Qemu(_)), "{error:?}");
    assert!(
        chain(&error).contains("/nonexistent/qemu-system-x86_64"),
        "{}",
        chain(&error)
    );
}

#[tokio::test]
async fn an_option_qemu_rejects_comes_back_with_its_message() {
    let _slot = common::guest_slots(1);
    let mut config = config();
    config.extra_args.push(Arg::Props(
        PropsOption::Device,
        Props::with_head("no-such-device"),
    ));
    let error = power_on_error(config).await;
    let Error::Exited {
        stderr_tail,
        cmdline,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(stderr_tail.contains("'no-such-device'"), "{stderr_tail}");
    assert!(cmdline.contains("-device no-such-device"), "{cmdline}");
    assert!(error.to_string().contains("while starting"));
}

/// What QEMU said on its way out is the first line of the error, the
/// one a results summary or a progress line shows, not only in qemu.log.
#[tokio::test]
async fn memory_the_host_cannot_give_is_refused_in_qemus_words() {
    let _slot = common::guest_slots(1);
    let mut config = config();
    config.memory_mib = Some(99_999_999);
    let error = power_on_error(config).await;
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("while starting") && first.contains("cannot set up guest memory"),
        "{text}"
    );
}

#[tokio::test]
async fn a_kernel_that_does_not_exist_is_reported() {
    let mut config = config();
    config.guest.boot.kernel.as_mut().unwrap().kernel = "/nonexistent/vmlinux".into();
    let error = power_on_error(config).await;
    assert!(
        error.to_string().contains("/nonexistent/vmlinux"),
        "{error}"
    );
}

#[tokio::test]
async fn a_guest_that_never_gets_ready_times_out_with_the_console_tail() {
    let _slot = common::guest_slots(1);
    let mut config = config();
    config.guest.ready = Ready::Console("a-ready-line-this-guest-never-prints".into());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    let error = vm
        .within(Duration::from_secs(10))
        .login_remote()
        .await
        .unwrap_err();
    let Error::Login { console_tail, .. } = &error else {
        panic!("{error:?}");
    };
    // The tail shows what the guest did print.
    assert!(
        console_tail.contains(&common::guest().ready_marker),
        "{console_tail}"
    );
    assert!(console_tail.lines().count() <= 30);
    let first = error.to_string().lines().next().unwrap().to_string();
    assert!(first.contains("within 10s"), "{error}");
    assert!(
        first.contains("a-ready-line-this-guest-never-prints"),
        "{error}"
    );
    vm.within(Duration::from_secs(5)).power_off().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_not_after_the_timeout() {
    let _slot = common::guest_slots(1);
    let mut config = config();
    config.login = virtest_vm::Login::Password("not-the-password".into());
    let mut vm = Vm::new(config);
    vm.power_on().await.unwrap();
    let error = vm.login_remote().await.unwrap_err();
    let text = chain(&error);
    let first = text.lines().next().unwrap();
    assert!(first.contains("refused the login"), "{text}");
    assert!(first.contains("password"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    vm.power_off().await.unwrap();
}

#[tokio::test]
async fn qemu_dying_under_a_wait_ends_the_wait_with_its_status() {
    let _slot = common::guest_slots(1);
    let mut vm = Vm::new(config());
    vm.power_on().await.unwrap();
    let pid = vm.pid().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let error = vm
        .within(Duration::from_secs(60))
        .wait_for_console("never printed")
        .await
        .unwrap_err();
    let Error::Exited { status, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(status),
        Some(9)
    );
    assert!(!vm.is_on());
    assert!(vm.login_remote().await.is_err());
    // What needs QEMU says how it ended, and so does the VM.
    let death = format!("QEMU (pid {pid}) was killed by signal 9 (SIGKILL)");
    let exit = vm.qemu_exit().expect("it ended by itself");
    assert_eq!(exit.to_string(), death);
    for error in [
        vm.qmp().unwrap_err(),
        vm.serial().await.unwrap_err(),
        vm.hotplug().disk("data", 8).await.unwrap_err(),
    ] {
        assert!(matches!(error, Error::QemuEnded { .. }), "{error:?}");
        assert!(error.to_string().ends_with(&death), "{error}");
    }
    // Cleanup after that drains the console again: it must not poll the
    // finished reader a second time (it panicked: "JoinHandle polled
    // after completion").
    assert_eq!(vm.power_off().await.unwrap(), PowerOff::ByGuest);
}

#[tokio::test]
async fn actions_on_a_vm_that_is_off_say_so() {
    let mut vm = Vm::new(config());
    let error = vm.login_remote().await.unwrap_err();
    assert!(error.to_string().contains("power_on first"), "{error}");
    assert!(vm.pause().await.is_err());
    assert!(matches!(vm.remote(), Err(Error::NoRemote)));
}

/// A command on a session whose guest went away (its QEMU killed) says
/// that the connection is gone, not libssh2's error number.
#[tokio::test]
async fn a_command_after_the_guest_went_away_says_so() {
    let _slot = common::guest_slots(1);
    let mut vm = Vm::new(config());
    vm.power_on().await.unwrap();
    vm.login_remote().await.unwrap();
    let pid = vm.pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(common::eventually(Duration::from_secs(5), || {
        !common::alive(pid)
    }));
    let error = vm.remote().unwrap().run("true").await.unwrap_err();
    let text = chain(&error);
    assert!(
        text.contains("running `true` over SSH failed: the connection to the guest is gone"),
        "{text}"
    );
    assert!(!text.contains("Session(-"), "{text}");
    vm.power_off().await.unwrap();
}
